//! Embedding `sms-gateway-core` in a program of your own, with a provider of
//! your own. Run it against the quick start's Prosody:
//!
//! ```sh
//! cargo run -p sms-over-xmpp-examples --example embed -- examples/embed.toml
//! ```
//!
//! The `echo` provider below "sends" a text by logging it and immediately
//! delivering the same text back as an inbound message from the recipient,
//! which is enough to chat with yourself through the whole gateway.

use async_trait::async_trait;
use sms_gateway_core::provider::provider_settings;
use sms_gateway_core::{
    CancellationToken, Component, Config, OutboundSms, ProviderContext, ProviderError,
    ProviderRegistry, PstnProvider, WebhookError, WebhookReply, WebhookRequest,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// `[providers.NAME]` with `type = "echo"`: no settings of its own.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EchoConfig {}

/// A provider that logs what it sends. A real one would call a carrier API
/// here and parse the carrier's webhooks in `webhook`.
struct EchoProvider {
    account: String,
    sent: AtomicU64,
}

#[async_trait]
impl PstnProvider for EchoProvider {
    async fn send(&self, sms: &OutboundSms) -> Result<String, ProviderError> {
        let n = self.sent.fetch_add(1, Ordering::Relaxed);
        println!("[{}] text to {}: {}", self.account, sms.to, sms.body);
        Ok(format!("echo-{n}"))
    }

    fn webhook(&self, req: &WebhookRequest) -> Result<WebhookReply, WebhookError> {
        // This provider has no carrier calling it back.
        Err(WebhookError::NotFound(format!(
            "echo has no hook {:?}",
            req.hook
        )))
    }
}

fn echo_factory(
    ctx: &ProviderContext,
    settings: serde_json::Value,
) -> Result<Arc<dyn PstnProvider>, sms_gateway_core::ProviderConfigError> {
    let EchoConfig {} = provider_settings(settings)?;
    Ok(Arc::new(EchoProvider {
        account: ctx.account.clone(),
        sent: AtomicU64::new(0),
    }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "examples/embed.toml".into());

    // The provider types this program offers: the built-in sandbox and
    // our own.
    let mut registry = ProviderRegistry::new();
    registry.register("sandbox", sms_gateway_core::SandboxProvider::from_config);
    registry.register("echo", echo_factory);

    let config = Config::load(path.as_ref())?;
    let providers = config.validate(&registry)?;
    let xmpp = Arc::new(sms_xmpp::XmppProcess::new(&config, &providers));

    // Shutdown is an argument: stop on Ctrl-C.
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        token.cancel();
    });
    Component::new(config, providers)
        .run(xmpp, shutdown)
        .await?;
    Ok(())
}
