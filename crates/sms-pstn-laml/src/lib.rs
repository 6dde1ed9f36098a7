//! # sms-pstn-laml
//!
//! The LaML messaging API Twilio and SignalWire share: sending through
//! `…/2010-04-01/Accounts/{account}/Messages.json` with form fields, and
//! reading the form-encoded inbound and status webhooks. The two providers
//! differ only in URLs, credentials and signature headers.

pub mod signature;
#[cfg(feature = "testkit")]
pub mod testkit;

use sms_gateway_core::text::{BodyLimit, Limits};
use sms_gateway_core::{
    DeliveryStatus, InboundSms, Media, OutboundSms, PhoneNumber, ProviderError, ProviderErrorKind,
    Secret, StatusReport, WebhookError, WebhookEvent, WebhookReply, WebhookRequest,
};
use std::time::Duration;

/// The empty TwiML answer that satisfies Twilio and SignalWire alike.
pub const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>";

/// Characters per API request, for Twilio and SignalWire alike.
pub const MAX_CHARS: usize = 1600;

/// How long one API request may take, by default (`timeout_secs`).
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;

/// A client for one LaML account's Messages resource.
#[derive(Clone)]
pub struct LamlClient {
    http: sms_gateway_core::http::Client,
    messages_url: sms_gateway_core::http::Uri,
    username: String,
    /// `Basic base64(username:password)`, built once.
    authorization: sms_gateway_core::http::HeaderValue,
    status_callback: String,
    max_media: usize,
    carrier: &'static str,
}

impl std::fmt::Debug for LamlClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LamlClient")
            .field("carrier", &self.carrier)
            .field("messages_url", &self.messages_url)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

pub use sms_gateway_core::http::api_base;

impl LamlClient {
    /// A client posting to `messages_url` with basic auth
    /// `username:password`, asking for status reports at `status_callback`.
    pub fn new(
        carrier: &'static str,
        messages_url: String,
        username: String,
        password: Secret,
        status_callback: String,
        max_media: usize,
        timeout: Duration,
    ) -> Result<Self, String> {
        use base64::Engine;
        let credentials = base64::engine::general_purpose::STANDARD
            .encode(format!("{username}:{}", password.expose()));
        Ok(LamlClient {
            http: sms_gateway_core::http::Client::new(timeout)?,
            messages_url: sms_gateway_core::http::endpoint(&messages_url)?,
            authorization: sms_gateway_core::http::authorization(&format!("Basic {credentials}"))?,
            username,
            status_callback,
            max_media,
            carrier,
        })
    }

    /// What one request may carry: 1600 characters, and the carrier's media count.
    pub fn limits(&self) -> Limits {
        Limits {
            body: BodyLimit::Characters(MAX_CHARS),
            max_media: self.max_media,
            // The Messages API takes one `To`; group MMS is only in
            // Twilio's Conversations API, which this provider does not use.
            max_group: 0,
        }
    }

    /// The account's basic auth, for a media URL on the API's own origin
    /// only (never for a CDN a redirect names).
    pub fn media_authorization(
        &self,
        url: &sms_gateway_core::http::Uri,
    ) -> Option<sms_gateway_core::http::HeaderValue> {
        sms_gateway_core::media::same_origin(url, &self.messages_url)
            .then(|| self.authorization.clone())
    }

    /// Deletes an inbound media item: `DELETE {media URL}.json`, for a URL
    /// on the API's origin naming a Media resource (`…/Media/ME…`).
    /// `Ok(false)` for any other URL.
    pub async fn delete_media(
        &self,
        media: &sms_gateway_core::Media,
    ) -> Result<bool, ProviderError> {
        let Ok(url) = sms_gateway_core::http::endpoint(&media.url) else {
            return Ok(false);
        };
        let is_media = url
            .path()
            .rsplit_once("/Media/")
            .is_some_and(|(_, sid)| sid.starts_with("ME") && !sid.contains('/'));
        if !is_media || !sms_gateway_core::media::same_origin(&url, &self.messages_url) {
            return Ok(false);
        }
        let json = sms_gateway_core::http::endpoint(&format!(
            "{}.json",
            media.url.split('?').next().unwrap_or_default()
        ))
        .map_err(|e| ProviderError::new(ProviderErrorKind::Rejected, e))?;
        let answer = self
            .http
            .delete(self.carrier, &json, &self.authorization)
            .await?;
        match answer.status.as_u16() {
            200..=299 | 404 => Ok(true),
            s => Err(ProviderError::from_http_status(
                s,
                format!(
                    "{} answered HTTP {s} to deleting a media item",
                    self.carrier
                ),
            )),
        }
    }

