//! The built-in `sandbox` provider: no carrier at all.
//!
//! Outbound texts are logged and kept, and listed as JSON by
//! `GET {public_url}/{account}/outbox`. Inbound texts and delivery reports
//! are injected with `POST {public_url}/{account}/message` (JSON
//! `{"from","to","body","media"?}`) and `POST …/status` (JSON
//! `{"message_id","status":"delivered"|"failed","error"?}`). Every request
//! must carry `Authorization: Bearer {token}`, so a sandbox exposed by mistake
//! cannot be used to forge texts. The quick start and the tests use it; so
//! can an embedder's own tests.

use crate::provider::{
    json_error, provider_settings, ProviderContext, ProviderError, PstnProvider, WebhookError,
    WebhookEvent, WebhookReply, WebhookRequest,
};
use crate::text::{BodyLimit, Limits};
use crate::PhoneNumber;
use crate::Secret;
use crate::{DeliveryStatus, InboundSms, Media, OutboundSms, StatusReport};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;

/// `[providers.NAME]` with `type = "sandbox"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// Bearer token required on every sandbox request.
    pub token: Secret,
    /// Characters per message, to behave like a carrier (default: no limit).
    #[serde(default)]
    pub max_chars: Option<usize>,
    /// Media per message, to behave like a carrier (default: no limit).
    #[serde(default)]
    pub max_media: Option<usize>,
    /// Numbers per group text (default 8, as Telnyx; 0: no group texts,
    /// as Twilio's and SignalWire's Messages APIs).
    #[serde(default)]
    pub max_group: Option<usize>,
}

/// A text the sandbox "sent".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SentText {
    /// The id `send` returned.
    pub id: String,
    /// What was sent.
    #[serde(flatten)]
    pub sms: OutboundSms,
}

/// The shortest token accepted: a sandbox may be reachable from anywhere
/// the webhook port is, and its token is all that keeps forged texts out.
pub const MIN_TOKEN_LEN: usize = 16;

/// The token the Debian package's config ships with: public, so refused
/// (#27). The package's `postinst` replaces it with a random one.
pub const PLACEHOLDER_TOKEN: &str = "change-this-sandbox-token";

/// How many sent texts the outbox keeps (the oldest go first).
pub const OUTBOX_SIZE: usize = 1000;

