//! # sms-gateway-core
//!
//! What an embedder and a provider need, and nothing that runs a server:
//! the [`Gateway`] (routing and translation between chats and texts, no I/O
//! of its own) and its loop ([`run_gateway`]), the [`PstnProvider`] trait
//! that each carrier implements (with its contract suite, `testkit`), the
//! message and event types, phone numbers, text splitting, configuration,
//! the [`store::Store`] trait and its contract, metrics, and the HTTP client
//! carriers are called with.
//!
//! ```text
//! XMPP server <-> XMPP process <-ch-> Gateway <-ch-> PSTN process <-> carriers
//!                 (sms-xmpp)          (here)         (sms-gateway-runtime)
//! ```
//!
//! The processes around the Gateway, the supervising `Component`, the
//! webhook and media server, health, reload, carrier set-up and the
//! `sandbox` provider are in `sms-gateway-runtime`. An embedder either runs
//! the whole runtime, or drives a [`Gateway`] with I/O of its own; see
//! `examples/embed.rs` for both.

pub mod accounts;
pub mod activity;
mod built;
pub mod callerid;
pub mod config;
mod directory;
pub mod failure;
#[cfg(feature = "fault-injection")]
pub mod fault;
mod gateway;
pub mod group;
pub mod http;
pub mod media;
mod message;
pub mod metrics;
mod phone;
pub mod provider;
pub mod rate;
mod secret;
pub mod store;
#[cfg(test)]
mod test_provider;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod text;
pub(crate) mod time;

pub use built::Providers;
pub use config::{Config, ConfigError};
pub use directory::{Directory, Origin, Refused, Settings, StoredUser};
pub use gateway::process::{run_gateway, GatewayIo};
pub use gateway::{
    AccountPolicy, Ack, Action, Gateway, GatewayState, Routing, User, DEFAULT_RETRY_DEADLINE,
    NOTICE_INTERVAL,
};
pub use message::{
    random_id, run_tag, ChatMessage, DeliveryStatus, ErrorCondition, Failure, Fetched,
    InboundRejected, InboundSms, Media, OutboundSms, OutgoingStanza, PstnCommand, PstnEvent,
    RoomLine, Speaker, StatusReport, UserChange, XmppEvent,
};
pub use phone::{PhoneError, PhoneNumber};
pub use provider::{
    ProviderConfigError, ProviderContext, ProviderError, ProviderErrorKind, ProviderFactory,
    ProviderRegistry, PstnProvider, WebhookError, WebhookEvent, WebhookReply, WebhookRequest,
};
pub use secret::Secret;
pub use time::{backoff, unix_now, utc};
pub use tokio_util::sync::CancellationToken;
