//! A provider for the core's own tests, registered as `type = "sandbox"`
//! and configured as the runtime's sandbox is (`token`, `max_chars`,
//! `max_media`, `max_group`), so the core's tests read like the
//! configs users write without the core depending on the runtime. It sends
//! nothing and parses no webhook; the real sandbox is
//! `sms_gateway_runtime::SandboxProvider`.

use crate::message::{OutboundSms, ProviderError};
use crate::provider::{
    provider_settings, ProviderConfigError, ProviderContext, PstnProvider, WebhookError,
    WebhookReply, WebhookRequest,
};
use crate::secret::Secret;
use crate::text::{BodyLimit, Limits};
use async_trait::async_trait;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[allow(dead_code)]
    token: Secret,
    #[serde(default)]
    max_chars: Option<usize>,
    #[serde(default)]
    max_media: Option<usize>,
    #[serde(default)]
    max_group: Option<usize>,
}

struct Limited(Limits);

#[async_trait]
impl PstnProvider for Limited {
    async fn send(&self, _: &OutboundSms) -> Result<String, ProviderError> {
        Ok("TEST".into())
    }
    fn limits(&self) -> Limits {
        self.0
    }
    fn webhook(&self, _: &WebhookRequest) -> Result<WebhookReply, WebhookError> {
        Err(WebhookError::NotFound(
            "the core's test provider takes no webhooks".into(),
        ))
    }
}

fn from_config(
    _: &ProviderContext,
    settings: serde_json::Value,
) -> Result<Arc<dyn PstnProvider>, ProviderConfigError> {
    let s: Settings = provider_settings(settings)?;
    // As the sandbox: group texts of up to eight numbers, like Telnyx's.
    let mut limits = Limits {
        max_group: 8,
        ..Limits::default()
    };
    if let Some(n) = s.max_chars {
        limits.body = BodyLimit::Characters(n);
    }
    if let Some(n) = s.max_media {
        limits.max_media = n;
    }
    if let Some(n) = s.max_group {
        limits.max_group = n;
    }
    Ok(Arc::new(Limited(limits)))
}

/// A registry with only this provider, as `sandbox`.
pub(crate) fn registry() -> crate::ProviderRegistry {
    let mut r = crate::ProviderRegistry::new();
    r.register("sandbox", from_config);
    r
}
