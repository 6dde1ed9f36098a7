//! # sms-pstn-twilio
//!
//! The Twilio provider for sms-over-xmpp (on the LaML pieces it shares
//! with SignalWire, in `sms-pstn-laml`).
//!
//! ```toml
//! [providers.main]
//! type = "twilio"
//! account_sid = "AC…"
//! auth_token = "…"                      # REST basic auth and the signature key
//! api_base = "https://api.twilio.com"   # optional
//! ```

use async_trait::async_trait;
use serde::Deserialize;
use sms_gateway_core::provider::provider_settings;
use sms_gateway_core::{
    OutboundSms, ProviderConfigError, ProviderContext, ProviderError, PstnProvider, Secret,
    WebhookError, WebhookReply, WebhookRequest,
};
use sms_pstn_laml as laml;
use std::sync::Arc;

/// Twilio allows this many media per message.
pub const MAX_MEDIA: usize = 10;

/// `[providers.NAME]` with `type = "twilio"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioConfig {
    /// Seconds one API request may take (default 30). A request that gets
    /// no answer in time is reported, not resent: it may have been taken.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// The account SID, `AC…`.
    pub account_sid: String,
    /// The auth token: REST basic auth and the `X-Twilio-Signature` key.
    pub auth_token: Secret,
    /// API base URL; tests point it at a mock.
    #[serde(default = "default_api_base")]
    pub api_base: String,
}

fn default_api_base() -> String {
    "https://api.twilio.com".into()
}

fn default_timeout() -> u64 {
    laml::DEFAULT_TIMEOUT_SECS
}

/// Twilio's connection overrides for the inbound URL `configure-carrier`
/// sets (a fragment: Twilio reads it and never sends it to us). Without
/// them Twilio does not retry a webhook answered 5xx (Twilio's *Webhooks
/// connection overrides*: `rc` retries, at most 5; `rp` which failures:
/// `5xx`, `ct` connect timeout, `rt` read timeout), so a text arriving
/// while the gateway answers 503 (busy past `http.ack_timeout_secs`, or
/// stopping) would go to the fallback URL or be lost. All attempts stay
/// within Twilio's 15 s total.
pub const CONNECTION_OVERRIDES: &str = "#rc=3&rp=5xx,ct,rt";