/// The sandbox provider. Clones share one outbox.
#[derive(Debug, Clone)]
pub struct SandboxProvider {
    account: String,
    token: Secret,
    limits: Limits,
    outbox: Arc<Mutex<VecDeque<SentText>>>,
    /// Tells this run's ids from every other run's: a carrier's ids are
    /// unique for ever, and the store takes a repeated id for a retry.
    run: String,
    next_id: Arc<AtomicU64>,
    /// `{public_url}/{account}/message`, where its inject hook lives (set
    /// by [`SandboxProvider::from_config`]): what `check --online` reports
    /// as every number's inbound URL.
    message_hook: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InjectMessage {
    from: String,
    to: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    media: Vec<String>,
    #[serde(default)]
    id: Option<String>,
    /// A group text's other participants, as a carrier's `cc`.
    #[serde(default)]
    cc: Vec<String>,
    /// An MMS subject.
    #[serde(default)]
    subject: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InjectStatus {
    message_id: String,
    status: String,
    #[serde(default)]
    error: Option<String>,
}

/// A registry with only the sandbox (for tests, and for embedders who
/// want no carrier).
pub fn registry() -> crate::ProviderRegistry {
    let mut r = crate::ProviderRegistry::new();
    r.register("sandbox", SandboxProvider::from_config);
    r
}

impl SandboxProvider {
    /// A sandbox for `account` that requires `token`.
    pub fn new(account: impl Into<String>, token: Secret) -> Self {
        SandboxProvider {
            account: account.into(),
            token,
            // Group texts of up to eight numbers, like Telnyx's.
            limits: Limits {
                max_group: 8,
                ..Limits::default()
            },
            outbox: Arc::default(),
            run: crate::run_tag(),
            next_id: Arc::new(AtomicU64::new(1)),
            message_hook: None,
        }
    }

    /// The [`ProviderFactory`](crate::ProviderFactory) for `type = "sandbox"`.
    pub fn from_config(
        ctx: &ProviderContext,
        settings: serde_json::Value,
    ) -> Result<Arc<dyn PstnProvider>, crate::provider::ProviderConfigError> {
        let cfg: SandboxConfig = provider_settings(settings)?;
        if cfg.token.expose() == PLACEHOLDER_TOKEN {
            return Err(crate::provider::ProviderConfigError::key(
                "token",
                "`token` is the packaged config's placeholder, which anyone can read: set a secret of your own (`openssl rand -hex 16` makes one)".to_owned(),
            ));
        }
        if cfg.token.expose().chars().count() < MIN_TOKEN_LEN {
            return Err(crate::provider::ProviderConfigError::key(
                "token",
                format!("`token` must be at least {MIN_TOKEN_LEN} characters long"),
            ));
        }
        let mut sandbox = SandboxProvider::new(ctx.account.clone(), cfg.token);
        sandbox.message_hook = Some(ctx.hook_url("message"));
        if let Some(n) = cfg.max_chars {
            sandbox.limits.body = BodyLimit::Characters(n);
        }
        if let Some(n) = cfg.max_media {
            sandbox.limits.max_media = n;
        }
        if let Some(n) = cfg.max_group {
            sandbox.limits.max_group = n;
        }
        Ok(Arc::new(sandbox))
    }

    /// The same sandbox, limited like a carrier.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The last `OUTBOX_SIZE` (1,000) texts sent, oldest first.
    pub fn outbox(&self) -> Vec<SentText> {
        let outbox = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
        outbox.iter().cloned().collect()
    }

    fn new_id(&self, kind: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{kind}{}-{n:08}", self.run)
    }

    fn authorize(&self, req: &WebhookRequest) -> Result<(), WebhookError> {
        let given = req
            .header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| WebhookError::Unauthorized("no Bearer token".into()))?;
        if bool::from(given.as_bytes().ct_eq(self.token.expose().as_bytes())) {
            Ok(())
        } else {
            Err(WebhookError::Unauthorized("wrong token".into()))
        }
    }
}

/// The sender of an inbound text: a number, or an alphanumeric sender id.
fn parse_sender(field: &str, value: &str) -> Result<PhoneNumber, WebhookError> {
    PhoneNumber::sender(value).map_err(|e| WebhookError::BadRequest(format!("`{field}`: {e}")))
}

fn parse_number(field: &str, value: &str) -> Result<PhoneNumber, WebhookError> {
    PhoneNumber::parse(value, None).map_err(|e| WebhookError::BadRequest(format!("`{field}`: {e}")))
}

#[async_trait]
impl PstnProvider for SandboxProvider {
    /// There is no carrier: every number is the sandbox's, and its texts
    /// arrive by the inject hook.
    async fn whoami(&self) -> Result<String, ProviderError> {
        Ok("the built-in sandbox (no carrier; texts stay on this machine)".into())
    }

    async fn find_number(
        &self,
        number: &PhoneNumber,
    ) -> Result<Option<crate::setup::NumberSetup>, ProviderError> {
        Ok(Some(crate::setup::NumberSetup {
            handle: number.to_string(),
            handle_name: "sandbox number".into(),
            inbound_url: self.message_hook.clone(),
            method: None,
            blocked: None,
        }))
    }

