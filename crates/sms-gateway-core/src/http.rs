//! What every HTTP provider needs the same way (feature `http-client`): a
//! pooled rustls client with bounded timeouts and answers, the
//! classification of transport failures, and `Retry-After`.
//!
//! The client is hyper's own pooled client, not reqwest: for the one kind
//! of request a carrier API takes (a POST to a URL known at start), reqwest
//! parsed the URL twice more per request for its redirect machinery and
//! wrapped it in layers of its own. Sending a text took 66,000 instructions
//! through reqwest and takes 31,000 this way (callgrind,
//! `docs/benchmarks.md`).

use crate::message::{ProviderError, ProviderErrorKind};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::time::Duration;

pub use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an unused connection is kept for the next request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The most of a carrier's answer that is read (its JSON is a few KiB).
pub const MAX_ANSWER: usize = 1 << 20;
const USER_AGENT: &str = concat!("sms-over-xmpp/", env!("CARGO_PKG_VERSION"));
/// What every carrier call asks for. Headers of constants are made with
/// `from_static`: no copy and no check per request (#30).
const JSON: &str = "application/json";

/// A client as every provider should have one: rustls with the webpki
/// roots, connections kept and reused (most carrier CPU otherwise goes to
/// TLS handshakes), `TCP_NODELAY`, a timeout per request and answers read
/// up to [`MAX_ANSWER`].
#[derive(Clone)]
pub struct Client {
    inner: hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A carrier's answer.
#[derive(Debug)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// At most [`MAX_ANSWER`] bytes.
    pub body: Bytes,
}

