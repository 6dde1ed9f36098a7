//! The contract between the PSTN process and a carrier: [`PstnProvider`].
//!
//! A provider does two things: it sends a text through the carrier's API, and
//! it turns a webhook the carrier sent into [`PstnEvent`](crate::PstnEvent)s
//! after checking that the carrier really sent it. The PSTN process owns the
//! HTTP server, the channels and the retries; a provider owns only its API
//! client and its wire formats.

use crate::message::{InboundSms, Media, OutboundSms, StatusReport};
pub use crate::message::{ProviderError, ProviderErrorKind};
use crate::phone::PhoneNumber;
use crate::text::Limits;
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// A webhook request as the PSTN process received it.
#[derive(Clone)]
pub struct WebhookRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// The hook name: the path segment after the account (`message`, `status`, …).
    pub hook: String,
    /// The URL the carrier called, rebuilt from `http.public_url`:
    /// `{public_url}/{account}/{hook}` plus the query string, if any.
    /// Signatures are computed over this.
    pub url: String,
    /// Headers, names lower-cased; repeated headers keep the first value.
    pub headers: BTreeMap<String, String>,
    /// The raw body.
    pub body: Bytes,
}

impl WebhookRequest {
    /// Checks that this is a `POST` to one of `hooks`, as carriers' webhooks
    /// are: 404 for another hook, 405 for another method.
    pub fn expect_post_to(&self, hooks: &[&str]) -> Result<(), WebhookError> {
        if !hooks.contains(&self.hook.as_str()) {
            return Err(WebhookError::NotFound(format!(
                "no hook {:?}; use {}",
                self.hook,
                hooks.join(" or ")
            )));
        }
        if self.method != "POST" {
            return Err(WebhookError::MethodNotAllowed("use POST".into()));
        }
        Ok(())
    }

    /// A header's value by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The media type of the body, lower-cased, without parameters
    /// (`application/x-www-form-urlencoded; charset=UTF-8` gives
    /// `application/x-www-form-urlencoded`); empty when none was given.
    pub fn media_type(&self) -> String {
        media_type(self.header("content-type").unwrap_or(""))
    }

    /// Whether the body is form-encoded.
    pub fn is_form(&self) -> bool {
        self.media_type() == FORM_MEDIA_TYPE
    }

    /// The fields of a form-encoded body, in order. Refused with 400: a body
    /// that is not form-encoded, more than [`MAX_FORM_FIELDS`] fields, and a
    /// name given twice (which field a check or a parser reads must never be
    /// in doubt: a signature covers both, a parser would take one).
    pub fn form(&self) -> Result<Vec<(String, String)>, WebhookError> {
        if !self.is_form() {
            return Err(WebhookError::BadRequest(format!(
                "expected a {FORM_MEDIA_TYPE} body"
            )));
        }
        // Counted before anything is decoded or allocated.
        let fields = self.body.split(|&b| b == b'&').filter(|f| !f.is_empty());
        if fields.count() > MAX_FORM_FIELDS {
            return Err(WebhookError::BadRequest(format!(
                "more than {MAX_FORM_FIELDS} form fields"
            )));
        }
        let mut params: Vec<(String, String)> = Vec::new();
        for (k, v) in form_urlencoded::parse(&self.body) {
            if params.iter().any(|(seen, _)| *seen == k) {
                return Err(WebhookError::BadRequest(format!(
                    "form field `{}` is repeated",
                    crate::text::excerpt(&k, 40)
                )));
            }
            params.push((k.into_owned(), v.into_owned()));
        }
        Ok(params)
    }
}

/// A 400 for a JSON body that could not be read, naming where and why but
/// never quoting the values (a message's text) serde quotes.
pub fn json_error(what: &str, e: &serde_json::Error) -> WebhookError {
    WebhookError::BadRequest(format!(
        "{what}: {}",
        crate::text::redact_quoted(&e.to_string())
    ))
}

/// The media type of a `Content-Type` value, lower-cased, without
/// parameters.
pub fn media_type(content_type: &str) -> String {
    let t = content_type.split(';').next().unwrap_or("");
    t.trim().to_ascii_lowercase()
}

/// The media type of form-encoded bodies.
pub const FORM_MEDIA_TYPE: &str = "application/x-www-form-urlencoded";

/// The most fields a form webhook may carry. Twilio's inbound MMS with ten
/// media has about fifty.
pub const MAX_FORM_FIELDS: usize = 200;

