//! Telnyx runs the provider contract suite against a wiremock Telnyx speaking
//! the v2 messages API, with webhooks signed by an Ed25519 key of the test's.

use async_trait::async_trait;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use sms_gateway_core::testkit::ContractFixture;
use sms_gateway_core::{ProviderContext, PstnProvider, WebhookRequest};
use sms_pstn_telnyx::TelnyxProvider;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

struct Telnyx {
    key: SigningKey,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Telnyx {
    fn signed(&self, hook: &str, body: serde_json::Value) -> WebhookRequest {
        let body = body.to_string();
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .to_string();
        let sig = self.key.sign(format!("{ts}|{body}").as_bytes());
        let mut headers = BTreeMap::new();
        headers.insert("content-type".into(), "application/json".into());
        headers.insert("telnyx-signature-ed25519".into(), b64(&sig.to_bytes()));
        headers.insert("telnyx-timestamp".into(), ts);
        WebhookRequest {
            method: "POST".into(),
            hook: hook.into(),
            url: format!("https://sms.example.com/hooks/tx/{hook}"),
            headers,
            body: body.into(),
        }
    }
}

#[async_trait]
impl ContractFixture for Telnyx {
    fn provider(&self, api_base: &str) -> Arc<dyn PstnProvider> {
        let ctx = ProviderContext {
            account: "tx".into(),
            webhook_base: "https://sms.example.com/hooks/tx".into(),
        };
        let v = serde_json::json!({
            "api_key": "KEY-contract", "public_key": b64(self.key.verifying_key().as_bytes()), "api_base": api_base,
        });
        Arc::new(TelnyxProvider::new(&ctx, serde_json::from_value(v).unwrap()).unwrap())
    }

    async fn mount_send_ok(&self, server: &MockServer, id: &str) {
        Mock::given(method("POST"))
            .and(path("/v2/messages"))
            .and(header("authorization", "Bearer KEY-contract"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(serde_json::json!({"data": {
                    "record_type": "message", "direction": "outbound", "id": id, "type": "SMS",
                    "from": {"phone_number": "+15550001111"},
                    "to": [{"phone_number": "+15557654321", "status": "queued"}],
                    "parts": 1, "errors": [],
                }})),
            )
            .mount(server)
            .await;
    }

    async fn mount_send_error(&self, server: &MockServer, status: u16, code: &str, message: &str) {
        Mock::given(method("POST"))
            .and(path("/v2/messages"))
            .respond_with(ResponseTemplate::new(status).set_body_json(
                serde_json::json!({"errors": [
                    {"code": code, "title": "Error", "detail": message},
                ]}),
            ))
            .mount(server)
            .await;
    }

    fn sent(&self, request: &wiremock::Request) -> (String, Vec<String>) {
        let v: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(v["from"], "+15550001111");
        assert_eq!(v["to"], "+15557654321");
        assert_eq!(v["webhook_url"], "https://sms.example.com/hooks/tx/status");
        let text = v["text"].as_str().unwrap_or_default().to_owned();
        let media = v["media_urls"]
            .as_array()
            .map(|a| a.iter().map(|u| u.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        (text, media)
    }

    fn inbound(&self, from: &str, to: &str, text: &str, media: &[&str]) -> WebhookRequest {
        let media: Vec<_> = media
            .iter()
            .map(|u| serde_json::json!({"url": u, "content_type": "image/jpeg", "size": 100}))
            .collect();
        self.signed("message", serde_json::json!({
            "data": {"event_type": "message.received", "id": "0ccc7b54-4df3-4bcb-a65a-3da1ecc997d7",
                "occurred_at": "2026-11-27T10:00:00.000+00:00", "record_type": "event",
                "payload": {"id": "b0c4f5f6-0000-4000-8000-000000000001", "direction": "inbound", "type": if media.is_empty() { "SMS" } else { "MMS" },
                    "from": {"phone_number": from}, "to": [{"phone_number": to, "status": "webhook_delivered"}],
                    "text": text, "media": media}},
            "meta": {"attempt": 1, "delivered_to": "https://sms.example.com/hooks/tx/message"},
        }))
    }

    fn status(&self, message_id: &str, delivered: bool, error_code: &str) -> WebhookRequest {
        let (status, errors) = if delivered {
            ("delivered", serde_json::json!([]))
        } else {
            (
                "delivery_failed",
                serde_json::json!([{"code": error_code, "title": "Delivery failed", "detail": "Unreachable"}]),
            )
        };
        self.signed("status", serde_json::json!({
            "data": {"event_type": "message.finalized", "id": "e5b6a1b6-0000-4000-8000-000000000002",
                "payload": {"id": message_id, "to": [{"phone_number": "+15557654321", "status": status}], "errors": errors}},
            "meta": {"attempt": 1},
        }))
    }

    fn malformed(&self) -> WebhookRequest {
        self.signed("message", serde_json::json!({"data": {"event_type": "message.received", "id": "x", "payload": {"to": []}}}))
    }
}

#[tokio::test]
async fn telnyx_meets_the_provider_contract() {
    let fixture = Telnyx {
        key: SigningKey::from_bytes(&[7u8; 32]),
    };
    sms_gateway_core::testkit::run_contract(&fixture).await;
}

/// A group text goes to `POST /v2/messages/group_mms` with every participant
/// in `to` (the request of Telnyx's group messaging guide), and `send`
/// returns the group's id, which its status events carry.
#[tokio::test]
async fn a_group_text_is_one_group_mms_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/messages/group_mms"))
        .and(header("authorization", "Bearer KEY-contract"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"data": {
            "record_type": "message", "direction": "outbound", "id": "403188fd-58c5-4557-a8de-1700a358d768",
            "type": "MMS", "from": "+15550001111",
            "to": [{"phone_number": "+15551112222", "status": "queued"}, {"phone_number": "+15553334444", "status": "queued"}],
            "text": "Greetings", "media": [], "parts": 1,
        }})))
        .expect(1)
        .mount(&server)
        .await;
    let t = Telnyx {
        key: SigningKey::from_bytes(&[9; 32]),
    };
    let p = t.provider(&server.uri());
    let n = |s: &str| sms_gateway_core::PhoneNumber::parse(s, None).unwrap();
    let sms = sms_gateway_core::OutboundSms {
        from: n("+15550001111"),
        to: n("+15551112222"),
        body: "Greetings".into(),
        media: vec![],
        cc: vec![n("+15553334444")],
    };
    assert_eq!(
        p.send(&sms).await.unwrap(),
        "403188fd-58c5-4557-a8de-1700a358d768"
    );
    let req = &server.received_requests().await.unwrap()[0];
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body["from"], "+15550001111");
    assert_eq!(
        body["to"],
        serde_json::json!(["+15551112222", "+15553334444"])
    );
    assert_eq!(body["text"], "Greetings");
    assert_eq!(p.limits().max_group, 8);
    // Nine numbers: more than Telnyx takes, refused before any request.
    let mut big = sms.clone();
    big.cc = (0..8).map(|i| n(&format!("+1555000{i:04}"))).collect();
    assert!(p.send(&big).await.is_err());
}
