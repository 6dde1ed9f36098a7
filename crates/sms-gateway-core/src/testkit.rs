//! The provider contract suite (feature `testkit`): one set of checks every
//! provider crate runs against its own wiremock carrier, so the providers
//! agree on what the Gateway may rely on.
//!
//! A provider crate implements [`ContractFixture`] (how to build the provider,
//! how its carrier answers, how its webhooks are signed) and calls
//! [`run_contract`] from a `#[tokio::test]`.

use crate::message::{DeliveryStatus, OutboundSms};
use crate::phone::PhoneNumber;
use crate::provider::{ProviderErrorKind, PstnProvider, WebhookEvent, WebhookRequest};
use async_trait::async_trait;
use std::sync::Arc;
use wiremock::MockServer;

/// The number the contract sends from and receives on.
pub const USER_NUMBER: &str = "+15550001111";
/// The number of the other side.
pub const CONTACT_NUMBER: &str = "+15557654321";

/// What the contract suite needs to know about one provider.
#[async_trait]
pub trait ContractFixture: Send + Sync {
    /// The provider under test, calling the carrier API at `api_base`.
    fn provider(&self, api_base: &str) -> Arc<dyn PstnProvider>;
    /// Makes `server` accept a send the way the carrier does, answering with message id `id`.
    async fn mount_send_ok(&self, server: &MockServer, id: &str);
    /// Makes `server` refuse a send with HTTP `status` and the carrier's error `code`.
    async fn mount_send_error(&self, server: &MockServer, status: u16, code: &str, message: &str);
    /// The text and media URLs of a send request the server received, read
    /// from the carrier's wire format.
    fn sent(&self, request: &wiremock::Request) -> (String, Vec<String>);
    /// A correctly signed inbound-message webhook.
    fn inbound(&self, from: &str, to: &str, text: &str, media: &[&str]) -> WebhookRequest;
    /// A correctly signed delivery report for `message_id`, delivered or failed (`error_code`).
    fn status(&self, message_id: &str, delivered: bool, error_code: &str) -> WebhookRequest;
    /// A correctly signed webhook whose body is not a valid message.
    fn malformed(&self) -> WebhookRequest;
    /// The carrier's id for the `n`th message, in the carrier's format
    /// (Twilio's are `SM` and 32 hex digits, and a webhook naming another
    /// shape is refused).
    fn message_id(&self, n: u32) -> String {
        format!("msg-{n}")
    }
}

fn sms(text: &str, media: &[&str]) -> OutboundSms {
    OutboundSms {
        from: PhoneNumber::parse(USER_NUMBER, None).expect("valid"),
        to: PhoneNumber::parse(CONTACT_NUMBER, None).expect("valid"),
        body: text.into(),
        media: media.iter().map(|m| m.to_string()).collect(),
        cc: vec![],
    }
}

/// Changes one byte of every signature-looking header, keeping the body.
fn forge(mut req: WebhookRequest) -> WebhookRequest {
    for (name, value) in req.headers.iter_mut() {
        if name.contains("signature") || name == "authorization" {
            let mut bytes = value.clone().into_bytes();
            if let Some(b) = bytes.iter_mut().find(|b| b.is_ascii_alphanumeric()) {
                *b = if *b == b'A' { b'B' } else { b'A' };
            }
            *value = String::from_utf8(bytes).expect("ascii");
        }
    }
    req
}

fn without_signatures(mut req: WebhookRequest) -> WebhookRequest {
    req.headers
        .retain(|name, _| !(name.contains("signature") || name == "authorization"));
    req
}

