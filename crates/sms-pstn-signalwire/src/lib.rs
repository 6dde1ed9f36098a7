//! # sms-pstn-signalwire
//!
//! The SignalWire provider for sms-over-xmpp. SignalWire speaks Twilio's LaML
//! API, so this crate is configuration around `sms_pstn_laml`: its
//! own URLs and credentials, `MediaUrl` at most 8, and webhook signatures
//! (`X-SignalWire-Signature` or `X-Twilio-Signature`) keyed with the
//! project's signing key, by either of the two schemes SignalWire uses.
//!
//! ```toml
//! [providers.sw]
//! type = "signalwire"
//! space = "example.signalwire.com"
//! project_id = "…"
//! api_token = "…"
//! signing_key = "…"
//! api_base = "https://example.signalwire.com"   # optional; defaults from space
//! ```

use async_trait::async_trait;
use serde::Deserialize;
use sms_gateway_core::provider::{provider_settings, ProviderConfigError};
use sms_gateway_core::{
    OutboundSms, ProviderContext, ProviderError, PstnProvider, Secret, WebhookError, WebhookReply,
    WebhookRequest,
};
use sms_pstn_laml::signature;
use sms_pstn_laml::{self as laml, Signed};
use std::sync::Arc;

/// SignalWire allows this many media per message.
pub const MAX_MEDIA: usize = 8;

/// `[providers.NAME]` with `type = "signalwire"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalWireConfig {
    /// Seconds one API request may take (default 30). A request that gets
    /// no answer in time is reported, not resent: it may have been taken.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// The space's host name, `example.signalwire.com`.
    pub space: String,
    /// The project id (basic-auth user).
    pub project_id: String,
    /// The API token (basic-auth password).
    pub api_token: Secret,
    /// The project's signing key, for webhook signatures.
    pub signing_key: Secret,
    /// API base URL; defaults to `https://{space}`.
    #[serde(default)]
    pub api_base: Option<String>,
}

fn default_timeout() -> u64 {
    laml::DEFAULT_TIMEOUT_SECS
}

/// A SignalWire project.
#[derive(Debug)]
pub struct SignalWireProvider {
    client: laml::LamlClient,
    signing_key: Secret,
}

impl SignalWireProvider {
    /// A provider for `config`, whose webhooks live under `ctx`.
    pub fn new(
        ctx: &ProviderContext,
        config: SignalWireConfig,
    ) -> Result<Self, ProviderConfigError> {
        if config.space.is_empty() || config.space.contains(['/', ':', ' ']) {
            return Err(ProviderConfigError::key(
                "space",
                format!(
                    "`space` = {:?}: expected a host name such as example.signalwire.com",
                    config.space
                ),
            ));
        }
        for (key, empty) in [
            ("project_id", config.project_id.is_empty()),
            ("api_token", config.api_token.is_empty()),
            ("signing_key", config.signing_key.is_empty()),
        ] {
            if empty {
                return Err(ProviderConfigError::key(
                    key,
                    format!("`{key}` must not be empty"),
                ));
            }
        }
        let base = laml::api_base(
            &config
                .api_base
                .unwrap_or_else(|| format!("https://{}", config.space)),
        )
        .map_err(|r| ProviderConfigError::key("api_base", r))?;
        let client = laml::LamlClient::new(
            "SignalWire",
            format!(
                "{base}/api/laml/2010-04-01/Accounts/{}/Messages.json",
                config.project_id
            ),
            config.project_id.clone(),
            config.api_token,
            ctx.hook_url("status"),
            MAX_MEDIA,
            std::time::Duration::from_secs(config.timeout_secs),
        )
        .map_err(ProviderConfigError::whole)?;
        Ok(SignalWireProvider {
            client,
            signing_key: config.signing_key,
        })
    }

    /// The [`ProviderFactory`](sms_gateway_core::ProviderFactory) for `type = "signalwire"`.
    pub fn from_config(
        ctx: &ProviderContext,
        settings: serde_json::Value,
    ) -> Result<Arc<dyn PstnProvider>, ProviderConfigError> {
        let config: SignalWireConfig = provider_settings(settings)?;
        Ok(Arc::new(SignalWireProvider::new(ctx, config)?))
    }

    /// SignalWire signs a form by Twilio's scheme and a raw (JSON) body by
    /// `hex(HMAC-SHA1(key, URL + body))` (or Twilio's `bodySHA256`). Which
    /// one applies follows the body's type: both are an HMAC of the URL and
    /// something, so accepting either for any body would let one MAC stand
    /// for two different requests.
    fn verify(&self, req: &WebhookRequest, signed: Signed<'_>) -> Result<(), WebhookError> {
        let given = req
            .header("x-signalwire-signature")
            .or_else(|| req.header("x-twilio-signature"))
            .ok_or_else(|| WebhookError::Unauthorized("no X-SignalWire-Signature header".into()))?;
        let key = self.signing_key.expose();
        let ok = match signed {
            Signed::Form(params) => signature::verify_form(key, &req.url, params, given),
            Signed::Raw => {
                signature::verify_raw_body_hex(key, &req.url, &req.body, given)
                    || (req.url.contains("bodySHA256=")
                        && signature::verify_json_body_sha256(key, &req.url, &req.body, given))
            }
        };
        if ok {
            Ok(())
        } else {
            Err(WebhookError::Unauthorized(
                "signature does not match".into(),
            ))
        }
    }
}

#[async_trait]
impl PstnProvider for SignalWireProvider {
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

    async fn whoami(&self) -> Result<String, ProviderError> {
        self.client.whoami().await
    }

    async fn find_number(
        &self,
        number: &sms_gateway_core::PhoneNumber,
    ) -> Result<Option<sms_gateway_core::provider::NumberSetup>, ProviderError> {
        self.client.find_number(number).await
    }

    async fn point_number(
        &self,
        number: &sms_gateway_core::provider::NumberSetup,
        url: &str,
    ) -> Result<(), ProviderError> {
        self.client.point_number(number, url).await
    }

    fn webhook(&self, req: &WebhookRequest) -> Result<WebhookReply, WebhookError> {
        laml::handle_webhook(req, |signed| self.verify(req, signed))
    }
}
