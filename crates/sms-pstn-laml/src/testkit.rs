//! The contract fixture for LaML providers (feature `testkit`): Twilio and
//! SignalWire run the core contract suite through this one fixture, each
//! with its own URLs, credentials and signature header.

use crate::signature::twilio_signature;
use async_trait::async_trait;
use sms_gateway_core::testkit::ContractFixture;
use sms_gateway_core::{PstnProvider, WebhookRequest};
use std::collections::BTreeMap;
use std::sync::Arc;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A LaML carrier as the contract suite sees it.
pub struct LamlFixture {
    /// Builds the provider with its API at the given base URL.
    pub build: fn(&str) -> Arc<dyn PstnProvider>,
    /// Path of the Messages resource on the API.
    pub messages_path: String,
    /// The header that carries webhook signatures.
    pub signature_header: &'static str,
    /// The key webhooks are signed with.
    pub signing_key: String,
    /// `{public_url}/{account}` of the provider built by `build`.
    pub webhook_base: String,
}

impl LamlFixture {
    fn signed(&self, hook: &str, params: Vec<(String, String)>) -> WebhookRequest {
        let url = format!("{}/{hook}", self.webhook_base);
        let sig = twilio_signature(&self.signing_key, &url, &params);
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&params)
            .finish();
        let mut headers = BTreeMap::new();
        headers.insert(
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        );
        headers.insert(self.signature_header.into(), sig);
        WebhookRequest {
            method: "POST".into(),
            hook: hook.into(),
            url,
            headers,
            body: body.into(),
        }
    }
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[async_trait]
impl ContractFixture for LamlFixture {
    fn provider(&self, api_base: &str) -> Arc<dyn PstnProvider> {
        (self.build)(api_base)
    }

    async fn mount_send_ok(&self, server: &MockServer, id: &str) {
        Mock::given(method("POST"))
            .and(path(self.messages_path.as_str()))
            .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
                "sid": id, "status": "queued", "num_segments": "1", "error_code": null, "error_message": null,
            })))
            .mount(server)
            .await;
    }

    async fn mount_send_error(&self, server: &MockServer, status: u16, code: &str, message: &str) {
        let code: serde_json::Value = code
            .parse::<u64>()
            .map(Into::into)
            .unwrap_or_else(|_| code.into());
        Mock::given(method("POST"))
            .and(path(self.messages_path.as_str()))
            .respond_with(ResponseTemplate::new(status).set_body_json(serde_json::json!({
                "code": code, "message": message, "more_info": "https://www.twilio.com/docs/errors", "status": status,
            })))
            .mount(server)
            .await;
    }

    fn sent(&self, request: &wiremock::Request) -> (String, Vec<String>) {
        let form: Vec<(String, String)> =
            form_urlencoded::parse(&request.body).into_owned().collect();
        let body = form
            .iter()
            .find(|(k, _)| k == "Body")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let media = form
            .iter()
            .filter(|(k, _)| k == "MediaUrl")
            .map(|(_, v)| v.clone())
            .collect();
        (body, media)
    }

    fn inbound(&self, from: &str, to: &str, text: &str, media: &[&str]) -> WebhookRequest {
        let n = media.len().to_string();
        let mut params = pairs(&[
            ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
            ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
            ("From", from),
            ("To", to),
            ("Body", text),
            ("NumMedia", &n),
        ]);
        for (i, url) in media.iter().enumerate() {
            params.push((format!("MediaUrl{i}"), url.to_string()));
            params.push((format!("MediaContentType{i}"), "image/jpeg".into()));
        }
        self.signed("message", params)
    }

    fn status(&self, message_id: &str, delivered: bool, error_code: &str) -> WebhookRequest {
        let mut params = pairs(&[
            ("MessageSid", message_id),
            (
                "MessageStatus",
                if delivered {
                    "delivered"
                } else {
                    "undelivered"
                },
            ),
        ]);
        if !delivered {
            params.push(("ErrorCode".into(), error_code.into()));
        }
        self.signed("status", params)
    }

    fn malformed(&self) -> WebhookRequest {
        self.signed(
            "message",
            pairs(&[("MessageSid", "SM1"), ("Body", "no From or To")]),
        )
    }
}