impl fmt::Debug for WebhookRequest {
    // Bodies carry message text: keep them out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookRequest")
            .field("method", &self.method)
            .field("hook", &self.hook)
            .field("url", &self.url)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// What a webhook carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEvent {
    /// An inbound text or MMS.
    Inbound(InboundSms),
    /// A delivery report.
    Status(StatusReport),
}

/// A provider's answer to a webhook: events to hand on, and the HTTP response
/// to give once they are handed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookReply {
    /// Events for the Gateway (may be empty: an event type we ignore).
    pub events: Vec<WebhookEvent>,
    /// HTTP status of the answer.
    pub status: u16,
    /// `Content-Type` of the answer.
    pub content_type: &'static str,
    /// Body of the answer.
    pub body: String,
}

impl WebhookReply {
    /// A reply of `200 OK` with an empty plain-text body.
    pub fn ok(events: Vec<WebhookEvent>) -> Self {
        WebhookReply {
            events,
            status: 200,
            content_type: "text/plain; charset=utf-8",
            body: String::new(),
        }
    }
}

/// Why a webhook was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The signature is missing or wrong (403); nothing is delivered.
    #[error("webhook signature missing or invalid: {0}")]
    Unauthorized(String),
    /// The request is malformed (400); nothing is delivered.
    #[error("malformed webhook: {0}")]
    BadRequest(String),
    /// No such hook for this provider (404).
    #[error("no such webhook: {0}")]
    NotFound(String),
    /// Wrong HTTP method (405).
    #[error("method not allowed: {0}")]
    MethodNotAllowed(String),
    /// A body of a type this hook does not read (415); nothing is delivered.
    #[error("unsupported body: {0}")]
    UnsupportedMediaType(String),
}

impl WebhookError {
    /// The HTTP status to answer with.
    pub fn http_status(&self) -> u16 {
        match self {
            WebhookError::Unauthorized(_) => 403,
            WebhookError::BadRequest(_) => 400,
            WebhookError::NotFound(_) => 404,
            WebhookError::MethodNotAllowed(_) => 405,
            WebhookError::UnsupportedMediaType(_) => 415,
        }
    }
}

/// A carrier account: sends texts and reads the carrier's webhooks.
///
/// Object-safe; the PSTN process holds each account as `Arc<dyn PstnProvider>`
/// and may call `send` concurrently.
#[async_trait]
pub trait PstnProvider: Send + Sync + 'static {
    /// Sends one text (or MMS) and returns the carrier's message id.
    ///
    /// May assume: `sms.from` and `sms.to` are E.164; the body fits one API
    /// request for this carrier (the Gateway splits long texts); `media` holds
    /// http(s) URLs within the carrier's count limit.
    ///
    /// Must: make at most one API request per call (retries are the caller's,
    /// so it can prevent duplicate texts); ask the carrier to report delivery
    /// status to this account's `status` webhook; classify failures right
    /// (429 `RateLimited`, 5xx `CarrierError`, no connection `Network`: all
    /// temporary; a request sent but not answered `Timeout`; other 4xx
    /// `Rejected`) and keep the carrier's error code.
    async fn send(&self, sms: &OutboundSms) -> Result<String, ProviderError>;

    /// What one request may carry. The Gateway splits longer texts (or
    /// refuses them, with `split_long = false`) and refuses more media than
    /// this with an error naming the limit. The default is no limit.
    fn limits(&self) -> Limits {
        Limits::default()
    }

    /// Authenticates and parses one webhook.
    ///
    /// Must: refuse ([`WebhookError::Unauthorized`]) anything whose signature
    /// does not verify, before looking at its content; refuse a malformed body
    /// with [`WebhookError::BadRequest`]; never panic on any input. The events
    /// returned are delivered before the reply is sent.
    fn webhook(&self, req: &WebhookRequest) -> Result<WebhookReply, WebhookError>;

    /// The `Authorization` to fetch an inbound media item at `url` with, if
    /// the carrier wants one there (Twilio: always; SignalWire: when media
    /// are protected). Asked again at each hop of a redirect: it must be
    /// `None` for any URL off the carrier's own API host, so a CDN (or
    /// whoever a redirect names) never sees the credentials. The default
    /// is `None`: the URL works as it is (Telnyx).
    fn media_authorization(&self, url: &crate::http::Uri) -> Option<crate::http::HeaderValue> {
        let _ = url;
        None
    }

    /// Deletes an inbound media item at the carrier once it has been
    /// fetched (`media.delete_at_carrier`); `Ok(false)` when the carrier
    /// has nothing to delete (the default: its media expire by
    /// themselves).
    async fn delete_media(&self, media: &Media) -> Result<bool, ProviderError> {
        let _ = media;
        Ok(false)
    }

    /// The carrier's own "who am I" for this account's credentials (for
    /// `check --online`): the account's name and state, in words. The
    /// default says the carrier offers none.
    async fn whoami(&self) -> Result<String, ProviderError> {
        Err(unsupported("checking the account"))
    }

    /// Finds `number` on this account (for `check --online` and
    /// `configure-carrier`): `None` when the account does not hold it.
    async fn find_number(
        &self,
        number: &PhoneNumber,
    ) -> Result<Option<NumberSetup>, ProviderError> {
        let _ = number;
        Err(unsupported("looking up numbers"))
    }

    /// The URL the carrier should be given for inbound texts whose hook is
    /// `hook`: `hook` itself by default. Twilio's adds connection
    /// overrides (`#rc=…&rp=…`), without which it does not retry a
    /// webhook the gateway answers 503 (busy, or stopping).
    fn inbound_url(&self, hook: &str) -> String {
        hook.to_owned()
    }

    /// Points what `number` names (`NumberSetup::handle`) at `url` for
    /// inbound texts, by POST (for `configure-carrier`).
    async fn point_number(&self, number: &NumberSetup, url: &str) -> Result<(), ProviderError> {
        let _ = (number, url);
        Err(unsupported("pointing numbers"))
    }
}

