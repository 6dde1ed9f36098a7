//! # sms-gateway-core
//!
//! The heart of sms-over-xmpp, usable on its own: the [`Gateway`] (routing
//! and translation between chats and texts), the [`PstnProvider`] trait that
//! each carrier implements, the message and event types, phone numbers,
//! configuration, the supervising [`Component`] and the built-in `sandbox`
//! provider.
//!
//! ```text
//! XMPP server <-> XMPP process <-ch-> Gateway <-ch-> PSTN process <-> carriers
//!                 (XmppLink)                        (webhooks, API calls)
//! ```
//!
//! An embedder builds a [`ProviderRegistry`] (adding its own provider types),
//! loads and validates a [`Config`], and runs a [`Component`] with an
//! [`XmppLink`] (the one in `sms-xmpp`, usually). See `examples/embed.rs`.

pub mod accounts;
pub mod activity;
mod built;
pub mod callerid;
mod component;
pub mod config;
mod directory;
pub mod failure;
#[cfg(feature = "fault-injection")]
pub mod fault;
mod gateway;
pub mod group;
mod health;
pub mod http;
pub mod media;
mod message;
pub mod metrics;
mod phone;
pub mod provider;
mod pstn;
mod rate;
pub mod reload;
mod sandbox;
mod secret;
pub mod setup;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod text;
pub(crate) mod time;

pub use built::Providers;
pub use component::{Component, ComponentError, Lent, ProcessError, XmppChannels, XmppLink};
pub use config::{Config, ConfigError};
pub use directory::{Directory, Origin, Refused, Settings, StoredUser};
pub use gateway::{
    AccountPolicy, Ack, Action, Gateway, GatewayState, Routing, User, NOTICE_INTERVAL,
};
pub use message::{
    random_id, run_tag, ChatMessage, DeliveryStatus, ErrorCondition, Fetched, InboundRejected,
    InboundSms, Media, OutboundSms, OutgoingStanza, PstnCommand, PstnEvent, RoomLine, Speaker,
    StatusReport, UserChange, XmppEvent,
};
pub use phone::{PhoneError, PhoneNumber};
pub use provider::{
    ProviderConfigError, ProviderContext, ProviderError, ProviderErrorKind, ProviderFactory,
    ProviderRegistry, PstnProvider, WebhookError, WebhookEvent, WebhookReply, WebhookRequest,
};
pub use sandbox::SandboxProvider;
pub use secret::Secret;
pub use time::{backoff, unix_now, utc};
pub use tokio_util::sync::CancellationToken;
