//! The Twilio provider against a wiremock Twilio speaking Twilio's real
//! request and response shapes (PROVIDERS.md), and its webhook checks.

use sms_gateway_core::{
    DeliveryStatus, OutboundSms, PhoneNumber, ProviderContext, ProviderErrorKind, PstnProvider,
    WebhookEvent, WebhookRequest,
};
use sms_pstn_laml::signature::twilio_signature;
use sms_pstn_twilio::{TwilioConfig, TwilioProvider};
use std::collections::BTreeMap;
use std::time::Duration;
use wiremock::matchers::{basic_auth, body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "test-auth-token";

fn ctx() -> ProviderContext {
    ProviderContext {
        account: "main".into(),
        webhook_base: "https://sms.example.com/hooks/main".into(),
    }
}

fn provider(api_base: &str) -> TwilioProvider {
    let cfg: TwilioConfig = serde_json::from_value(serde_json::json!({
        "account_sid": SID, "auth_token": TOKEN, "api_base": api_base,
    }))
    .unwrap();
    TwilioProvider::new(&ctx(), cfg).unwrap()
}

fn sms(body: &str, media: &[&str]) -> OutboundSms {
    OutboundSms {
        from: PhoneNumber::parse("+15550001111", None).unwrap(),
        to: PhoneNumber::parse("+15557654321", None).unwrap(),
        body: body.into(),
        media: media.iter().map(|s| s.to_string()).collect(),
        cc: vec![],
    }
}

fn messages_path() -> String {
    format!("/2010-04-01/Accounts/{SID}/Messages.json")
}

#[tokio::test]
async fn send_posts_twilios_form_and_returns_the_sid() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .and(basic_auth(SID, TOKEN))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string_contains("To=%2B15557654321"))
        .and(body_string_contains("From=%2B15550001111"))
        .and(body_string_contains("Body=hello+%C3%BC"))
        .and(body_string_contains(
            "StatusCallback=https%3A%2F%2Fsms.example.com%2Fhooks%2Fmain%2Fstatus",
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
            "sid": "SM0123456789abcdef0123456789abcdef", "status": "queued",
            "num_segments": "1", "error_code": null, "error_message": null,
        })))
        .expect(1)
        .mount(&server)
        .await;
    let id = provider(&server.uri())
        .send(&sms("hello ü", &[]))
        .await
        .unwrap();
    assert_eq!(id, "SM0123456789abcdef0123456789abcdef");
}

#[tokio::test]
async fn media_go_as_repeated_media_url() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .and(body_string_contains(
            "MediaUrl=https%3A%2F%2Fup.example%2F1.jpg&MediaUrl=https%3A%2F%2Fup.example%2F2.jpg",
        ))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(serde_json::json!({"sid": "MM1", "status": "queued"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let id = provider(&server.uri())
        .send(&sms(
            "",
            &["https://up.example/1.jpg", "https://up.example/2.jpg"],
        ))
        .await
        .unwrap();
    assert_eq!(id, "MM1");
}

#[tokio::test]
async fn a_4xx_is_a_permanent_error_with_twilios_code() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "code": 21211, "message": "The 'To' number +15557654321 is not a valid phone number.",
            "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400,
        })))
        .mount(&server)
        .await;
    let err = provider(&server.uri())
        .send(&sms("x", &[]))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Rejected);
    assert!(!err.is_temporary());
    assert_eq!(err.code.as_deref(), Some("21211"));
    assert!(
        err.to_string().contains("not a valid phone number"),
        "{err}"
    );
}

#[tokio::test]
async fn a_5xx_and_a_429_are_temporary() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).set_body_string("upstream down"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "2")
                .set_body_json(serde_json::json!({"code": 20429, "message": "Too Many Requests", "status": 429})),
        )
        .mount(&server)
        .await;
    let p = provider(&server.uri());
    let err = p.send(&sms("x", &[])).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::CarrierError);
    assert!(err.is_temporary());
    let err = p.send(&sms("x", &[])).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::RateLimited);
    assert!(err.is_temporary());
    assert_eq!(err.code.as_deref(), Some("20429"));
    assert_eq!(err.retry_after, Some(Duration::from_secs(2)));
}

#[tokio::test]
async fn an_unreachable_api_is_a_temporary_network_error() {
    // Bind and drop a listener: nothing listens on that port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = provider(&format!("http://127.0.0.1:{port}"))
        .send(&sms("x", &[]))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Network);
    assert!(err.is_temporary());
    assert!(!err.to_string().contains(TOKEN));
}

