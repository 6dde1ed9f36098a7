//! # sms-gateway-runtime
//!
//! Everything that runs around `sms-gateway-core`'s [`Gateway`]: the
//! supervising [`Component`] (which starts the XMPP, Gateway and PSTN
//! processes, restarts one that fails, and owns the channels between them),
//! the PSTN process with its HTTP server for carrier webhooks and the
//! gateway's media files, inbound media kept and served ([`media`]), health
//! and readiness, configuration reload ([`reload`]), carrier set-up
//! ([`setup`]) and the built-in [`SandboxProvider`].
//!
//! ```text
//! XMPP server <-> XMPP process <-ch-> Gateway <-ch-> PSTN process <-> carriers
//!                 (XmppLink)      (sms-gateway-core)  (here: webhooks, API calls)
//! ```
//!
//! An embedder builds a [`ProviderRegistry`] (adding its own provider types),
//! loads and validates a [`Config`], and runs a [`Component`] with an
//! [`XmppLink`] (the one in `sms-xmpp`, usually). See `examples/embed.rs`.

// The core's items, at the paths this crate's modules name them by.
#[allow(unused_imports)]
use sms_gateway_core::*;

mod component;
mod health;
pub mod media;
mod pstn;
pub mod reload;
mod sandbox;
pub mod setup;

/// A config for this crate's tests: one sandbox account, `main`, whose
/// user is alice@example.com, and `extra` after it.
#[cfg(test)]
pub(crate) fn test_config(extra: &str) -> String {
    format!(
        r#"
[xmpp]
server = "127.0.0.1:5347"
domain = "sms.example.com"
secret = "s"
[http]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1/"
[providers.main]
type = "sandbox"
token = "sandbox-test-token"
[[users]]
jid = "alice@example.com"
number = "+15550001111"
provider = "main"
{extra}
"#
    )
}

pub use component::{Component, ComponentError, Lent, ProcessError, XmppChannels, XmppLink};
pub use sandbox::{registry as sandbox_registry, SandboxProvider};
