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

mod setup;

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
/// A group MMS goes to at most this many numbers besides the sender.
pub const MAX_GROUP: usize = 8;
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
    group_url: sms_gateway_core::http::Uri,
    /// `Bearer <api_key>`, built once.
    authorization: sms_gateway_core::http::HeaderValue,
    public_key: VerifyingKey,
    messaging_profile_id: Option<String>,
    webhook_url: String,
    /// `https://api.telnyx.com`, for the set-up calls ([`setup`]).
    api_base: String,
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
    /// Ties the records of one group MMS together.
    #[serde(default)]
    group_message_id: Option<String>,
    #[serde(default)]
    from: Option<Endpoint>,
    #[serde(default)]
    to: Vec<Endpoint>,
    /// A group MMS's other participants.
    #[serde(default)]
    cc: Vec<Endpoint>,
    #[serde(default)]
    subject: Option<String>,
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
    #[serde(default)]
    group_message_id: Option<String>,
}

/// The most numbers read from one event's `to` and `cc`: a group has at
/// most nine; this bounds what a forged event makes us parse.
const MAX_ENDPOINTS: usize = 32;

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

/// The sender of an inbound text: a number, or an alphanumeric sender id.
fn sender(field: &str, v: &str) -> Result<PhoneNumber, WebhookError> {
    PhoneNumber::sender(v).map_err(|e| bad(format!("`{field}`: {e}")))
}

/// The first error's code, whether Telnyx wrote it as a string or a number.
fn error_code(errors: &[ApiError]) -> Option<String> {
    let c = errors.first()?.code.as_ref()?;
    Some(
        c.as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| c.to_string()),
    )
}

