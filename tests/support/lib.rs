//! Shared pieces of the end-to-end suites: a real Prosody on loopback with a
//! throwaway config, the gateway run in-process exactly as `sms-over-xmpp
//! run` runs it, real XMPP client sessions, and signed carrier webhooks.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio_xmpp::minidom::Element;

mod accounts;
mod binary;
mod carriers;
mod gateway;
mod servers;
mod user;

pub use accounts::*;
pub use binary::*;
pub use carriers::*;
pub use gateway::*;
pub use servers::*;
pub use user::*;

pub use sms_gateway_core::CancellationToken;

/// The component domain every suite uses.
pub const DOMAIN: &str = "sms.localhost";
/// The component secret every suite uses.
pub const SECRET: &str = "component-secret";
/// The webhook base URL the gateway is configured with (carriers sign it).
pub const PUBLIC: &str = "https://sms.example.com/hooks";
/// The contact every suite writes to.
pub const CONTACT: &str = "+15557654321@sms.localhost";
/// The Twilio account SID of the suites' Twilio accounts.
pub const TWILIO_SID: &str = "AC0123456789abcdef0123456789abcdef";
/// The `Authorization` header for the sandbox account of [`sandbox_alice`].
pub const SANDBOX_AUTH: &str = "Bearer quickstart-sandbox-token";

/// The path of the Twilio account's Messages resource.
pub fn twilio_messages_path() -> String {
    format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages.json")
}

/// Config TOML: Twilio account `main` at `api_base` (with `more` of its
/// keys) and alice@localhost on it as +15550001111.
pub fn twilio_alice(api_base: &str, auth_token: &str, more: &str) -> String {
    format!(
        r#"
[providers.main]
type = "twilio"
account_sid = "{TWILIO_SID}"
auth_token = "{auth_token}"
api_base = "{api_base}"
{more}

[[users]]
jid = "alice@localhost"
number = "+15550001111"
provider = "main"
"#
    )
}

/// Config TOML: sandbox account `sandbox` (token of [`SANDBOX_AUTH`]) and
/// alice@localhost on it as +15550001111.
pub const SANDBOX_ALICE: &str = r#"
[providers.sandbox]
type = "sandbox"
token = "quickstart-sandbox-token"

[[users]]
jid = "alice@localhost"
number = "+15550001111"
provider = "sandbox"
"#;

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `port` accepts connections.
pub async fn wait_for_port(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nothing listens on port {port} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A PostgreSQL database of a test's own (`$DATABASE_URL`'s server, else
/// 127.0.0.1:5432; `scripts/test.sh` makes sure one answers), dropped
/// with it.
pub struct Database {
    /// Its name.
    pub name: String,
    /// `postgresql://…/{name}`, for `[store] url`.
    pub url: String,
}

impl Database {
    fn admin_url() -> String {
        std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".into())
    }

    /// Runs `sql`, one statement a call, as the server's admin, on a
    /// thread of its own (the blocking client must not run inside the
    /// test's runtime).
    fn admin(sql: Vec<String>) -> Result<(), String> {
        let admin = Self::admin_url();
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&admin, postgres::NoTls).map_err(|e| {
                format!("no PostgreSQL at {admin} ({e}): set DATABASE_URL, or run scripts/test.sh")
            })?;
            for q in sql {
                c.batch_execute(&q).map_err(|e| format!("{q}: {e}"))?;
            }
            Ok(())
        })
        .join()
        .expect("the admin thread")
    }

    /// Makes the database `sox_{pid}_{test}` afresh.
    pub fn new(test: &str) -> Database {
        let admin = Self::admin_url();
        let name = format!("sox_{}_{test}", std::process::id());
        Self::admin(vec![
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let (base, query) = match admin.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (admin.as_str(), String::new()),
        };
        let server = base.rsplit_once('/').map_or(base, |(s, _)| s);
        Database {
            url: format!("{server}/{name}{query}"),
            name,
        }
    }
}

impl Database {
    /// Runs `sql` as the server's admin (from another database).
    pub async fn admin_sql(&self, sql: &str) {
        let sql = sql.to_owned();
        tokio::task::spawn_blocking(move || Self::admin(vec![sql]))
            .await
            .expect("the admin thread")
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The first column of what `sql` returns, as text (NULL as ""), read
    /// on a thread of its own.
    pub async fn column(&self, sql: &str) -> Vec<String> {
        let (url, sql) = (self.url.clone(), sql.to_owned());
        tokio::task::spawn_blocking(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
            c.simple_query(&sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .into_iter()
                .filter_map(|m| match m {
                    postgres::SimpleQueryMessage::Row(r) => {
                        Some(r.get(0).unwrap_or_default().to_owned())
                    }
                    _ => None,
                })
                .collect()
        })
        .await
        .expect("the query thread")
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Self::admin(vec![format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )]);
    }
}
