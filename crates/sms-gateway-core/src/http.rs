//! What every HTTP provider needs the same way (feature `http-client`): a
//! pooled rustls client with bounded timeouts, the classification of
//! transport failures, and `Retry-After`.

use crate::provider::{ProviderError, ProviderErrorKind};
use std::time::Duration;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client as every provider should have one: rustls, connections kept and
/// reused (most carrier CPU otherwise goes to TLS handshakes), `timeout` per
/// request.
pub fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("sms-over-xmpp/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// A transport failure talking to `carrier`. Only a failure to connect
/// proves the request never left ([`ProviderErrorKind::Network`], safe to
/// retry); anything later (a timeout, a connection broken mid-way, an
/// unreadable answer) may follow a message the carrier took
/// ([`ProviderErrorKind::Timeout`], never resent). The URL is left out: it
/// is not secret, but the message should read the same for every request.
pub fn transport_error(carrier: &str, e: reqwest::Error) -> ProviderError {
    let (kind, what) = if e.is_connect() {
        (ProviderErrorKind::Network, "could not connect")
    } else if e.is_timeout() {
        (ProviderErrorKind::Timeout, "timed out")
    } else {
        (ProviderErrorKind::Timeout, "request failed")
    };
    let e = e.without_url();
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    ProviderError::new(kind, format!("{carrier} {what}: {detail}"))
}

/// `Retry-After` in seconds, if the answer has one.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}