    /// `…/Accounts/{account}`: the account resource, without `.json`.
    fn account_url(&self) -> String {
        let messages = self.messages_url.to_string();
        messages
            .strip_suffix("/Messages.json")
            .unwrap_or(&messages)
            .to_owned()
    }

    /// One set-up call (`GET` or a form `POST`) to `url`: the answer's
    /// JSON, or the carrier's error.
    async fn setup_call<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        form: Option<String>,
    ) -> Result<T, ProviderError> {
        let uri = sms_gateway_core::http::endpoint(url)
            .map_err(|e| ProviderError::new(ProviderErrorKind::Rejected, e))?;
        let (method, body) = match form {
            Some(f) => (
                sms_gateway_core::http::Method::POST,
                Some(("application/x-www-form-urlencoded", f.into())),
            ),
            None => (sms_gateway_core::http::Method::GET, None),
        };
        let answer = self
            .http
            .call(self.carrier, method, &uri, &self.authorization, body)
            .await?;
        if !answer.status.is_success() {
            let json: LamlAnswer = serde_json::from_slice(&answer.body).unwrap_or_default();
            return Err(sms_gateway_core::http::carrier_error(
                answer.status.as_u16(),
                json.message,
                json.code.as_ref(),
                "20429",
                sms_gateway_core::http::retry_after(&answer.headers),
            ));
        }
        serde_json::from_slice(&answer.body).map_err(|e| {
            ProviderError::new(
                ProviderErrorKind::CarrierError,
                format!(
                    "{} answered {} with JSON we cannot read: {e}",
                    self.carrier, answer.status
                ),
            )
        })
    }

    /// The Account resource: its name, sid and status. A suspended or
    /// closed account is an error.
    pub async fn whoami(&self) -> Result<String, ProviderError> {
        let account: LamlAccount = self
            .setup_call(&format!("{}.json", self.account_url()), None)
            .await?;
        let who = format!(
            "{} ({})",
            account.friendly_name.as_deref().unwrap_or("unnamed"),
            account.sid.as_deref().unwrap_or(&self.username)
        );
        match account.status.as_deref() {
            None | Some("active") => Ok(who),
            Some(status) => Err(ProviderError::new(
                ProviderErrorKind::Rejected,
                format!("the account {who} is {status}"),
            )),
        }
    }

    /// The IncomingPhoneNumber that is `number`, if the account has it. The
    /// `PhoneNumber` filter also matches partial numbers, so the answer is
    /// searched for the exact one.
    pub async fn find_number(
        &self,
        number: &PhoneNumber,
    ) -> Result<Option<sms_gateway_core::provider::NumberSetup>, ProviderError> {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("PhoneNumber", number.as_str())
            .finish();
        let list: LamlNumbers = self
            .setup_call(
                &format!("{}/IncomingPhoneNumbers.json?{query}", self.account_url()),
                None,
            )
            .await?;
        Ok(list
            .incoming_phone_numbers
            .into_iter()
            .find(|n| n.phone_number.as_deref() == Some(number.as_str()))
            .map(|n| sms_gateway_core::provider::NumberSetup {
                handle_name: format!("number {}", n.sid),
                handle: n.sid,
                inbound_url: n.sms_url,
                method: n.sms_method,
                blocked: None,
            }))
    }

    /// Sets the number's `SmsUrl` to `url` and `SmsMethod` to POST.
    pub async fn point_number(
        &self,
        number: &sms_gateway_core::provider::NumberSetup,
        url: &str,
    ) -> Result<(), ProviderError> {
        if !number.handle.starts_with("PN")
            || !number.handle.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(ProviderError::new(
                ProviderErrorKind::Rejected,
                format!("`{}` is not an IncomingPhoneNumber sid", number.handle),
            ));
        }
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("SmsUrl", url)
            .append_pair("SmsMethod", "POST")
            .finish();
        let updated: LamlNumber = self
            .setup_call(
                &format!(
                    "{}/IncomingPhoneNumbers/{}.json",
                    self.account_url(),
                    number.handle
                ),
                Some(form),
            )
            .await?;
        if updated.sms_url.as_deref() != Some(url) {
            return Err(ProviderError::new(
                ProviderErrorKind::CarrierError,
                format!(
                    "{} took the change but answered with SmsUrl {:?}",
                    self.carrier,
                    updated.sms_url.unwrap_or_default()
                ),
            ));
        }
        Ok(())
    }

    /// Sends one text; one API request.
    pub async fn send(&self, sms: &OutboundSms) -> Result<String, ProviderError> {
        if !sms.cc.is_empty() {
            return Err(ProviderError::new(
                ProviderErrorKind::Rejected,
                format!("{}'s Messages API has no group texts", self.carrier),
            ));
        }
        if sms.media.len() > self.max_media {
            return Err(ProviderError::new(
                ProviderErrorKind::Rejected,
                format!(
                    "{} takes at most {} media per message",
                    self.carrier, self.max_media
                ),
            ));
        }
        let mut form: Vec<(&str, &str)> = vec![
            ("To", sms.to.as_str()),
            ("From", sms.from.as_str()),
            ("StatusCallback", &self.status_callback),
        ];
        if !sms.body.is_empty() {
            form.push(("Body", &sms.body));
        }
        for url in &sms.media {
            form.push(("MediaUrl", url));
        }
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let answer = self
            .http
            .post(
                self.carrier,
                &self.messages_url,
                &self.authorization,
                "application/x-www-form-urlencoded",
                body,
            )
            .await?;
        let status = answer.status;
        let retry_after = sms_gateway_core::http::retry_after(&answer.headers);
        // Only the fields read are kept: Twilio's answer has some thirty.
        let json: LamlAnswer = serde_json::from_slice(&answer.body).unwrap_or_default();
        if status.is_success() {
            return match json.sid {
                Some(sid) if !sid.is_empty() => Ok(sid),
                _ => Err(ProviderError::new(
                    ProviderErrorKind::CarrierError,
                    format!("{} answered {status} without a message sid", self.carrier),
                )),
            };
        }
        // Twilio's 20429 is "too many requests" whatever the HTTP status.
        Err(sms_gateway_core::http::carrier_error(
            status.as_u16(),
            json.message,
            json.code.as_ref(),
            "20429",
            retry_after,
        ))
    }
}