impl Client {
    /// A client whose requests (connecting, sending, reading the whole
    /// answer) take at most `timeout` each.
    pub fn new(timeout: Duration) -> Result<Self, String> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| format!("cannot set up TLS: {e}"))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .build(https);
        Ok(Client { inner, timeout })
    }

    /// POSTs `body`, of `content_type`, to `url` with `authorization`,
    /// asking for JSON. Any answer is `Ok`, whatever its status; a
    /// transport failure is a [`ProviderError`] naming `carrier`. Only a
    /// failure to connect proves the request never left
    /// ([`ProviderErrorKind::Network`], safe to retry); anything later (a
    /// timeout, a connection broken mid-way, an answer too large) may
    /// follow a message the carrier took ([`ProviderErrorKind::Timeout`],
    /// never resent). The URL is left out of the message: it is not secret,
    /// but the message should read the same for every request.
    pub async fn post(
        &self,
        carrier: &str,
        url: &Uri,
        authorization: &HeaderValue,
        content_type: &'static str,
        body: impl Into<Bytes>,
    ) -> Result<Answer, ProviderError> {
        let request = http::Request::post(url.clone())
            .header(http::header::AUTHORIZATION, authorization.clone())
            .header(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(content_type),
            )
            .header(http::header::ACCEPT, HeaderValue::from_static(JSON))
            .header(
                http::header::USER_AGENT,
                HeaderValue::from_static(USER_AGENT),
            )
            .body(Full::new(body.into()));
        self.exchange(carrier, request).await
    }

    /// Calls `method` on `url` with `authorization` and, if any, a body of
    /// a content type, asking for JSON; otherwise as [`Client::post`]. For
    /// the account set-up calls (`check --online`, `configure-carrier`).
    pub async fn call(
        &self,
        carrier: &str,
        method: http::Method,
        url: &Uri,
        authorization: &HeaderValue,
        body: Option<(&'static str, Bytes)>,
    ) -> Result<Answer, ProviderError> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(url.clone())
            .header(http::header::AUTHORIZATION, authorization.clone())
            .header(http::header::ACCEPT, HeaderValue::from_static(JSON))
            .header(
                http::header::USER_AGENT,
                HeaderValue::from_static(USER_AGENT),
            );
        let body = match body {
            Some((content_type, body)) => {
                request = request.header(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static(content_type),
                );
                body
            }
            None => Bytes::new(),
        };
        self.exchange(carrier, request.body(Full::new(body))).await
    }

    /// DELETEs `url` with `authorization`; otherwise as [`Client::post`].
    pub async fn delete(
        &self,
        carrier: &str,
        url: &Uri,
        authorization: &HeaderValue,
    ) -> Result<Answer, ProviderError> {
        let request = http::Request::delete(url.clone())
            .header(http::header::AUTHORIZATION, authorization.clone())
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, USER_AGENT)
            .body(Full::new(Bytes::new()));
        self.exchange(carrier, request).await
    }

    /// GETs `url` (with `authorization`, if any), reading at most `limit`
    /// bytes of the answer: for media, whose size the caller bounds. Any
    /// answer is `Ok`, whatever its status (redirects are the caller's).
    pub async fn get(
        &self,
        url: &Uri,
        authorization: Option<&HeaderValue>,
        limit: usize,
    ) -> Result<Answer, GetError> {
        let mut request =
            http::Request::get(url.clone()).header(http::header::USER_AGENT, USER_AGENT);
        if let Some(a) = authorization {
            request = request.header(http::header::AUTHORIZATION, a.clone());
        }
        self.within(async {
            let response = self.send(request.body(Full::new(Bytes::new()))).await?;
            let (parts, body) = response.into_parts();
            let declared = parts
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if parts.status.is_success() && declared.is_some_and(|n| n > limit as u64) {
                return Err(GetError::TooLarge);
            }
            // Only a success's body matters; an error page is read up to a
            // few KiB.
            let read = if parts.status.is_success() {
                limit
            } else {
                4096
            };
            let body = match Limited::new(body, read).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    if parts.status.is_success() {
                        return Err(GetError::TooLarge);
                    }
                    Bytes::new()
                }
                Err(e) => return Err(GetError::Failed(chain(&*e))),
            };
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        })
        .await
    }

    /// PUTs `body` of `content_type` to `url` with `headers` (an upload
    /// slot's): the answer's status, or why there was none.
    pub async fn put(
        &self,
        url: &Uri,
        headers: &[(String, String)],
        content_type: &str,
        body: Bytes,
    ) -> Result<u16, GetError> {
        let mut request = http::Request::put(url.clone())
            .header(http::header::USER_AGENT, USER_AGENT)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, body.len());
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        self.within(async {
            let response = self.send(request.body(Full::new(body))).await?;
            let status = response.status().as_u16();
            // Read (a little of) the answer so the connection can be reused.
            let _ = Limited::new(response.into_body(), 4096).collect().await;
            Ok(status)
        })
        .await
    }

    /// Sends a request for [`Client::get`] and [`Client::put`], telling a
    /// failure to connect from one on the way.
    async fn send(
        &self,
        request: Result<http::Request<Full<Bytes>>, http::Error>,
    ) -> Result<http::Response<hyper::body::Incoming>, GetError> {
        let request =
            request.map_err(|e| GetError::Failed(format!("cannot build the request: {e}")))?;
        self.inner.request(request).await.map_err(|e| {
            if e.is_connect() {
                GetError::Connect(chain(&e))
            } else {
                GetError::Failed(chain(&e))
            }
        })
    }

    /// `exchange`, given at most the client's timeout.
    async fn within<T>(
        &self,
        exchange: impl std::future::Future<Output = Result<T, GetError>>,
    ) -> Result<T, GetError> {
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(GetError::Failed(format!(
                    "no answer within {} s",
                    self.timeout.as_secs_f64()
                )))
            })
    }

    async fn exchange(
        &self,
        carrier: &str,
        request: Result<http::Request<Full<Bytes>>, http::Error>,
    ) -> Result<Answer, ProviderError> {
        let request = request.map_err(|e| {
            ProviderError::new(
                ProviderErrorKind::Rejected,
                format!("{carrier}: cannot build the request: {e}"),
            )
        })?;
        let exchange = async {
            let response = self.inner.request(request).await.map_err(|e| {
                let (kind, what) = if e.is_connect() {
                    (ProviderErrorKind::Network, "could not connect")
                } else {
                    (ProviderErrorKind::Timeout, "request failed")
                };
                ProviderError::new(kind, format!("{carrier} {what}: {}", chain(&e)))
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| {
                    let detail = if e.is::<http_body_util::LengthLimitError>() {
                        format!("an answer over {MAX_ANSWER} bytes")
                    } else {
                        chain(&*e)
                    };
                    ProviderError::new(
                        ProviderErrorKind::Timeout,
                        format!("{carrier} request failed: {detail}"),
                    )
                })?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(ProviderError::new(
                    ProviderErrorKind::Timeout,
                    format!(
                        "{carrier} timed out: no answer within {} s",
                        self.timeout.as_secs_f64()
                    ),
                ))
            })
    }
}