    /// Nothing to point: the sandbox's hook is where it is.
    async fn point_number(
        &self,
        _: &crate::setup::NumberSetup,
        _: &str,
    ) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn send(&self, sms: &OutboundSms) -> Result<String, ProviderError> {
        let id = self.new_id("SB");
        tracing::info!(account = %self.account, %id, from = %sms.from, to = %sms.to, media = sms.media.len(), "sandbox: text sent");
        let mut outbox = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
        if outbox.len() >= OUTBOX_SIZE {
            outbox.pop_front();
        }
        outbox.push_back(SentText {
            id: id.clone(),
            sms: sms.clone(),
        });
        Ok(id)
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    fn webhook(&self, req: &WebhookRequest) -> Result<WebhookReply, WebhookError> {
        let expect_method = |m: &str| {
            if req.method == m {
                Ok(())
            } else {
                Err(WebhookError::MethodNotAllowed(format!("use {m}")))
            }
        };
        match req.hook.as_str() {
            "outbox" => {
                expect_method("GET")?;
                self.authorize(req)?;
                let body = serde_json::to_string(&self.outbox()).expect("outbox serialises");
                Ok(WebhookReply {
                    events: vec![],
                    status: 200,
                    content_type: "application/json",
                    body,
                })
            }
            "message" => {
                expect_method("POST")?;
                self.authorize(req)?;
                let m: InjectMessage = serde_json::from_slice(&req.body)
                    .map_err(|e| json_error("not a sandbox message", &e))?;
                let id = m.id.unwrap_or_else(|| self.new_id("SBIN"));
                let sms = InboundSms {
                    id,
                    from: parse_sender("from", &m.from)?,
                    to: parse_number("to", &m.to)?,
                    body: m.body,
                    media: m
                        .media
                        .into_iter()
                        .map(|url| Media::new(url, None))
                        .collect(),
                    others: m
                        .cc
                        .iter()
                        .take(crate::group::MAX_PARTICIPANTS)
                        .map(|n| parse_number("cc", n))
                        .collect::<Result<_, _>>()?,
                    subject: m.subject,
                };
                if sms.body.is_empty() && sms.media.is_empty() {
                    return Err(WebhookError::BadRequest(
                        "neither `body` nor `media`".into(),
                    ));
                }
                Ok(WebhookReply::ok(vec![WebhookEvent::Inbound(sms)]))
            }
            "status" => {
                expect_method("POST")?;
                self.authorize(req)?;
                let s: InjectStatus = serde_json::from_slice(&req.body)
                    .map_err(|e| json_error("not a sandbox status", &e))?;
                let status = match s.status.as_str() {
                    "delivered" => DeliveryStatus::Delivered,
                    "failed" => DeliveryStatus::Failed(crate::Failure::from_words(
                        s.error.unwrap_or_else(|| "failed".into()),
                    )),
                    "queued" | "sent" => DeliveryStatus::InProgress,
                    other => {
                        return Err(WebhookError::BadRequest(format!(
                            "`status` {other:?}: expected delivered, failed, queued or sent"
                        )))
                    }
                };
                Ok(WebhookReply::ok(vec![WebhookEvent::Status(StatusReport {
                    message_id: s.message_id,
                    status,
                })]))
            }
            other => Err(WebhookError::NotFound(format!(
                "sandbox has no hook {other:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// #27: the Debian package's placeholder sandbox token is public; `check`
    /// and `run` refuse it, naming the key.
    #[test]
    fn the_packaged_placeholder_token_is_refused() {
        let text = crate::test_config("");
        let check = |text: &str| crate::Config::from_toml(text)?.validate(&registry());
        assert!(check(&text).is_ok());
        let text = text.replace("sandbox-test-token", PLACEHOLDER_TOKEN);
        let err = check(&text).unwrap_err().to_string();
        assert!(err.contains("providers.main.token"), "{err}");
        assert!(err.contains("placeholder"), "{err}");
        assert!(!err.contains(PLACEHOLDER_TOKEN), "{err}");
    }

    fn req(method: &str, hook: &str, auth: Option<&str>, body: &str) -> WebhookRequest {
        let mut headers = BTreeMap::new();
        if let Some(a) = auth {
            headers.insert("authorization".into(), a.into());
        }
        WebhookRequest {
            method: method.into(),
            hook: hook.into(),
            url: format!("http://x/sb/{hook}"),
            headers,
            body: body.to_owned().into(),
        }
    }

    #[tokio::test]
    async fn send_is_recorded_and_listed() {
        let sb = SandboxProvider::new("sb", Secret::new("t"));
        let sms = OutboundSms {
            from: PhoneNumber::parse("+15550001111", None).unwrap(),
            to: PhoneNumber::parse("+15557654321", None).unwrap(),
            body: "hi".into(),
            media: vec![],
            cc: vec![],
        };
        let id = sb.send(&sms).await.unwrap();
        assert_eq!(
            sb.outbox(),
            vec![SentText {
                id: id.clone(),
                sms
            }]
        );
        let reply = sb
            .webhook(&req("GET", "outbox", Some("Bearer t"), ""))
            .unwrap();
        let listed: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(listed[0]["id"], id.as_str());
        assert_eq!(listed[0]["to"], "+15557654321");
        assert_eq!(listed[0]["body"], "hi");
    }

    #[test]
    fn inject_requires_the_token() {
        let sb = SandboxProvider::new("sb", Secret::new("t"));
        let body = r#"{"from":"+15557654321","to":"+15550001111","body":"yo"}"#;
        for auth in [None, Some("Bearer u"), Some("t")] {
            let err = sb.webhook(&req("POST", "message", auth, body)).unwrap_err();
            assert_eq!(err.http_status(), 403, "{auth:?}");
        }
        let reply = sb
            .webhook(&req("POST", "message", Some("Bearer t"), body))
            .unwrap();
        match &reply.events[..] {
            [WebhookEvent::Inbound(sms)] => {
                assert_eq!(sms.from.as_str(), "+15557654321");
                assert_eq!(sms.body, "yo");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_inject_is_400() {
        let sb = SandboxProvider::new("sb", Secret::new("t"));
        for body in [
            "{",
            r#"{"from":"x/y","to":"+15550001111","body":"a"}"#,
            r#"{"from":"+15557654321","to":"+15550001111"}"#,
        ] {
            let err = sb
                .webhook(&req("POST", "message", Some("Bearer t"), body))
                .unwrap_err();
            assert_eq!(err.http_status(), 400, "{body}");
        }
        let err = sb
            .webhook(&req(
                "POST",
                "status",
                Some("Bearer t"),
                r#"{"message_id":"a","status":"lost"}"#,
            ))
            .unwrap_err();
        assert_eq!(err.http_status(), 400);
        // serde quotes the value it could not read: a message's text must
        // not reach the answer or the log.
        let err = sb
            .webhook(&req(
                "POST",
                "message",
                Some("Bearer t"),
                r#"{"from":"+15557654321","to":"+15550001111","body":"private words","media":"private words"}"#,
            ))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("private"), "{err}");
        assert!(err.contains("line 1"), "{err}");
        assert_eq!(
            sb.webhook(&req("GET", "message", Some("Bearer t"), ""))
                .unwrap_err()
                .http_status(),
            405
        );
        assert_eq!(
            sb.webhook(&req("GET", "nope", Some("Bearer t"), ""))
                .unwrap_err()
                .http_status(),
            404
        );
    }

    #[test]
    fn ids_differ_between_runs_and_the_outbox_is_bounded() {
        let body = r#"{"from":"+15557654321","to":"+15550001111","body":"hi"}"#;
        let id = |sb: &SandboxProvider| match &sb
            .webhook(&req("POST", "message", Some("Bearer t"), body))
            .unwrap()
            .events[..]
        {
            [WebhookEvent::Inbound(sms)] => sms.id.clone(),
            other => panic!("{other:?}"),
        };
        let first = SandboxProvider::new("sb", Secret::new("t"));
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = SandboxProvider::new("sb", Secret::new("t"));
        assert_ne!(id(&first), id(&second), "a restart must not reuse ids");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let sms = OutboundSms {
            from: PhoneNumber::parse("+15550001111", None).unwrap(),
            to: PhoneNumber::parse("+15557654321", None).unwrap(),
            body: "x".into(),
            media: vec![],
            cc: vec![],
        };
        for _ in 0..OUTBOX_SIZE + 5 {
            rt.block_on(first.send(&sms)).unwrap();
        }
        let outbox = first.outbox();
        assert_eq!(outbox.len(), OUTBOX_SIZE);
        assert!(outbox[0].id.ends_with("-00000007"), "{}", outbox[0].id);
    }

    #[test]
    fn a_short_token_is_refused() {
        let ctx = ProviderContext {
            account: "sb".into(),
            webhook_base: "http://x/sb".into(),
        };
        let Err(e) = SandboxProvider::from_config(&ctx, serde_json::json!({"token": "t"})) else {
            panic!("a one-character token was accepted")
        };
        assert!(e.reason.contains("at least 16"), "{e}");
        assert_eq!(e.key.as_deref(), Some("token"));
        assert!(SandboxProvider::from_config(
            &ctx,
            serde_json::json!({"token": "sixteen-chars-ok"})
        )
        .is_ok());
    }
}