fn describe(errors: &[ApiError]) -> Option<String> {
    let e = errors.first()?;
    let code = error_code(errors);
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
            if p.to.len() + p.cc.len() > MAX_ENDPOINTS {
                return Err(bad(format!(
                    "more than {MAX_ENDPOINTS} numbers in `data.payload.to` and `cc`"
                )));
            }
            let to = number("data.payload.to[0].phone_number", &to.phone_number)?;
            // A group MMS: the other participants are in `cc` (and any
            // `to` besides the first). The Gateway leaves the user's own
            // number out, whichever list it is in.
            let mut others = Vec::new();
            for (i, e) in p.to.iter().enumerate().skip(1) {
                others.push(number(
                    &format!("data.payload.to[{i}].phone_number"),
                    &e.phone_number,
                )?);
            }
            for (i, e) in p.cc.iter().enumerate() {
                others.push(number(
                    &format!("data.payload.cc[{i}].phone_number"),
                    &e.phone_number,
                )?);
            }
            let mut sms = InboundSms::new(
                // The event id is what repeats when Telnyx retries.
                d.id,
                sender("data.payload.from.phone_number", &from.phone_number)?,
                to,
                p.text.unwrap_or_default(),
                p.media
                    .into_iter()
                    .map(|m| Media::new(m.url, m.content_type))
                    .collect(),
            );
            sms.others = others;
            sms.subject = p.subject.filter(|s| !s.is_empty());
            Ok(vec![WebhookEvent::Inbound(sms)])
        }
        "message.sent" | "message.finalized" => {
            let p: MessagePayload = serde_json::from_value(d.payload)
                .map_err(|e| bad(format!("`data.payload`: {e}")))?;
            // A group MMS's records share its group id, which is what
            // `send` returned for it.
            let group = !p.cc.is_empty() || p.to.len() > 1 || p.group_message_id.is_some();
            let id = p
                .group_message_id
                .filter(|g| !g.is_empty())
                .or(p.id)
                .ok_or_else(|| bad("missing `data.payload.id`"))?;
            let why = describe(&p.errors);
            let code = error_code(&p.errors);
            let mut reports = Vec::new();
            for t in p.to.iter().chain(&p.cc).take(MAX_ENDPOINTS) {
                let status = t.status.clone().unwrap_or_default();
                let status = match status.as_str() {
                    "delivered" => DeliveryStatus::Delivered,
                    "delivery_failed" | "sending_failed" | "expired" => {
                        let mut reason = match &why {
                            Some(why) => format!("{status}, {why}"),
                            None => status.clone(),
                        };
                        if group {
                            // Which participant it did not reach.
                            reason = format!("to {}: {reason}", t.phone_number);
                        }
                        DeliveryStatus::Failed(sms_gateway_core::Failure::new(code.clone(), reason))
                    }
                    _ => DeliveryStatus::InProgress,
                };
                reports.push(status);
            }
            let report = |status| {
                WebhookEvent::Status(StatusReport {
                    message_id: id.clone(),
                    status,
                })
            };
            if !group {
                let status = reports
                    .into_iter()
                    .next()
                    .unwrap_or(DeliveryStatus::InProgress);
                return Ok(vec![report(status)]);
            }
            // A group MMS: each recipient it did not reach is a report of
            // its own (naming whom); else one for delivery to any.
            let failed: Vec<WebhookEvent> = reports
                .iter()
                .filter(|s| matches!(s, DeliveryStatus::Failed(_)))
                .cloned()
                .map(report)
                .collect();
            if !failed.is_empty() {
                return Ok(failed);
            }
            let status = if reports.contains(&DeliveryStatus::Delivered) {
                DeliveryStatus::Delivered
            } else {
                DeliveryStatus::InProgress
            };
            Ok(vec![report(status)])
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
            group_url: sms_gateway_core::http::endpoint(&format!("{base}/v2/messages/group_mms"))
                .map_err(|r| ProviderConfigError::key("api_base", r))?,
            authorization: sms_gateway_core::http::authorization(&format!(
                "Bearer {}",
                config.api_key.expose()
            ))
            .map_err(|r| ProviderConfigError::key("api_key", r))?,
            public_key,
            messaging_profile_id: config.messaging_profile_id,
            webhook_url: ctx.hook_url("status"),
            api_base: base,
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
        let group = !sms.cc.is_empty();
        if group && 1 + sms.cc.len() > MAX_GROUP {
            return Err(ProviderError::new(
                ProviderErrorKind::Rejected,
                format!("a Telnyx group MMS goes to at most {MAX_GROUP} numbers"),
            ));
        }
        let mut body = if group {
            // `POST /v2/messages/group_mms`: every participant in `to`.
            let to: Vec<&str> = std::iter::once(&sms.to)
                .chain(&sms.cc)
                .map(PhoneNumber::as_str)
                .collect();
            serde_json::json!({
                "from": sms.from.as_str(),
                "to": to,
                "webhook_url": self.webhook_url,
            })
        } else {
            serde_json::json!({
                "from": sms.from.as_str(),
                "to": sms.to.as_str(),
                "webhook_url": self.webhook_url,
            })
        };
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
                if group {
                    &self.group_url
                } else {
                    &self.messages_url
                },
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
                .and_then(|d| d.group_message_id.filter(|g| !g.is_empty()).or(d.id))
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
            max_group: MAX_GROUP,
        }
    }

    async fn whoami(&self) -> Result<String, ProviderError> {
        self.setup_whoami().await
    }

    async fn find_number(
        &self,
        number: &PhoneNumber,
    ) -> Result<Option<sms_gateway_core::provider::NumberSetup>, ProviderError> {
        self.setup_find(number).await
    }

    async fn point_number(
        &self,
        number: &sms_gateway_core::provider::NumberSetup,
        url: &str,
    ) -> Result<(), ProviderError> {
        self.setup_point(number, url).await
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
            DeliveryStatus::Failed(sms_gateway_core::Failure::new(
                Some("40300".into()),
                "delivery_failed, error 40300: Recipient opted out"
            ))
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

    // The shape of Telnyx's documented group-messaging records: an inbound
    // `message.received` (the API reference's InboundMessageEvent with
    // `cc` filled in as the group messaging guide describes it: "inbound
    // group messages via webhooks with a `cc` field listing all
    // participants") and the `group_mms` answer from the guide, numbers
    // changed to 555 ones.
    const GROUP_RECEIVED: &str = r#"{"data":{"event_type":"message.received","id":"bf6307bd-884d-4c1f-b6ea-c62b8c495d3c","occurred_at":"2026-11-27T10:00:00.000+00:00","payload":{"cc":[{"carrier":"T-MOBILE USA, INC.","line_type":"Wireless","phone_number":"+15551112222","status":"delivered"},{"carrier":"TELNYX LLC","line_type":"VoIP","phone_number":"+15550001111","status":"delivered"}],"direction":"inbound","encoding":"GSM-7","errors":[],"from":{"carrier":"T-MOBILE USA, INC.","line_type":"Wireless","phone_number":"+15553334444"},"group_message_id":"403188fd-58c5-4557-a8de-1700a358d768","id":"7ee4241c-f127-47e5-9c34-3aac291f8058","media":[],"parts":1,"received_at":"2026-11-27T10:00:00.000Z","record_type":"message","subject":"Dinner","text":"Hello, group!","to":[{"carrier":"TELNYX LLC","line_type":"VoIP","phone_number":"+15550001111","status":"webhook_delivered"}],"type":"MMS"},"record_type":"event"},"meta":{"attempt":1,"delivered_to":"https://sms.example.com/hooks/tx/message"}}"#;

    #[test]
    fn a_group_text_lists_the_other_participants() {
        let events = parse_event(GROUP_RECEIVED.as_bytes()).unwrap();
        let [WebhookEvent::Inbound(sms)] = &events[..] else {
            panic!("{events:?}")
        };
        assert_eq!(sms.to.as_str(), "+15550001111");
        let others: Vec<&str> = sms.others.iter().map(|n| n.as_str()).collect();
        assert_eq!(others, ["+15551112222", "+15550001111"]);
        assert_eq!(sms.subject.as_deref(), Some("Dinner"));
        // The Gateway's view: the user's own number left out.
        let group = sms.group(&sms.to).unwrap();
        let group: Vec<&str> = group.iter().map(|n| n.as_str()).collect();
        assert_eq!(group, ["+15551112222", "+15553334444"]);
        // A one-to-one text has none.
        let [WebhookEvent::Inbound(one)] = &parse_event(BODY.as_bytes()).unwrap()[..] else {
            panic!()
        };
        assert!(one.others.is_empty() && one.group(&one.to).is_none());
        // A forged event with hundreds of numbers is refused.
        let many: Vec<String> = (0..40)
            .map(|i| format!(r#"{{"phone_number":"+1555000{i:04}"}}"#))
            .collect();
        let forged = GROUP_RECEIVED.replace(r#""cc":["#, &format!(r#""cc":[{},"#, many.join(",")));
        assert!(parse_event(forged.as_bytes()).is_err());
    }

    #[test]
    fn a_group_status_names_the_participant_it_did_not_reach() {
        let ev = r#"{"data":{"event_type":"message.finalized","id":"e2","payload":{"id":"84cca175-0000-4000-8000-000000000001","group_message_id":"403188fd-58c5-4557-a8de-1700a358d768","to":[{"phone_number":"+15553334444","status":"delivery_failed"}],"cc":[{"phone_number":"+15551112222","status":"delivered"}],"errors":[{"code":"40300","title":"Blocked","detail":"Recipient opted out"}]}}}"#;
        let [WebhookEvent::Status(r)] = &parse_event(ev.as_bytes()).unwrap()[..] else {
            panic!()
        };
        // Matched by the group id, which `send` returned for it.
        assert_eq!(r.message_id, "403188fd-58c5-4557-a8de-1700a358d768");
        assert_eq!(
            r.status,
            DeliveryStatus::Failed(sms_gateway_core::Failure::new(
                Some("40300".into()),
                "to +15553334444: delivery_failed, error 40300: Recipient opted out"
            ))
        );
        let ok = ev.replace("delivery_failed", "delivered");
        let [WebhookEvent::Status(r)] = &parse_event(ok.as_bytes()).unwrap()[..] else {
            panic!()
        };
        assert_eq!(r.status, DeliveryStatus::Delivered);
    }

    #[test]
    fn bad_public_keys_are_config_errors() {
        assert!(parse_public_key("!!").unwrap_err().contains("public_key"));
        assert!(parse_public_key("AAAA").unwrap_err().contains("32"));
    }
}