/// What is read of the Messages resource's answer (a message, or an error).
#[derive(Default, serde::Deserialize)]
struct LamlAnswer {
    #[serde(default)]
    sid: Option<String>,
    #[serde(default)]
    message: Option<String>,
    /// A number from Twilio, which SignalWire may send as a string.
    #[serde(default)]
    code: Option<serde_json::Value>,
}

/// What is read of the Account resource.
#[derive(serde::Deserialize)]
struct LamlAccount {
    #[serde(default)]
    sid: Option<String>,
    #[serde(default)]
    friendly_name: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

/// What is read of an IncomingPhoneNumbers page.
#[derive(serde::Deserialize)]
struct LamlNumbers {
    #[serde(default)]
    incoming_phone_numbers: Vec<LamlNumber>,
}

/// What is read of one IncomingPhoneNumber.
#[derive(serde::Deserialize)]
struct LamlNumber {
    sid: String,
    #[serde(default)]
    phone_number: Option<String>,
    #[serde(default)]
    sms_url: Option<String>,
    #[serde(default)]
    sms_method: Option<String>,
}

fn field<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn required<'a>(params: &'a [(String, String)], name: &str) -> Result<&'a str, WebhookError> {
    field(params, name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| WebhookError::BadRequest(format!("missing `{name}`")))
}

fn number(params: &[(String, String)], name: &str) -> Result<PhoneNumber, WebhookError> {
    let v = required(params, name)?;
    PhoneNumber::parse(v, None).map_err(|e| WebhookError::BadRequest(format!("`{name}`: {e}")))
}

/// The sender of an inbound text: a number, or an alphanumeric sender id.
fn sender(params: &[(String, String)], name: &str) -> Result<PhoneNumber, WebhookError> {
    let v = required(params, name)?;
    PhoneNumber::sender(v).map_err(|e| WebhookError::BadRequest(format!("`{name}`: {e}")))
}

