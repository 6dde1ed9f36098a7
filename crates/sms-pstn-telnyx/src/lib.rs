//! # sms-pstn-telnyx
//!
//! The Telnyx provider for sms-over-xmpp: `POST /v2/messages` with a Bearer
//! key, JSON webhooks dispatched on `data.event_type`, and Ed25519 webhook
//! signatures over `{telnyx-timestamp}|{raw body}`.
//!
//! ```toml
//! [providers.tx]
//! type = "telnyx"
//! api_key = "KEY…"
//! public_key = "base64 Ed25519 public key from the Telnyx portal"
//! messaging_profile_id = "…"          # optional
//! api_base = "https://api.telnyx.com"  # optional
//! ```

use async_trait::async_trait;
use base64::Engine;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde::Deserialize;
use sms_gateway_core::provider::{provider_settings, ProviderConfigError};
use sms_gateway_core::text::{BodyLimit, Limits};
use sms_gateway_core::{
    DeliveryStatus, InboundSms, Media, OutboundSms, PhoneNumber, ProviderContext, ProviderError,
    ProviderErrorKind, PstnProvider, Secret, StatusReport, WebhookError, WebhookEvent,
    WebhookReply, WebhookRequest,
};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Telnyx sends at most this many SMS segments per request.
pub const MAX_PARTS: usize = 10;
/// Telnyx allows this many media per message.
pub const MAX_MEDIA: usize = 10;
/// A webhook whose timestamp is further than this from now is refused.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// `[providers.NAME]` with `type = "telnyx"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelnyxConfig {
    /// Seconds one API request may take (default 30). A request that gets
    /// no answer in time is reported, not resent: it may have been taken.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// The API v2 key (`Authorization: Bearer`).
    pub api_key: Secret,
    /// The account's Ed25519 public key, base64 of 32 bytes.
    pub public_key: String,
    /// Optional messaging profile to send through.
    #[serde(default)]
    pub messaging_profile_id: Option<String>,
    /// API base URL; tests point it at a mock.
    #[serde(default = "default_api_base")]
    pub api_base: String,
}

fn default_timeout() -> u64 {
    30
}

fn default_api_base() -> String {
    "https://api.telnyx.com".into()
}

/// A Telnyx account.
pub struct TelnyxProvider {
    http: sms_gateway_core::http::Client,
    messages_url: sms_gateway_core::http::Uri,
    /// `Bearer <api_key>`, built once.
    authorization: sms_gateway_core::http::HeaderValue,
    public_key: VerifyingKey,
    messaging_profile_id: Option<String>,
    webhook_url: String,
}

impl std::fmt::Debug for TelnyxProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelnyxProvider")
            .field("messages_url", &self.messages_url)
            .finish_non_exhaustive()
    }
}

/// Parses a base64 Ed25519 public key.
pub(crate) fn parse_public_key(b64: &str) -> Result<VerifyingKey, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("`public_key`: not base64: {e}"))?;
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("`public_key`: {} bytes, an Ed25519 key has 32", b.len()))?;
    VerifyingKey::from_bytes(&arr).map_err(|e| format!("`public_key`: not an Ed25519 key: {e}"))
}

/// Checks a Telnyx webhook signature: Ed25519 over `{timestamp}|{body}`,
/// with `timestamp` (Unix seconds) within [`MAX_CLOCK_SKEW`] of `now`.
pub(crate) fn verify_signature(
    key: &VerifyingKey,
    timestamp: &str,
    body: &[u8],
    signature_b64: &str,
    now: SystemTime,
) -> Result<(), WebhookError> {
    let ts: u64 = timestamp
        .trim()
        .parse()
        .map_err(|_| WebhookError::Unauthorized("telnyx-timestamp is not a number".into()))?;
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    if now.abs_diff(ts) > MAX_CLOCK_SKEW.as_secs() {
        return Err(WebhookError::Unauthorized(format!(
            "telnyx-timestamp is {}s from now (at most {}s allowed)",
            now.abs_diff(ts),
            MAX_CLOCK_SKEW.as_secs()
        )));
    }
    let sig = base64::engine::general_purpose::STANDARD
        .decode(signature_b64.trim())
        .ok()
        .and_then(|b| Signature::from_slice(&b).ok())
        .ok_or_else(|| {
            WebhookError::Unauthorized("telnyx-signature-ed25519 is not a signature".into())
        })?;
    let mut signed = Vec::with_capacity(timestamp.len() + 1 + body.len());
    signed.extend_from_slice(timestamp.trim().as_bytes());
    signed.push(b'|');
    signed.extend_from_slice(body);
    key.verify(&signed, &sig)
        .map_err(|_| WebhookError::Unauthorized("telnyx-signature-ed25519 does not verify".into()))
}