/// Whether `sid` has the shape of a Twilio message SID: `SM` or `MM`,
/// then 1 to 32 hex digits (Twilio's own are 32).
pub fn is_message_sid(sid: &str) -> bool {
    let digits = sid.strip_prefix("SM").or_else(|| sid.strip_prefix("MM"));
    digits.is_some_and(|d| (1..=32).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A Twilio account.
#[derive(Debug)]
pub struct TwilioProvider {
    client: laml::LamlClient,
    auth_token: Secret,
    account_sid: String,
}

impl TwilioProvider {
    /// A provider for `config`, whose webhooks live under `ctx`.
    pub fn new(ctx: &ProviderContext, config: TwilioConfig) -> Result<Self, ProviderConfigError> {
        if !config.account_sid.starts_with("AC") {
            return Err(ProviderConfigError::key(
                "account_sid",
                format!(
                    "`account_sid` = {:?}: a Twilio account SID starts with AC",
                    config.account_sid
                ),
            ));
        }
        if config.auth_token.is_empty() {
            return Err(ProviderConfigError::key(
                "auth_token",
                "`auth_token` must not be empty",
            ));
        }
        let base = laml::api_base(&config.api_base)
            .map_err(|r| ProviderConfigError::key("api_base", r))?;
        let client = laml::LamlClient::new(
            "Twilio",
            format!(
                "{base}/2010-04-01/Accounts/{}/Messages.json",
                config.account_sid
            ),
            config.account_sid.clone(),
            config.auth_token.clone(),
            ctx.hook_url("status"),
            MAX_MEDIA,
            std::time::Duration::from_secs(config.timeout_secs),
        )
        .map_err(ProviderConfigError::whole)?;
        Ok(TwilioProvider {
            client,
            auth_token: config.auth_token,
            account_sid: config.account_sid,
        })
    }

    /// The ids of a signed webhook, checked (#27). The LaML signature runs
    /// names and values together, so a captured webhook can be regrouped
    /// into another that verifies: `MessageSid = "SM…NumMedia0"` with
    /// `NumMedia` removed keeps the signature and changes the id, and the
    /// text would be taken as new. A Twilio message SID is `SM` or `MM`
    /// and hex digits (32 of them), so a field name cannot hide in one; and
    /// the webhook must be for this account.
    fn check_ids(&self, params: &[(String, String)]) -> Result<(), WebhookError> {
        for name in ["MessageSid", "SmsSid"] {
            if let Some((_, sid)) = params.iter().find(|(k, _)| k == name) {
                if !is_message_sid(sid) {
                    return Err(WebhookError::BadRequest(format!(
                        "`{name}` is not a Twilio message SID (SM or MM and hex digits)"
                    )));
                }
            }
        }
        if let Some((_, account)) = params.iter().find(|(k, _)| k == "AccountSid") {
            if *account != self.account_sid {
                return Err(WebhookError::Unauthorized(
                    "`AccountSid` is not this account's".into(),
                ));
            }
        }
        Ok(())
    }

    /// The [`ProviderFactory`](sms_gateway_core::ProviderFactory) for `type = "twilio"`.
    pub fn from_config(
        ctx: &ProviderContext,
        settings: serde_json::Value,
    ) -> Result<Arc<dyn PstnProvider>, ProviderConfigError> {
        let config: TwilioConfig = provider_settings(settings)?;
        Ok(Arc::new(TwilioProvider::new(ctx, config)?))
    }
}

#[async_trait]
impl PstnProvider for TwilioProvider {
    async fn send(&self, sms: &OutboundSms) -> Result<String, ProviderError> {
        self.client.send(sms).await
    }

    fn limits(&self) -> sms_gateway_core::text::Limits {
        self.client.limits()
    }

    fn media_authorization(
        &self,
        url: &sms_gateway_core::http::Uri,
    ) -> Option<sms_gateway_core::http::HeaderValue> {
        self.client.media_authorization(url)
    }

    async fn delete_media(&self, media: &sms_gateway_core::Media) -> Result<bool, ProviderError> {
        self.client.delete_media(media).await
    }

    async fn whoami(&self) -> Result<String, ProviderError> {
        self.client.whoami().await
    }

    async fn find_number(
        &self,
        number: &sms_gateway_core::PhoneNumber,
    ) -> Result<Option<sms_gateway_core::provider::NumberSetup>, ProviderError> {
        self.client.find_number(number).await
    }

    fn inbound_url(&self, hook: &str) -> String {
        format!("{hook}{CONNECTION_OVERRIDES}")
    }

    async fn point_number(
        &self,
        number: &sms_gateway_core::provider::NumberSetup,
        url: &str,
    ) -> Result<(), ProviderError> {
        self.client.point_number(number, url).await
    }

    fn webhook(&self, req: &WebhookRequest) -> Result<WebhookReply, WebhookError> {
        laml::handle_webhook(req, |signed| {
            let params = match &signed {
                laml::Signed::Form(params) => Some(*params),
                laml::Signed::Raw => None,
            };
            let key = self.auth_token.expose();
            let header = "x-twilio-signature";
            // The URL Twilio was given carries CONNECTION_OVERRIDES, a
            // fragment it never sends; whether it signs it is not
            // documented, so either form is believed.
            laml::verify_twilio(req, key, header, signed).or_else(|e| {
                let with_overrides = WebhookRequest {
                    url: format!("{}{CONNECTION_OVERRIDES}", req.url),
                    ..req.clone()
                };
                let again = match params {
                    Some(p) => laml::Signed::Form(p),
                    None => laml::Signed::Raw,
                };
                laml::verify_twilio(&with_overrides, key, header, again).map_err(|_| e)
            })?;
            params.map_or(Ok(()), |p| self.check_ids(p))
        })
    }
}
