//! The gateway run in-process, as `sms-over-xmpp run` runs it, and its config.

use super::*;

/// The gateway, run in-process the way `sms-over-xmpp run` runs it: the
/// config parsed and validated with every provider this build has.
pub struct Gateway {
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Where webhooks go: `http://127.0.0.1:{port}`.
    pub http_base: String,
}

impl Gateway {
    /// Starts a gateway for `toml` and waits until its webhook port answers.
    pub async fn start(toml: &str) -> Gateway {
        // The gateway's logs go with the test's output (RUST_LOG to see more).
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
        let config = sms_gateway_core::Config::from_toml(toml).expect("config parses");
        let providers = config
            .validate(&sms_over_xmpp_bin::registry())
            .expect("config validates");
        let http_base = format!("http://{}", config.http.listen);
        let port = config.http.listen.port();
        let shutdown = CancellationToken::new();
        let xmpp = Arc::new(sms_xmpp::XmppProcess::new(&config, &providers));
        // With `[store] path`, the SQLite store as the binary opens it;
        // without, the in-memory one.
        let store = config.store.path.as_ref().map(|p| {
            Arc::new(sms_store_sqlite::SqliteStore::open(p).expect("store opens"))
                as Arc<dyn sms_gateway_core::store::Store>
        });
        // Media files next to the store, as the binary keeps them; without
        // a store, in a directory of this gateway's own.
        let media_dir = match &config.store.path {
            Some(p) => config.media.resolve_dir(p),
            None => std::env::temp_dir().join(format!("sox-media-{}-{port}", std::process::id())),
        };
        let mut component =
            sms_gateway_runtime::Component::new(config, providers).with_media_dir(media_dir);
        if let Some(store) = store {
            component = component.with_store(store);
        }
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            component.run(xmpp, token).await.expect("component runs");
        });
        wait_for_port(port, Duration::from_secs(10)).await;
        Gateway {
            shutdown,
            task: Some(task),
            http_base,
        }
    }

    /// Stops the gateway and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("gateway stops in time")
                .unwrap();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A config for the gateway against `prosody`, with `providers` and `users`
/// TOML appended.
pub fn gateway_config(server: &dyn XmppServer, http_port: u16, extra: &str) -> String {
    format!(
        r#"
[xmpp]
server = "127.0.0.1:{comp}"
domain = "{DOMAIN}"
secret = "{SECRET}"

[http]
listen = "127.0.0.1:{http_port}"
public_url = "{PUBLIC}"

[phone]
default_prefix = "+1"

# The suites send hundreds of chats a minute: limits out of their way (the
# hostile suite puts them back, replacing these lines).
[limits]
texts_per_minute = 1000000
texts_burst = 1000000
max_parts = 100
{extra}
"#,
        comp = server.component_port(),
    )
}