#[derive(Deserialize)]
struct Envelope {
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    event_type: String,
    id: String,
    #[serde(default)]
    payload: serde_json::Value,
}

#[derive(Deserialize)]
struct MessagePayload {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    from: Option<Endpoint>,
    #[serde(default)]
    to: Vec<Endpoint>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    media: Vec<MediaItem>,
    #[serde(default)]
    errors: Vec<ApiError>,
}

#[derive(Deserialize)]
struct Endpoint {
    phone_number: String,
    #[serde(default)]
    status: Option<String>,
}

#[derive(Deserialize)]
struct MediaItem {
    url: String,
    #[serde(default)]
    content_type: Option<String>,
}

/// What is read of the send answer: the message's id, or the errors.
#[derive(Default, Deserialize)]
struct SendAnswer {
    #[serde(default)]
    data: Option<SentMessage>,
    #[serde(default)]
    errors: Vec<ApiError>,
}

#[derive(Deserialize)]
struct SentMessage {
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    detail: Option<String>,
}

fn bad(msg: impl Into<String>) -> WebhookError {
    WebhookError::BadRequest(msg.into())
}

fn number(field: &str, v: &str) -> Result<PhoneNumber, WebhookError> {
    PhoneNumber::parse(v, None).map_err(|e| bad(format!("`{field}`: {e}")))
}

fn describe(errors: &[ApiError]) -> Option<String> {
    let e = errors.first()?;
    let code = e.code.as_ref().map(|c| {
        c.as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| c.to_string())
    });
    let text = e
        .detail
        .clone()
        .or_else(|| e.title.clone())
        .unwrap_or_default();
    Some(match code {
        Some(c) => format!("error {c}: {text}"),
        None => text,
    })
}

/// Reads a verified Telnyx webhook body into events.
pub(crate) fn parse_event(body: &[u8]) -> Result<Vec<WebhookEvent>, WebhookError> {
    let env: Envelope = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "not a Telnyx event: {}",
            sms_gateway_core::text::redact_quoted(&e.to_string())
        ))
    })?;
    let d = env.data;
    match d.event_type.as_str() {
        "message.received" => {
            let p: MessagePayload = serde_json::from_value(d.payload)
                .map_err(|e| bad(format!("`data.payload`: {e}")))?;
            let from = p.from.ok_or_else(|| bad("missing `data.payload.from`"))?;
            let to =
                p.to.first()
                    .ok_or_else(|| bad("missing `data.payload.to`"))?;
            Ok(vec![WebhookEvent::Inbound(InboundSms {
                // The event id is what repeats when Telnyx retries.
                id: d.id,
                from: number("data.payload.from.phone_number", &from.phone_number)?,
                to: number("data.payload.to[0].phone_number", &to.phone_number)?,
                body: p.text.unwrap_or_default(),
                media: p
                    .media
                    .into_iter()
                    .map(|m| Media::new(m.url, m.content_type))
                    .collect(),
            })])
        }
        "message.sent" | "message.finalized" => {
            let p: MessagePayload = serde_json::from_value(d.payload)
                .map_err(|e| bad(format!("`data.payload`: {e}")))?;
            let id = p.id.ok_or_else(|| bad("missing `data.payload.id`"))?;
            let status =
                p.to.first()
                    .and_then(|t| t.status.clone())
                    .unwrap_or_default();
            let status = match status.as_str() {
                "delivered" => DeliveryStatus::Delivered,
                "delivery_failed" | "sending_failed" | "expired" => {
                    DeliveryStatus::Failed(match describe(&p.errors) {
                        Some(why) => format!("{status}, {why}"),
                        None => status.clone(),
                    })
                }
                _ => DeliveryStatus::InProgress,
            };
            Ok(vec![WebhookEvent::Status(StatusReport {
                message_id: id,
                status,
            })])
        }
        // Acknowledged and ignored.
        _ => Ok(vec![]),
    }
}