fn signed(hook: &str, params: &[(&str, &str)], signature: Option<String>) -> WebhookRequest {
    let url = format!("https://sms.example.com/hooks/main/{hook}");
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let mut headers = BTreeMap::new();
    headers.insert(
        "content-type".into(),
        "application/x-www-form-urlencoded".into(),
    );
    if let Some(s) = signature {
        headers.insert("x-twilio-signature".into(), s);
    }
    WebhookRequest {
        method: "POST".into(),
        hook: hook.into(),
        url,
        headers,
        body: body.into(),
    }
}

fn sign(hook: &str, params: &[(&str, &str)]) -> String {
    let owned: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    twilio_signature(
        TOKEN,
        &format!("https://sms.example.com/hooks/main/{hook}"),
        &owned,
    )
}

const INBOUND: &[(&str, &str)] = &[
    ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
    ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
    ("From", "+15557654321"),
    ("To", "+15550001111"),
    ("Body", "Hello ünïcode & more"),
    ("NumMedia", "1"),
    ("MediaUrl0", "https://api.twilio.com/media/ME1"),
    ("MediaContentType0", "image/jpeg"),
];

#[test]
fn a_webhook_signed_by_the_official_sdk_is_accepted_and_answered_with_twiml() {
    let p = provider("https://api.twilio.com");
    // Signature from PyPI `twilio` 9.13.0 RequestValidator (see signature.rs).
    let reply = p
        .webhook(&signed(
            "message",
            INBOUND,
            Some("hwo3siWhtam2FxjD3iLx8HL5t3Y=".into()),
        ))
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type, "text/xml");
    assert!(reply.body.contains("<Response></Response>"));
    let [WebhookEvent::Inbound(sms)] = &reply.events[..] else {
        panic!("{:?}", reply.events)
    };
    assert_eq!(sms.body, "Hello ünïcode & more");
    assert_eq!(sms.media[0].url, "https://api.twilio.com/media/ME1");
}

#[test]
fn bad_or_missing_signatures_are_403() {
    let p = provider("https://api.twilio.com");
    for sig in [
        None,
        Some("hwo3siWhtam2FxjD3iLx8HL5t3Y".to_owned()),
        Some(sign("status", INBOUND)),
        Some(String::new()),
    ] {
        let err = p
            .webhook(&signed("message", INBOUND, sig.clone()))
            .unwrap_err();
        assert_eq!(err.http_status(), 403, "{sig:?}");
    }
}

#[test]
fn status_callbacks_and_malformed_bodies() {
    let p = provider("https://api.twilio.com");
    let params = [
        ("MessageSid", "SM1"),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30003"),
    ];
    let reply = p
        .webhook(&signed("status", &params, Some(sign("status", &params))))
        .unwrap();
    let [WebhookEvent::Status(r)] = &reply.events[..] else {
        panic!()
    };
    assert_eq!(r.message_id, "SM1");
    assert!(
        matches!(&r.status, DeliveryStatus::Failed(why) if why.code.as_deref() == Some("30003") && why.reason.contains("30003"))
    );

    // Correctly signed but missing fields: 400, not a panic, nothing delivered.
    let params = [("MessageSid", "SM1")];
    let err = p
        .webhook(&signed("status", &params, Some(sign("status", &params))))
        .unwrap_err();
    assert_eq!(err.http_status(), 400);

    let mut get = signed("status", &params, Some(sign("status", &params)));
    get.method = "GET".into();
    assert_eq!(p.webhook(&get).unwrap_err().http_status(), 405);
    let other = signed("outbox", &params, None);
    assert_eq!(p.webhook(&other).unwrap_err().http_status(), 404);
}

#[test]
fn config_errors_name_the_key() {
    let bad = |v: serde_json::Value| {
        TwilioProvider::from_config(&ctx(), v)
            .err()
            .expect("an error")
            .key
    };
    let key = |k: &str| Some(k.to_owned());
    assert_eq!(
        bad(serde_json::json!({"auth_token": "t"})),
        key("account_sid")
    );
    assert_eq!(
        bad(serde_json::json!({"account_sid": "XX1", "auth_token": "t"})),
        key("account_sid")
    );
    assert_eq!(
        bad(serde_json::json!({"account_sid": SID, "auth_token": ""})),
        key("auth_token")
    );
    assert_eq!(
        bad(serde_json::json!({"account_sid": SID, "auth_token": "t", "api_base": "ftp://x"})),
        key("api_base")
    );
    assert_eq!(
        bad(serde_json::json!({"account_sid": SID, "auth_token": "t", "authtoken": "t"})),
        key("authtoken")
    );
    let p = provider("https://api.twilio.com");
    assert!(!format!("{p:?}").contains(TOKEN));
}

