//! Embedding sms-over-xmpp (`sms-gateway-core`, and for the whole runtime
//! `sms-gateway-runtime`) in a program of your own, with a provider of
//! your own. Run it against the quick start's Prosody:
//!
//! ```sh
//! cargo run -p sms-over-xmpp-examples --example embed -- examples/embed.toml
//! ```
//!
//! The `echo` provider below "sends" a text by logging it, which is enough
//! to chat through the whole gateway.
//!
//! Two ways to embed it:
//!
//! - **The whole runtime** (the default): `sms-gateway-runtime`'s supervising
//!   `Component` runs
//!   the XMPP, Gateway and PSTN processes, exactly as `sms-over-xmpp run`.
//! - **The Gateway alone** (`--gateway-alone`, no XMPP server needed;
//!   `sms-gateway-core` only): the
//!   translation and routing rules with your own I/O around them. You hand
//!   it events (a chat, a carrier's answer) inside a store transaction; it
//!   hands back the actions to carry out (a text to send, a stanza to write).
//!
//! ```sh
//! cargo run -p sms-over-xmpp-examples --example embed -- examples/embed.toml --gateway-alone
//! ```

use async_trait::async_trait;
use sms_gateway_core::provider::provider_settings;
use sms_gateway_core::{
    Action, CancellationToken, ChatMessage, Config, Gateway, OutboundSms, ProviderContext,
    ProviderError, ProviderRegistry, PstnCommand, PstnEvent, PstnProvider, Routing, WebhookError,
    WebhookReply, WebhookRequest,
};
use sms_gateway_runtime::Component;
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
    registry.register("sandbox", sms_gateway_runtime::SandboxProvider::from_config);
    registry.register("echo", echo_factory);

    let config = Config::load(path.as_ref())?;
    let providers = config.validate(&registry)?;
    if std::env::args().any(|a| a == "--gateway-alone") {
        return gateway_alone(&config, &providers).await;
    }
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

/// The Gateway alone: a chat from the config's first user to a number goes
/// in; the text to send comes out; our own code sends it through the
/// account's provider and hands the carrier's answer back. Nothing is
/// stored (the Gateway's default store is in memory).
async fn gateway_alone(
    config: &Config,
    providers: &sms_gateway_core::Providers,
) -> Result<(), Box<dyn std::error::Error>> {
    let gateway = Gateway::new(Arc::new(Routing::new(config, providers)), Arc::default());
    let user = config.users.first().ok_or("the config has no [[users]]")?;
    let chat = ChatMessage {
        from: format!("{}/example", user.jid),
        to: format!("+15557654321@{}", config.xmpp.domain),
        id: Some("example-1".into()),
        body: "Hello from a program that embeds the Gateway".into(),
        media: vec![],
        receipt_requested: true,
        addresses: vec![],
        groupchat: false,
    };
    let mut tx = gateway.begin()?;
    let actions = gateway.on_xmpp(&mut *tx, sms_gateway_core::XmppEvent::Chat(chat));
    tx.commit()?;
    for action in actions {
        let Action::Pstn(PstnCommand::Send {
            account,
            parts,
            ticket,
            ..
        }) = action
        else {
            println!("for the XMPP side: {action:?}");
            continue;
        };
        // Carrying the action out is ours: send each part through the account.
        let provider = providers
            .accounts
            .get(&account)
            .ok_or("no such account")?
            .provider;
        let mut ids = vec![];
        let mut error = None;
        for part in &parts {
            match provider.send(part).await {
                Ok(id) => ids.push(id),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        println!("sent {} part(s) through {account}: {ids:?}", ids.len());
        // And the carrier's answer goes back in.
        let mut tx = gateway.begin()?;
        let (after, _) = gateway.on_pstn(&mut *tx, PstnEvent::SendResult { ticket, ids, error });
        tx.commit()?;
        println!("the Gateway's answer: {after:?}");
    }
    Ok(())
}