/// Twilio's words for the error codes a failed delivery most often carries.
fn error_description(code: &str) -> Option<&'static str> {
    Some(match code {
        "30001" => "queue overflow",
        "30002" => "account suspended",
        "30003" => "unreachable destination handset",
        "30004" => "message blocked",
        "30005" => "unknown destination handset",
        "30006" => "landline or unreachable carrier",
        "30007" => "filtered by the carrier",
        "30008" => "unknown error",
        "30034" => "sender not registered (A2P 10DLC)",
        "21610" => "the recipient has opted out (STOP)",
        _ => return None,
    })
}

/// Reads a form-encoded LaML webhook whose signature has been checked:
/// `message` (inbound text/MMS) or `status` (delivery report).
pub fn parse_webhook(
    hook: &str,
    params: &[(String, String)],
) -> Result<Vec<WebhookEvent>, WebhookError> {
    match hook {
        "message" => {
            let id = field(params, "MessageSid")
                .or_else(|| field(params, "SmsSid"))
                .filter(|v| !v.is_empty())
                .ok_or_else(|| WebhookError::BadRequest("missing `MessageSid`".into()))?;
            let num_media: usize = match field(params, "NumMedia") {
                None | Some("") => 0,
                Some(n) => n.parse().map_err(|_| {
                    WebhookError::BadRequest(format!("`NumMedia` = {n:?}: not a count"))
                })?,
            };
            // Twilio sends at most 10; a larger count is a forgery or a bug.
            if num_media > 20 {
                return Err(WebhookError::BadRequest(format!(
                    "`NumMedia` = {num_media}: too many"
                )));
            }
            let mut media = Vec::with_capacity(num_media);
            for i in 0..num_media {
                let url = required(params, &format!("MediaUrl{i}"))?;
                media.push(Media::new(
                    url,
                    field(params, &format!("MediaContentType{i}")).map(str::to_owned),
                ));
            }
            let sms = InboundSms {
                id: id.to_owned(),
                from: sender(params, "From")?,
                to: number(params, "To")?,
                body: field(params, "Body").unwrap_or("").to_owned(),
                media,
                others: vec![],
                subject: None,
            };
            Ok(vec![WebhookEvent::Inbound(sms)])
        }
        "status" => {
            let id = field(params, "MessageSid")
                .or_else(|| field(params, "SmsSid"))
                .filter(|v| !v.is_empty())
                .ok_or_else(|| WebhookError::BadRequest("missing `MessageSid`".into()))?;
            let status = field(params, "MessageStatus")
                .or_else(|| field(params, "SmsStatus"))
                .ok_or_else(|| WebhookError::BadRequest("missing `MessageStatus`".into()))?;
            let status = match status {
                "delivered" => DeliveryStatus::Delivered,
                "failed" | "undelivered" | "canceled" => {
                    let code = field(params, "ErrorCode").filter(|c| !c.is_empty() && *c != "0");
                    let reason = match code {
                        Some(c) => match error_description(c) {
                            Some(d) => format!("{status}, error {c}: {d}"),
                            None => format!("{status}, error {c}"),
                        },
                        None => status.to_owned(),
                    };
                    DeliveryStatus::Failed(sms_gateway_core::Failure::new(
                        code.map(str::to_owned),
                        reason,
                    ))
                }
                _ => DeliveryStatus::InProgress,
            };
            Ok(vec![WebhookEvent::Status(StatusReport {
                message_id: id.to_owned(),
                status,
            })])
        }
        other => Err(WebhookError::NotFound(format!(
            "no hook {other:?}; use message or status"
        ))),
    }
}

/// What a webhook's signature is checked over. The framing follows the
/// body's `Content-Type`, never a guess: a MAC that is valid over a form's
/// sorted fields must not also be accepted as a MAC over a raw body.
pub enum Signed<'a> {
    /// A form-encoded body, read into its fields (names unique).
    Form(&'a [(String, String)]),
    /// Any other body, checked as raw bytes and never read as a form.
    Raw,
}