impl TelnyxProvider {
    /// A provider for `config`, whose webhooks live under `ctx`.
    pub fn new(ctx: &ProviderContext, config: TelnyxConfig) -> Result<Self, ProviderConfigError> {
        if config.api_key.is_empty() {
            return Err(ProviderConfigError::key(
                "api_key",
                "`api_key` must not be empty",
            ));
        }
        let public_key = parse_public_key(&config.public_key)
            .map_err(|r| ProviderConfigError::key("public_key", r))?;
        let base = sms_gateway_core::http::api_base(&config.api_base)
            .map_err(|r| ProviderConfigError::key("api_base", r))?;
        let http = sms_gateway_core::http::Client::new(Duration::from_secs(config.timeout_secs))
            .map_err(ProviderConfigError::whole)?;
        Ok(TelnyxProvider {
            http,
            messages_url: sms_gateway_core::http::endpoint(&format!("{base}/v2/messages"))
                .map_err(|r| ProviderConfigError::key("api_base", r))?,
            authorization: sms_gateway_core::http::authorization(&format!(
                "Bearer {}",
                config.api_key.expose()
            ))
            .map_err(|r| ProviderConfigError::key("api_key", r))?,
            public_key,
            messaging_profile_id: config.messaging_profile_id,
            webhook_url: ctx.hook_url("status"),
        })
    }

    /// The [`ProviderFactory`](sms_gateway_core::ProviderFactory) for `type = "telnyx"`.
    pub fn from_config(
        ctx: &ProviderContext,
        settings: serde_json::Value,
    ) -> Result<Arc<dyn PstnProvider>, ProviderConfigError> {
        let config: TelnyxConfig = provider_settings(settings)?;
        Ok(Arc::new(TelnyxProvider::new(ctx, config)?))
    }
}