/// What a provider is told when it is built from config.
#[derive(Debug, Clone)]
pub struct ProviderContext {
    /// The account name (`[providers.NAME]`); it appears in webhook paths.
    pub account: String,
    /// `{public_url}/{account}`: where this account's webhooks arrive.
    pub webhook_base: String,
}

impl ProviderContext {
    /// The URL of one of this account's hooks, e.g. `status`.
    pub fn hook_url(&self, hook: &str) -> String {
        format!("{}/{hook}", self.webhook_base)
    }
}

/// A function that builds a provider from its `[providers.NAME]` table
/// (everything but `type`), or says which key is wrong.
pub type ProviderFactory =
    fn(&ProviderContext, serde_json::Value) -> Result<Arc<dyn PstnProvider>, ProviderConfigError>;

/// Why a provider account's settings were refused: the key at fault (within
/// `[providers.NAME]`), when one is, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ProviderConfigError {
    /// The key, e.g. `auth_token`; `None` when the table as a whole is wrong.
    pub key: Option<String>,
    /// Why, in words that never quote a secret.
    pub reason: String,
}

impl ProviderConfigError {
    /// `key`'s value is wrong.
    pub fn key(key: &str, reason: impl Into<String>) -> Self {
        ProviderConfigError {
            key: Some(key.to_owned()),
            reason: reason.into(),
        }
    }

    /// Something not tied to one key (TLS could not be set up, say).
    pub fn whole(reason: impl Into<String>) -> Self {
        ProviderConfigError {
            key: None,
            reason: reason.into(),
        }
    }
}

/// The provider types a program knows, by their `type = "…"` name.
#[derive(Clone, Default)]
pub struct ProviderRegistry {
    factories: BTreeMap<&'static str, ProviderFactory>,
}

impl ProviderRegistry {
    /// A registry that knows no provider type yet: register each one a
    /// program offers, the built-in sandbox included
    /// (`r.register("sandbox", SandboxProvider::from_config)`).
    pub fn new() -> Self {
        ProviderRegistry {
            factories: BTreeMap::new(),
        }
    }

    /// Makes `type = "{kind}"` build providers with `factory`.
    pub fn register(&mut self, kind: &'static str, factory: ProviderFactory) -> &mut Self {
        self.factories.insert(kind, factory);
        self
    }

    /// The known type names.
    pub fn kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.factories.keys().copied()
    }

    /// The factory for a type name.
    pub fn get(&self, kind: &str) -> Option<ProviderFactory> {
        self.factories.get(kind).copied()
    }
}

impl fmt::Debug for ProviderRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.factories.keys()).finish()
    }
}