/// Runs every check of the contract against `fixture`. Panics with the
/// failed check's name.
pub async fn run_contract(fixture: &dyn ContractFixture) {
    // Send text.
    let server = MockServer::start().await;
    fixture.mount_send_ok(&server, "id-text").await;
    let p = fixture.provider(&server.uri());
    let id = p
        .send(&sms("Hello ✓ world", &[]))
        .await
        .expect("send text: accepted");
    assert_eq!(id, "id-text", "send text: the carrier's id is returned");
    let reqs = server.received_requests().await.expect("recording");
    assert_eq!(reqs.len(), 1, "send text: one API request");
    assert_eq!(
        fixture.sent(&reqs[0]),
        ("Hello ✓ world".to_owned(), vec![]),
        "send text: text on the wire"
    );

    // Send media.
    let server = MockServer::start().await;
    fixture.mount_send_ok(&server, "id-media").await;
    let p = fixture.provider(&server.uri());
    let media = ["https://up.example/a.jpg", "https://up.example/b.png"];
    assert_eq!(
        p.send(&sms("pics", &media))
            .await
            .expect("send media: accepted"),
        "id-media"
    );
    let reqs = server.received_requests().await.expect("recording");
    let (text, urls) = fixture.sent(&reqs[0]);
    assert_eq!(
        (text.as_str(), urls.as_slice()),
        ("pics", &media.map(String::from)[..]),
        "send media: on the wire"
    );
    assert!(p.limits().max_media >= 1, "limits: media allowed");

    // Carrier 4xx: permanent, with the carrier's code.
    let server = MockServer::start().await;
    fixture
        .mount_send_error(&server, 400, "21211", "invalid number")
        .await;
    let e = fixture
        .provider(&server.uri())
        .send(&sms("x", &[]))
        .await
        .expect_err("carrier 4xx: an error");
    assert!(!e.is_temporary(), "carrier 4xx: permanent ({e})");
    assert_eq!(e.kind, ProviderErrorKind::Rejected, "carrier 4xx: rejected");
    assert_eq!(
        e.code.as_deref(),
        Some("21211"),
        "carrier 4xx: the carrier's code is kept"
    );

    // Carrier 5xx and 429: temporary.
    for status in [500, 503, 429] {
        let server = MockServer::start().await;
        fixture
            .mount_send_error(&server, status, "99999", "try later")
            .await;
        let e = fixture
            .provider(&server.uri())
            .send(&sms("x", &[]))
            .await
            .expect_err("carrier 5xx/429: an error");
        assert!(e.is_temporary(), "carrier {status}: temporary ({e})");
    }

    // Network failure: temporary.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let e = fixture
        .provider(&format!("http://127.0.0.1:{closed}"))
        .send(&sms("x", &[]))
        .await
        .expect_err("network: an error");
    assert!(e.is_temporary(), "network: temporary ({e})");

    let p = fixture.provider("http://127.0.0.1:9");

    // Inbound text.
    let reply = p
        .webhook(&fixture.inbound(CONTACT_NUMBER, USER_NUMBER, "Hi there ü", &[]))
        .expect("inbound text: accepted");
    assert!((200..300).contains(&reply.status), "inbound text: 2xx");
    match &reply.events[..] {
        [WebhookEvent::Inbound(m)] => {
            assert_eq!(
                (m.from.as_str(), m.to.as_str(), m.body.as_str()),
                (CONTACT_NUMBER, USER_NUMBER, "Hi there ü"),
                "inbound text"
            );
            assert!(m.media.is_empty(), "inbound text: no media");
            assert!(!m.id.is_empty(), "inbound text: an id to deduplicate on");
        }
        other => panic!("inbound text: one inbound event, got {other:?}"),
    }

    // Inbound media.
    let urls = ["https://carrier.example/m/1", "https://carrier.example/m/2"];
    let reply = p
        .webhook(&fixture.inbound(CONTACT_NUMBER, USER_NUMBER, "", &urls))
        .expect("inbound media: accepted");
    match &reply.events[..] {
        [WebhookEvent::Inbound(m)] => {
            let got: Vec<&str> = m.media.iter().map(|m| m.url.as_str()).collect();
            assert_eq!(got, urls, "inbound media: URLs in order");
        }
        other => panic!("inbound media: one inbound event, got {other:?}"),
    }

    // Status delivered / failed.
    let reply = p
        .webhook(&fixture.status(&fixture.message_id(1), true, ""))
        .expect("status delivered: accepted");
    match &reply.events[..] {
        [WebhookEvent::Status(r)] => {
            assert_eq!(
                (r.message_id.as_str(), &r.status),
                (fixture.message_id(1).as_str(), &DeliveryStatus::Delivered),
                "status delivered"
            )
        }
        other => panic!("status delivered: one status event, got {other:?}"),
    }
    let reply = p
        .webhook(&fixture.status(&fixture.message_id(2), false, "30003"))
        .expect("status failed: accepted");
    match &reply.events[..] {
        [WebhookEvent::Status(r)] => match &r.status {
            DeliveryStatus::Failed(why) => assert!(
                why.code.as_deref() == Some("30003") && why.reason.contains("30003"),
                "status failed: the carrier's code, apart and in its words: {why:?}"
            ),
            other => panic!("status failed: got {other:?}"),
        },
        other => panic!("status failed: one status event, got {other:?}"),
    }

    // Bad and missing signatures: 403, nothing delivered.
    for (what, req) in [
        (
            "forged signature",
            forge(fixture.inbound(CONTACT_NUMBER, USER_NUMBER, "forged", &[])),
        ),
        (
            "missing signature",
            without_signatures(fixture.inbound(CONTACT_NUMBER, USER_NUMBER, "unsigned", &[])),
        ),
        (
            "forged status",
            forge(fixture.status(&fixture.message_id(3), true, "")),
        ),
    ] {
        match p.webhook(&req) {
            Err(e) => assert_eq!(e.http_status(), 403, "{what}: 403"),
            Ok(r) => panic!("{what}: accepted with {:?}", r.events),
        }
    }
    // A signed body altered afterwards.
    let mut tampered = fixture.inbound(CONTACT_NUMBER, USER_NUMBER, "original", &[]);
    let body = String::from_utf8_lossy(&tampered.body).replace("original", "modified");
    tampered.body = body.into_bytes().into();
    assert_eq!(
        p.webhook(&tampered)
            .map(|r| r.events)
            .unwrap_err()
            .http_status(),
        403,
        "tampered body: 403"
    );

    // Malformed but signed: 400, nothing delivered.
    match p.webhook(&fixture.malformed()) {
        Err(e) => assert_eq!(e.http_status(), 400, "malformed: 400 ({e})"),
        Ok(r) => panic!("malformed: accepted with {:?}", r.events),
    }
}