/// Why a [`Client::get`] got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GetError {
    /// The server could not be reached.
    #[error("could not connect: {0}")]
    Connect(String),
    /// The request failed on the way, or timed out.
    #[error("request failed: {0}")]
    Failed(String),
    /// The answer was larger than the limit.
    #[error("larger than the limit")]
    TooLarge,
}

/// An error and its sources, `: `-separated.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut detail = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    detail
}

/// A carrier's endpoint, checked and parsed once: an http(s) URL with a
/// host.
pub fn endpoint(url: &str) -> Result<Uri, String> {
    match url.parse::<Uri>() {
        Ok(u)
            if matches!(u.scheme_str(), Some("http" | "https"))
                && u.host().is_some_and(|h| !h.is_empty()) =>
        {
            Ok(u)
        }
        Ok(_) => Err(format!("{url:?} is not an http(s) URL")),
        Err(e) => Err(format!("{url:?} is not a URL: {e}")),
    }
}

/// Checks an `api_base` setting (an http(s) URL with a host) and drops a
/// trailing `/`, naming the key when it is not one.
pub fn api_base(value: &str) -> Result<String, String> {
    match endpoint(value) {
        Ok(_) => Ok(value.trim_end_matches('/').to_owned()),
        Err(_) => Err(format!("`api_base` = {value:?}: expected an http(s) URL")),
    }
}

/// An `Authorization` header value, built once and marked sensitive (so
/// HTTP-level logging never shows it).
pub fn authorization(value: &str) -> Result<HeaderValue, String> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| "the credentials contain characters a header cannot carry".to_owned())?;
    v.set_sensitive(true);
    Ok(v)
}

