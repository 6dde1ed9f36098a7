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

    fn message_id(&self, n: u32) -> String {
        format!("SM{n:032x}")
    }
}

/// The account set-up calls (`check --online`, `configure-carrier`) against
/// a wiremock carrier answering in Twilio's documented shapes (Account
/// and IncomingPhoneNumber resources, errors `{code, message, more_info,
/// status}`), which SignalWire's LaML API shares. `basic` is the
/// `user:password` the provider built by `fixture.build` sends.
pub async fn run_setup_contract(fixture: &LamlFixture, basic: &str) {
    use base64::Engine;
    use sms_gateway_core::{PhoneNumber, ProviderErrorKind};
    use wiremock::matchers::{body_string, header, query_param};
    let account = fixture
        .messages_path
        .strip_suffix("/Messages.json")
        .expect("the Messages path ends in /Messages.json")
        .to_owned();
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(basic)
    );
    let sid = account.rsplit('/').next().unwrap().to_owned();
    let number = PhoneNumber::parse("+15550001111", None).unwrap();

    // Who am I, with the right credentials and with wrong ones.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("{account}.json")))
        .and(header("authorization", auth.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "sid": sid, "friendly_name": "My first account", "status": "active", "type": "Full",
            "owner_account_sid": sid, "date_created": "Thu, 01 Oct 2026 00:00:00 +0000",
        })))
        .mount(&server)
        .await;
    let provider = fixture.provider(&server.uri());
    let who = provider.whoami().await.unwrap();
    assert_eq!(who, format!("My first account ({sid})"));

    let refusing = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_json(serde_json::json!({
            "code": 20003, "message": "Authenticate",
            "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401,
        })))
        .mount(&refusing)
        .await;
    let e = fixture
        .provider(&refusing.uri())
        .whoami()
        .await
        .unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Unauthorized, "{e}");
    assert_eq!(e.code.as_deref(), Some("20003"));

    let suspended = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "sid": sid, "friendly_name": "Old", "status": "suspended",
        })))
        .mount(&suspended)
        .await;
    let e = fixture
        .provider(&suspended.uri())
        .whoami()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("is suspended"), "{e}");

    // The number: the filter matches partial numbers, so a near one comes
    // back too; the exact one is picked, with its URL and method.
    Mock::given(method("GET"))
        .and(path(format!("{account}/IncomingPhoneNumbers.json")))
        .and(query_param("PhoneNumber", "+15550001111"))
        .and(header("authorization", auth.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "incoming_phone_numbers": [
                {"sid": "PN0000000000000000000000000000000a", "phone_number": "+155500011110",
                 "sms_url": "", "sms_method": "POST"},
                {"sid": "PN0123456789abcdef0123456789abcdef", "phone_number": "+15550001111",
                 "sms_url": "https://old.example.com/sms", "sms_method": "GET",
                 "friendly_name": "(555) 000-1111", "capabilities": {"sms": true, "mms": true}},
            ],
            "page": 0, "page_size": 50, "first_page_uri": "", "next_page_uri": null,
        })))
        .mount(&server)
        .await;
    let found = provider.find_number(&number).await.unwrap().unwrap();
    assert_eq!(found.handle, "PN0123456789abcdef0123456789abcdef");
    assert_eq!(
        found.inbound_url.as_deref(),
        Some("https://old.example.com/sms")
    );
    assert_eq!(found.method.as_deref(), Some("GET"));
    assert!(
        !found.points_at("https://old.example.com/sms"),
        "GET is not POST"
    );
    let other = PhoneNumber::parse("+15550009999", None).unwrap();
    Mock::given(method("GET"))
        .and(path(format!("{account}/IncomingPhoneNumbers.json")))
        .and(query_param("PhoneNumber", "+15550009999"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"incoming_phone_numbers": [], "page": 0, "page_size": 50}),
        ))
        .mount(&server)
        .await;
    assert_eq!(provider.find_number(&other).await.unwrap(), None);

    // Pointing it: SmsUrl and SmsMethod, form-encoded, on the number.
    let url = "https://sms.example.com/hooks/acct/message";
    Mock::given(method("POST"))
        .and(path(format!(
            "{account}/IncomingPhoneNumbers/PN0123456789abcdef0123456789abcdef.json"
        )))
        .and(header("authorization", auth.as_str()))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string(
            "SmsUrl=https%3A%2F%2Fsms.example.com%2Fhooks%2Facct%2Fmessage&SmsMethod=POST",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "sid": "PN0123456789abcdef0123456789abcdef", "phone_number": "+15550001111",
            "sms_url": url, "sms_method": "POST",
        })))
        .expect(1)
        .mount(&server)
        .await;
    provider.point_number(&found, url).await.unwrap();

    // A sid that is not one never reaches a URL path.
    let mut bad = found.clone();
    bad.handle = "../../Messages".into();
    let e = provider.point_number(&bad, url).await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Rejected);

    // A number the account lost between the look-up and the change: 404
    // with Twilio's 20404.
    let gone = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(404).set_body_json(serde_json::json!({
            "code": 20404, "message": "The requested resource was not found",
            "more_info": "https://www.twilio.com/docs/errors/20404", "status": 404,
        })))
        .mount(&gone)
        .await;
    let e = fixture
        .provider(&gone.uri())
        .point_number(&found, url)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Rejected, "{e}");
    assert_eq!(e.code.as_deref(), Some("20404"));
}