/// Authenticates (with `verify`) and reads a LaML webhook, answering with
/// empty TwiML. Messaging webhooks are forms: another body is checked as
/// raw bytes (so an unsigned one still gets 403) and then refused with 415.
pub fn handle_webhook(
    req: &WebhookRequest,
    verify: impl FnOnce(Signed<'_>) -> Result<(), WebhookError>,
) -> Result<WebhookReply, WebhookError> {
    req.expect_post_to(&["message", "status"])?;
    if !req.is_form() {
        verify(Signed::Raw)?;
        return Err(WebhookError::UnsupportedMediaType(format!(
            "messaging webhooks are {}",
            sms_gateway_core::provider::FORM_MEDIA_TYPE
        )));
    }
    let params = req.form()?;
    verify(Signed::Form(&params))?;
    let events = parse_webhook(&req.hook, &params)?;
    Ok(WebhookReply {
        events,
        status: 200,
        content_type: "text/xml",
        body: EMPTY_TWIML.to_owned(),
    })
}

/// Twilio's check, keyed with `key`, of header `X-Twilio-Signature`: over a
/// form's fields, or over a raw (JSON) body whose URL carries `bodySHA256`.
pub fn verify_twilio(
    req: &WebhookRequest,
    key: &str,
    header: &str,
    signed: Signed<'_>,
) -> Result<(), WebhookError> {
    let given = req
        .header(header)
        .ok_or_else(|| WebhookError::Unauthorized(format!("no {header} header")))?;
    let ok = match signed {
        Signed::Form(params) => signature::verify_form(key, &req.url, params, given),
        Signed::Raw => {
            req.url.contains("bodySHA256=")
                && signature::verify_json_body_sha256(key, &req.url, &req.body, given)
        }
    };
    if ok {
        Ok(())
    } else {
        Err(WebhookError::Unauthorized(format!(
            "{header} does not match"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn inbound_mms_parses() {
        let events = parse_webhook(
            "message",
            &p(&[
                ("MessageSid", "MM1"),
                ("From", "+15557654321"),
                ("To", "+15550001111"),
                ("Body", ""),
                ("NumMedia", "2"),
                ("MediaUrl0", "https://api.twilio.com/m/0"),
                ("MediaContentType0", "image/png"),
                ("MediaUrl1", "https://api.twilio.com/m/1"),
            ]),
        )
        .unwrap();
        let [WebhookEvent::Inbound(sms)] = &events[..] else {
            panic!("{events:?}")
        };
        assert_eq!(sms.id, "MM1");
        assert_eq!(sms.media.len(), 2);
        assert_eq!(sms.media[0].content_type.as_deref(), Some("image/png"));
        assert_eq!(sms.media[1].content_type, None);
    }

    #[test]
    fn malformed_inbound_is_refused_with_the_field_named() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("From", "+15557654321"), ("To", "+15550001111")],
                "MessageSid",
            ),
            (&[("MessageSid", "SM1"), ("To", "+15550001111")], "From"),
            (
                &[
                    ("MessageSid", "SM1"),
                    // Neither a number nor a sender name (#28 lets those in).
                    ("From", "garbage/text"),
                    ("To", "+15550001111"),
                ],
                "From",
            ),
            (
                &[
                    ("MessageSid", "SM1"),
                    ("From", "+15557654321"),
                    ("To", "+15550001111"),
                    ("NumMedia", "x"),
                ],
                "NumMedia",
            ),
            (
                &[
                    ("MessageSid", "SM1"),
                    ("From", "+15557654321"),
                    ("To", "+15550001111"),
                    ("NumMedia", "1"),
                ],
                "MediaUrl0",
            ),
        ];
        for (params, field) in cases {
            match parse_webhook("message", &p(params)) {
                Err(WebhookError::BadRequest(m)) => assert!(m.contains(field), "{m}"),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn statuses_map() {
        let st = |s: &str, code: Option<&str>| {
            let mut params = p(&[("MessageSid", "SM1"), ("MessageStatus", s)]);
            if let Some(c) = code {
                params.push(("ErrorCode".into(), c.into()));
            }
            match &parse_webhook("status", &params).unwrap()[..] {
                [WebhookEvent::Status(r)] => r.status.clone(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(st("delivered", None), DeliveryStatus::Delivered);
        assert_eq!(st("sent", None), DeliveryStatus::InProgress);
        assert_eq!(st("queued", None), DeliveryStatus::InProgress);
        assert_eq!(
            st("undelivered", Some("30003")),
            DeliveryStatus::Failed(sms_gateway_core::Failure::new(
                Some("30003".into()),
                "undelivered, error 30003: unreachable destination handset"
            ))
        );
        assert_eq!(
            st("failed", Some("39999")),
            DeliveryStatus::Failed(sms_gateway_core::Failure::new(
                Some("39999".into()),
                "failed, error 39999"
            ))
        );
        assert_eq!(
            st("failed", None),
            DeliveryStatus::Failed(sms_gateway_core::Failure::new(None, "failed"))
        );
    }
}