/// The longest wait a carrier's `Retry-After` is taken for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `Retry-After` in seconds, if the answer has one, at most
/// [`MAX_RETRY_AFTER`]: a carrier (or whoever answers in its place) may say
/// `18446744073709551615`, and the wait is ours to bound.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // All digits: only too many of them fails to parse.
    let secs = v.parse::<u64>().unwrap_or(u64::MAX);
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn retry_after_is_read_and_capped() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(http::header::RETRY_AFTER, HeaderValue::from_str(v).unwrap());
            retry_after(&m)
        };
        assert_eq!(h("7"), Some(Duration::from_secs(7)));
        assert_eq!(h(" 30 "), Some(Duration::from_secs(30)));
        assert_eq!(h("18446744073709551615"), Some(MAX_RETRY_AFTER));
        assert_eq!(h("99999999999999999999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(h("-1"), None);
        assert_eq!(h("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A bare HTTP/1.1 server on loopback: each request on each connection
    /// gets `answer`, unless it is empty (then nothing is answered). Counts
    /// the connections it accepts.
    async fn server(answer: Vec<u8>) -> (Uri, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/messages", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // One request: headers, then Content-Length bytes.
                        let request_end = loop {
                            if let Some(end) = find_body(&buf) {
                                break end;
                            }
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        buf.drain(..request_end);
                        if answer.is_empty() {
                            std::future::pending::<()>().await;
                        }
                        if conn.write_all(&answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (url.parse().unwrap(), accepted)
    }

    /// Where the request in `buf` ends, once it is all there.
    fn find_body(buf: &[u8]) -> Option<usize> {
        let head = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let headers = std::str::from_utf8(&buf[..head]).ok()?.to_ascii_lowercase();
        let length: usize = headers
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        (buf.len() >= head + length).then_some(head + length)
    }

    fn ok(body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn auth() -> HeaderValue {
        authorization("Basic dXNlcjpwYXNz").unwrap()
    }

    #[tokio::test]
    async fn requests_reuse_one_connection_and_return_the_answer() {
        let (url, accepted) = server(ok(r#"{"sid":"SM1"}"#)).await;
        let client = Client::new(Duration::from_secs(5)).unwrap();
        for _ in 0..3 {
            let a = client
                .post("Carrier", &url, &auth(), "application/json", "{}")
                .await
                .unwrap();
            assert_eq!(a.status, StatusCode::CREATED);
            assert_eq!(&a.body[..], br#"{"sid":"SM1"}"#);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one pooled connection");
    }

    #[tokio::test]
    async fn no_answer_within_the_timeout_is_a_timeout() {
        let (url, _) = server(vec![]).await;
        let client = Client::new(Duration::from_millis(200)).unwrap();
        let e = client
            .post("Carrier", &url, &auth(), "application/json", "{}")
            .await
            .unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::Timeout, "{e}");
        assert!(e.to_string().contains("Carrier timed out"), "{e}");
    }

    #[tokio::test]
    async fn an_answer_too_large_is_cut_off_and_reported() {
        let big = "x".repeat(MAX_ANSWER + 1);
        let (url, _) = server(ok(&big)).await;
        let e = Client::new(Duration::from_secs(5))
            .unwrap()
            .post("Carrier", &url, &auth(), "application/json", "{}")
            .await
            .unwrap_err();
        // It may have been taken: not resent.
        assert_eq!(e.kind, ProviderErrorKind::Timeout, "{e}");
        assert!(
            e.to_string().contains("an answer over 1048576 bytes"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn nothing_listening_is_a_network_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url: Uri = format!("http://127.0.0.1:{port}/").parse().unwrap();
        let e = Client::new(Duration::from_secs(5))
            .unwrap()
            .post("Carrier", &url, &auth(), "application/json", "{}")
            .await
            .unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::Network, "{e}");
        assert!(e.to_string().contains("Carrier could not connect"), "{e}");
    }

    #[tokio::test]
    async fn https_urls_speak_tls() {
        // A plain-HTTP server behind an https URL, answering whatever
        // comes: the client must take that for a failed TLS handshake (the
        // request never left), not as an answer.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let https: Uri = format!("https://{}/messages", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let plain = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut hello = [0u8; 5];
            conn.read_exact(&mut hello).await.unwrap();
            conn.write_all(&ok("{}")).await.unwrap();
            hello
        });
        let e = Client::new(Duration::from_secs(5))
            .unwrap()
            .post("Carrier", &https, &auth(), "application/json", "{}")
            .await
            .unwrap_err();
        // A TLS record header: a handshake (22), TLS 1.x.
        let hello = plain.await.unwrap();
        assert_eq!(&hello[..2], &[22, 3], "{hello:?}");
        assert_eq!(e.kind, ProviderErrorKind::Network, "{e}");
        assert!(e.to_string().contains("could not connect"), "{e}");
    }

    #[test]
    fn endpoints_must_be_http_urls_with_a_host() {
        assert!(endpoint("https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json").is_ok());
        assert!(endpoint("http://127.0.0.1:8080").is_ok());
        for bad in [
            "ftp://example.com/",
            "api.twilio.com",
            "https://",
            "not a url",
            "",
        ] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn authorization_is_sensitive() {
        assert!(auth().is_sensitive());
        assert!(authorization("Bearer a\nb").is_err());
    }
}