#[async_trait]
impl PstnProvider for TelnyxProvider {
    async fn send(&self, sms: &OutboundSms) -> Result<String, ProviderError> {
        if sms.media.len() > MAX_MEDIA {
            return Err(ProviderError::new(
                ProviderErrorKind::Rejected,
                format!("Telnyx takes at most {MAX_MEDIA} media per message"),
            ));
        }
        let mut body = serde_json::json!({
            "from": sms.from.as_str(),
            "to": sms.to.as_str(),
            "webhook_url": self.webhook_url,
        });
        if !sms.body.is_empty() {
            body["text"] = sms.body.clone().into();
        }
        if !sms.media.is_empty() {
            body["media_urls"] = sms.media.clone().into();
        }
        if let Some(p) = &self.messaging_profile_id {
            body["messaging_profile_id"] = p.clone().into();
        }
        let body = serde_json::to_vec(&body).map_err(|e| {
            ProviderError::new(
                ProviderErrorKind::Rejected,
                format!("Telnyx: cannot encode the request: {e}"),
            )
        })?;
        let answer = self
            .http
            .post(
                "Telnyx",
                &self.messages_url,
                &self.authorization,
                "application/json",
                body,
            )
            .await?;
        let status = answer.status;
        let retry_after = sms_gateway_core::http::retry_after(&answer.headers);
        let json: SendAnswer = serde_json::from_slice(&answer.body).unwrap_or_default();
        if status.is_success() {
            return json
                .data
                .and_then(|d| d.id)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    ProviderError::new(
                        ProviderErrorKind::CarrierError,
                        format!("Telnyx answered {status} without data.id"),
                    )
                });
        }
        let first = json.errors.first();
        // Telnyx's 10011 is its rate limit.
        Err(sms_gateway_core::http::carrier_error(
            status.as_u16(),
            first.and_then(|e| e.detail.clone().or_else(|| e.title.clone())),
            first.and_then(|e| e.code.as_ref()),
            "10011",
            retry_after,
        ))
    }

    fn limits(&self) -> Limits {
        Limits {
            body: BodyLimit::Segments(MAX_PARTS),
            max_media: MAX_MEDIA,
        }
    }

    fn webhook(&self, req: &WebhookRequest) -> Result<WebhookReply, WebhookError> {
        req.expect_post_to(&["message", "status"])?;
        let sig = req.header("telnyx-signature-ed25519").ok_or_else(|| {
            WebhookError::Unauthorized("no telnyx-signature-ed25519 header".into())
        })?;
        let ts = req
            .header("telnyx-timestamp")
            .ok_or_else(|| WebhookError::Unauthorized("no telnyx-timestamp header".into()))?;
        verify_signature(&self.public_key, ts, &req.body, sig, SystemTime::now())?;
        Ok(WebhookReply::ok(parse_event(&req.body)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with PyNaCl: `SigningKey(bytes(range(32)))`, signing
    // `b"1795773600|" + BODY`; the public key is base64 of its verify key.
    const PUBLIC_KEY: &str = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=";
    const TS: &str = "1795773600";
    const SIG: &str =
        "29yqTu614i5OZzTYdvUEZqZeyx9L62uCB6VyTG/SiYwdLFF4jK3rWPZ0siswb3gDBFC878N+23dT3T2nR4d7CA==";
    const BODY: &str = r#"{"data":{"event_type":"message.received","id":"b301ed3f-1490-491f-995f-6e64e69674d4","occurred_at":"2026-11-27T10:00:00.000+00:00","payload":{"id":"84cca175-9755-4859-b67f-4730d7f58aa3","from":{"phone_number":"+15557654321"},"to":[{"phone_number":"+15550001111","status":"webhook_delivered"}],"text":"Hello from Telnyx","media":[{"url":"https://media.telnyx.example/1.jpg","content_type":"image/jpeg","size":1234}]},"record_type":"event"},"meta":{"attempt":1,"delivered_to":"https://sms.example.com/hooks/tx/message"}}"#;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn pynacl_vector_verifies() {
        let key = parse_public_key(PUBLIC_KEY).unwrap();
        verify_signature(&key, TS, BODY.as_bytes(), SIG, at(1795773600)).unwrap();
        verify_signature(&key, TS, BODY.as_bytes(), SIG, at(1795773600 + 300)).unwrap();
    }

    #[test]
    fn tampering_staleness_and_garbage_are_refused() {
        let key = parse_public_key(PUBLIC_KEY).unwrap();
        let now = at(1795773600);
        let tampered = BODY.replace("Hello", "Hullo");
        assert!(verify_signature(&key, TS, tampered.as_bytes(), SIG, now).is_err());
        assert!(verify_signature(&key, "1795773601", BODY.as_bytes(), SIG, now).is_err());
        assert!(verify_signature(&key, TS, BODY.as_bytes(), SIG, at(1795773600 + 301)).is_err());
        assert!(verify_signature(&key, TS, BODY.as_bytes(), SIG, at(1795773600 - 301)).is_err());
        assert!(verify_signature(&key, TS, BODY.as_bytes(), "not base64!", now).is_err());
        assert!(verify_signature(&key, "soon", BODY.as_bytes(), SIG, now).is_err());
    }

    #[test]
    fn received_event_parses() {
        let events = parse_event(BODY.as_bytes()).unwrap();
        let [WebhookEvent::Inbound(sms)] = &events[..] else {
            panic!()
        };
        assert_eq!(sms.id, "b301ed3f-1490-491f-995f-6e64e69674d4");
        assert_eq!(sms.from.as_str(), "+15557654321");
        assert_eq!(sms.to.as_str(), "+15550001111");
        assert_eq!(sms.body, "Hello from Telnyx");
        assert_eq!(sms.media[0].content_type.as_deref(), Some("image/jpeg"));
    }

    #[test]
    fn finalized_events_map_to_statuses() {
        let ev = |status: &str| {
            format!(
                r#"{{"data":{{"event_type":"message.finalized","id":"e1","payload":{{"id":"m1","to":[{{"phone_number":"+15557654321","status":"{status}"}}],"errors":[{{"code":"40300","title":"Blocked as spam","detail":"Recipient opted out"}}]}}}}}}"#
            )
        };
        let status = |s: &str| match &parse_event(ev(s).as_bytes()).unwrap()[..] {
            [WebhookEvent::Status(r)] => r.status.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(status("delivered"), DeliveryStatus::Delivered);
        assert_eq!(status("sent"), DeliveryStatus::InProgress);
        assert_eq!(
            status("delivery_failed"),
            DeliveryStatus::Failed("delivery_failed, error 40300: Recipient opted out".into())
        );
        assert!(parse_event(
            br#"{"data":{"event_type":"number_order.complete","id":"x","payload":{}}}"#
        )
        .unwrap()
        .is_empty());
        assert!(parse_event(b"{").is_err());
        assert!(parse_event(
            br#"{"data":{"event_type":"message.received","id":"x","payload":{"to":[]}}}"#
        )
        .is_err());
    }

    #[test]
    fn bad_public_keys_are_config_errors() {
        assert!(parse_public_key("!!").unwrap_err().contains("public_key"));
        assert!(parse_public_key("AAAA").unwrap_err().contains("32"));
    }
}
