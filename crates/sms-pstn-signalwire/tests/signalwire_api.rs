//! The SignalWire provider against a wiremock SignalWire LaML API, and its
//! two webhook signature schemes with vectors made outside our code.

use sms_gateway_core::{
    OutboundSms, PhoneNumber, ProviderContext, ProviderErrorKind, PstnProvider, WebhookEvent,
    WebhookRequest,
};
use sms_pstn_signalwire::SignalWireProvider;
use std::collections::BTreeMap;
use wiremock::matchers::{basic_auth, body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const BODY: &str = "MessageSid=f1e2d3c4-0000-4000-8000-000000000001&AccountSid=p-1&From=%2B15557654321&To=%2B15550002222&Body=Hi+via+SignalWire&NumMedia=0";
const URL: &str = "https://sms.example.com/hooks/sw/message";

fn provider(api_base: &str) -> SignalWireProvider {
    let ctx = ProviderContext {
        account: "sw".into(),
        webhook_base: "https://sms.example.com/hooks/sw".into(),
    };
    let v = serde_json::json!({
        "space": "example.signalwire.com", "project_id": "p-1", "api_token": "PT-token",
        "signing_key": "PSK_signing_key", "api_base": api_base,
    });
    SignalWireProvider::new(&ctx, serde_json::from_value(v).unwrap()).unwrap()
}

fn req(header: &str, sig: &str) -> WebhookRequest {
    req_with(header, sig, "application/x-www-form-urlencoded", BODY)
}

fn req_with(header: &str, sig: &str, content_type: &str, body: &str) -> WebhookRequest {
    let mut headers = BTreeMap::new();
    headers.insert(header.to_owned(), sig.to_owned());
    headers.insert("content-type".to_owned(), content_type.to_owned());
    WebhookRequest {
        method: "POST".into(),
        hook: "message".into(),
        url: URL.into(),
        headers,
        body: body.to_owned().into(),
    }
}

#[tokio::test]
async fn send_uses_the_laml_path_and_project_credentials() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/laml/2010-04-01/Accounts/p-1/Messages.json"))
        .and(basic_auth("p-1", "PT-token"))
        .and(body_string_contains("To=%2B15557654321"))
        .and(body_string_contains(
            "StatusCallback=https%3A%2F%2Fsms.example.com%2Fhooks%2Fsw%2Fstatus",
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
            "sid": "b3877c40-da60-4998-90ad-b792e98472af", "status": "queued"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let sms = OutboundSms {
        from: PhoneNumber::parse("+15550002222", None).unwrap(),
        to: PhoneNumber::parse("+15557654321", None).unwrap(),
        body: "hi".into(),
        media: vec![],
        cc: vec![],
    };
    let p = provider(&server.uri());
    assert_eq!(
        p.send(&sms).await.unwrap(),
        "b3877c40-da60-4998-90ad-b792e98472af"
    );
    let too_many = OutboundSms {
        media: (0..9).map(|i| format!("https://m/{i}")).collect(),
        ..sms
    };
    assert_eq!(
        p.send(&too_many).await.unwrap_err().kind,
        ProviderErrorKind::Rejected
    );
}

/// Scheme (a), Twilio's algorithm keyed with the signing key: made with PyPI
/// `twilio` 9.13.0, `RequestValidator("PSK_signing_key").compute_signature(URL, params)`.
/// Scheme (b), `hex(HMAC-SHA1(key, URL + raw body))`: made with Python's
/// `hmac.new(b"PSK_signing_key", URL + body, hashlib.sha1).hexdigest()`.
/// The scheme follows the body's Content-Type: a form is checked by (a)
/// only, any other body by (b) only.
#[test]
fn each_body_type_has_its_one_signature_scheme() {
    let p = provider("https://example.signalwire.com");
    for header in ["x-signalwire-signature", "x-twilio-signature"] {
        let reply = p
            .webhook(&req(header, "Dgtvn9sqN+abE5GSulXsct1NtXM="))
            .unwrap_or_else(|e| panic!("{header}: {e}"));
        assert_eq!(reply.content_type, "text/xml");
        let [WebhookEvent::Inbound(sms)] = &reply.events[..] else {
            panic!()
        };
        assert_eq!(sms.body, "Hi via SignalWire");
        assert_eq!(sms.to.as_str(), "+15550002222");
    }
    // Scheme (b) over the form body: Python's
    // hmac.new(b"PSK_signing_key", (URL + BODY).encode(), hashlib.sha1).hexdigest()
    // It was accepted before; one MAC must not stand for two framings.
    let raw_over_form = p
        .webhook(&req(
            "x-signalwire-signature",
            "ccaa3759209e139cce58fddf0dabaf35d74d89f1",
        ))
        .unwrap_err();
    assert_eq!(raw_over_form.http_status(), 403, "{raw_over_form}");
    // A JSON body signed by scheme (b) (Python, as above, over
    // URL + '{"MessageSid":"f1e2d3c4","Body":"json"}') is authentic but is
    // not a messaging webhook: 415, and never read as a form.
    const JSON: &str = r#"{"MessageSid":"f1e2d3c4","Body":"json"}"#;
    let json = p
        .webhook(&req_with(
            "x-signalwire-signature",
            "68fcf9eb597130e484593ba5e052445d262eb5f0",
            "application/json",
            JSON,
        ))
        .unwrap_err();
    assert_eq!(json.http_status(), 415, "{json}");
    // The form scheme's MAC on a JSON body is refused.
    let form_over_json = p
        .webhook(&req_with(
            "x-signalwire-signature",
            "Dgtvn9sqN+abE5GSulXsct1NtXM=",
            "application/json",
            BODY,
        ))
        .unwrap_err();
    assert_eq!(form_over_json.http_status(), 403, "{form_over_json}");
    for sig in [
        "Dgtvn9sqN+abE5GSulXsct1NtXN=",
        "ccaa3759209e139cce58fddf0dabaf35d74d89f0",
        "",
    ] {
        assert_eq!(
            p.webhook(&req("x-signalwire-signature", sig))
                .unwrap_err()
                .http_status(),
            403
        );
    }
    let mut none = req("x-other", "x");
    none.headers.remove("x-other");
    assert_eq!(p.webhook(&none).unwrap_err().http_status(), 403);
}

/// A form that names a field twice is refused with 400 before any check:
/// which `Body` would be read must never be in doubt.
#[test]
fn repeated_form_fields_are_refused() {
    let p = provider("https://example.signalwire.com");
    let body = format!("{BODY}&Body=second");
    let e = p
        .webhook(&req_with(
            "x-signalwire-signature",
            "x",
            "application/x-www-form-urlencoded",
            &body,
        ))
        .unwrap_err();
    assert_eq!(e.http_status(), 400, "{e}");
    assert!(e.to_string().contains("`Body` is repeated"), "{e}");
}