/// Deserialises a provider's settings table. serde names the field it
/// could not read between backticks (`missing field `auth_token``), and
/// that is the key of the error.
pub fn provider_settings<T: serde::de::DeserializeOwned>(
    settings: serde_json::Value,
) -> Result<T, ProviderConfigError> {
    serde_json::from_value(settings).map_err(|e| {
        let reason = crate::text::redact_quoted(&e.to_string());
        let key = e
            .to_string()
            .split('`')
            .nth(1)
            .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
            .map(str::to_owned);
        ProviderConfigError { key, reason }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(body: &str) -> Result<Vec<(String, String)>, WebhookError> {
        let mut headers = BTreeMap::new();
        headers.insert(
            "content-type".to_owned(),
            "application/x-www-form-urlencoded; charset=UTF-8".to_owned(),
        );
        WebhookRequest {
            method: "POST".into(),
            hook: "message".into(),
            url: String::new(),
            headers,
            body: body.to_owned().into(),
        }
        .form()
    }

    /// Fields in order; a name given twice (even encoded differently) and
    /// more than MAX_FORM_FIELDS fields are 400.
    #[test]
    fn form_bodies_are_read_strictly() {
        assert_eq!(
            form("A=1&B=%2B2&C=").unwrap(),
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "+2".into()),
                ("C".into(), String::new())
            ]
        );
        for repeated in ["A=1&A=2", "Body=x&B%6Fdy=y"] {
            assert_eq!(form(repeated).unwrap_err().http_status(), 400, "{repeated}");
        }
        let many: Vec<String> = (0..=MAX_FORM_FIELDS).map(|i| format!("f{i}=x")).collect();
        let e = form(&many.join("&")).unwrap_err();
        assert!(e.to_string().contains("more than 200"), "{e}");
        assert!(form(&many[..MAX_FORM_FIELDS].join("&")).is_ok());
    }

    #[test]
    fn http_status_classification() {
        assert!(ProviderError::from_http_status(429, "x").is_temporary());
        assert!(ProviderError::from_http_status(500, "x").is_temporary());
        assert!(ProviderError::from_http_status(503, "x").is_temporary());
        assert!(!ProviderError::from_http_status(400, "x").is_temporary());
        assert!(!ProviderError::from_http_status(404, "x").is_temporary());
        assert!(!ProviderError::from_http_status(401, "x").is_temporary());
        assert!(ProviderError::new(ProviderErrorKind::Network, "x").is_temporary());
    }

    #[test]
    fn display_keeps_the_carrier_code() {
        let e =
            ProviderError::from_http_status(400, "Invalid 'To' Phone Number").with_code("21211");
        assert_eq!(
            e.to_string(),
            "carrier refused the message: error 21211: Invalid 'To' Phone Number"
        );
    }
}

/// A number as its carrier account holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberSetup {
    /// The carrier's id for what [`PstnProvider::point_number`] changes:
    /// the number itself (Twilio's `PN…`) or its messaging profile
    /// (Telnyx, where one profile serves several numbers).
    pub handle: String,
    /// What `handle` names, for people: `number PN…`, `messaging profile …`.
    pub handle_name: String,
    /// Where the carrier sends the number's inbound texts now, if anywhere.
    pub inbound_url: Option<String>,
    /// The HTTP method it calls that URL with, where the carrier lets it be
    /// chosen (LaML's `SmsMethod`); the gateway takes POST only.
    pub method: Option<String>,
    /// Why the number cannot be pointed by API, and what to do instead
    /// (a Telnyx number in no messaging profile).
    pub blocked: Option<String>,
}

impl NumberSetup {
    /// Whether the number's inbound texts already reach `url` by POST.
    pub fn points_at(&self, url: &str) -> bool {
        self.inbound_url.as_deref() == Some(url)
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case("POST"))
    }

    /// Where inbound texts go now, in words.
    pub fn now(&self) -> String {
        match (&self.inbound_url, &self.method) {
            (None, _) => "nowhere".into(),
            (Some(u), _) if u.is_empty() => "nowhere".into(),
            (Some(u), Some(m)) if !m.eq_ignore_ascii_case("POST") => format!("{u} by {m}"),
            (Some(u), _) => u.clone(),
        }
    }
}

/// The error for a carrier that offers no API for `what`.
pub(crate) fn unsupported(what: &str) -> ProviderError {
    ProviderError::new(
        ProviderErrorKind::Rejected,
        format!("this carrier offers no API for {what}"),
    )
}
