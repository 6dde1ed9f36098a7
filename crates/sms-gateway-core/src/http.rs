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

/// A carrier's endpoint, parsed once (reqwest would parse a string again
/// for every request).
pub fn endpoint(url: &str) -> Result<reqwest::Url, String> {
    reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))
}

/// An `Authorization` header value, built once and marked sensitive (so
/// HTTP-level logging never shows it).
pub fn authorization(value: &str) -> Result<reqwest::header::HeaderValue, String> {
    let mut v = reqwest::header::HeaderValue::from_str(value)
        .map_err(|_| "the credentials contain characters a header cannot carry".to_owned())?;
    v.set_sensitive(true);
    Ok(v)
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

/// The error for a carrier's non-2xx answer: the kind from the HTTP status
/// (or [`ProviderErrorKind::RateLimited`] when the carrier's own code is
/// `rate_limit_code`, whatever the status), the carrier's code (a JSON
/// string or number) and message, and `Retry-After`.
pub fn carrier_error(
    status: u16,
    message: Option<String>,
    code: Option<&serde_json::Value>,
    rate_limit_code: &str,
    retry_after: Option<Duration>,
) -> ProviderError {
    let message = message.unwrap_or_else(|| format!("HTTP {status}"));
    let mut err = ProviderError::from_http_status(status, message);
    if let Some(code) = code.filter(|c| !c.is_null()) {
        let code = code
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| code.to_string());
        if code == rate_limit_code {
            err.kind = ProviderErrorKind::RateLimited;
        }
        err = err.with_code(code);
    }
    err.retry_after = retry_after;
    err
}