/// The Messages API takes one `To`: the account has no group texts, and a
/// group text given anyway is refused before any request.
#[tokio::test]
async fn a_group_text_is_refused_without_a_request() {
    let server = MockServer::start().await;
    let p = provider(&server.uri());
    assert_eq!(p.limits().max_group, 0);
    let mut group = sms("hi all", &[]);
    group.cc = vec![PhoneNumber::parse("+15553334444", None).unwrap()];
    let e = p.send(&group).await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Rejected);
    assert!(e.message.contains("no group texts"), "{e}");
    assert!(server.received_requests().await.unwrap().is_empty());
}

/// #27: the LaML signature runs names and values together, so the fields
/// of a captured webhook can be regrouped into another one that verifies.
/// Here the webhook signed by the official SDK (above) becomes one whose
/// `MessageSid` swallows `NumMedia` — same signature, a new id, so it
/// would be taken as a new text. A Twilio SID is `SM`/`MM` and hex
/// digits: refused, 400. And a webhook for another account is refused.
#[test]
fn regrouped_fields_and_other_accounts_are_refused() {
    let p = provider("https://api.twilio.com");
    let regrouped: Vec<(&str, &str)> = INBOUND
        .iter()
        .filter(|(k, _)| *k != "NumMedia")
        .map(|&(k, v)| {
            if k == "MessageSid" {
                (k, "SM0123456789abcdef0123456789abcdefNumMedia1")
            } else {
                (k, v)
            }
        })
        .collect();
    // Still the SDK's signature: the concatenation did not change.
    assert_eq!(sign("message", &regrouped), "hwo3siWhtam2FxjD3iLx8HL5t3Y=");
    let err = p
        .webhook(&signed(
            "message",
            &regrouped,
            Some("hwo3siWhtam2FxjD3iLx8HL5t3Y=".into()),
        ))
        .unwrap_err();
    assert_eq!(err.http_status(), 400, "{err}");
    assert!(err.to_string().contains("MessageSid"), "{err}");

    let other: Vec<(&str, &str)> = INBOUND
        .iter()
        .map(|&(k, v)| {
            if k == "AccountSid" {
                (k, "ACffffffffffffffffffffffffffffffff")
            } else {
                (k, v)
            }
        })
        .collect();
    let err = p
        .webhook(&signed("message", &other, Some(sign("message", &other))))
        .unwrap_err();
    assert_eq!(err.http_status(), 403, "{err}");
    for sid in ["SM1", "MM0123456789abcdef0123456789abcdef"] {
        assert!(sms_pstn_twilio::is_message_sid(sid), "{sid}");
    }
    for sid in [
        "",
        "SM",
        "XX1",
        "SMabcNumMedia0",
        "SM-1",
        &format!("SM{}", "0".repeat(33)),
    ] {
        assert!(!sms_pstn_twilio::is_message_sid(sid), "{sid}");
    }
}

/// #27: `configure-carrier` gives Twilio the hook URL with connection
/// overrides (a fragment, which Twilio never sends), so Twilio retries a
/// webhook answered 503. A signature over the URL with the fragment and
/// one over the URL without it are both believed; neither alone opens the
/// door to anything else (a wrong key still fails).
#[test]
fn signatures_with_or_without_the_connection_overrides_are_believed() {
    let p = provider("https://api.twilio.com");
    let owned: Vec<(String, String)> = INBOUND
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let url = "https://sms.example.com/hooks/main/message";
    let with = twilio_signature(
        TOKEN,
        &format!("{url}{}", sms_pstn_twilio::CONNECTION_OVERRIDES),
        &owned,
    );
    assert!(p.webhook(&signed("message", INBOUND, Some(with))).is_ok());
    let without = twilio_signature(TOKEN, url, &owned);
    assert!(p
        .webhook(&signed("message", INBOUND, Some(without)))
        .is_ok());
    let wrong = twilio_signature(
        "another token",
        &format!("{url}{}", sms_pstn_twilio::CONNECTION_OVERRIDES),
        &owned,
    );
    let err = p
        .webhook(&signed("message", INBOUND, Some(wrong)))
        .unwrap_err();
    assert_eq!(err.http_status(), 403);
}
