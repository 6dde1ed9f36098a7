//! Micro-benchmarks of the hot paths: a chat stanza becoming an outbound
//! text, each carrier's webhook becoming an inbound event, and each
//! signature check. `cargo bench -p sms-bench`.

use criterion::{criterion_group, criterion_main, Criterion};
use sms_gateway_core::{Config, Gateway, ProviderContext, Routing, WebhookRequest};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

/// What the XMPP process does with a stanza off the wire: parse, translate.
fn parse_message(xml: &str) -> sms_gateway_core::XmppEvent {
    let el: tokio_xmpp::minidom::Element = xml.parse().expect("well-formed");
    let m = tokio_xmpp::parsers::message::Message::try_from(el).expect("a message");
    sms_xmpp::message_to_event(&m).expect("a chat")
}

const CHAT: &str = "<message xmlns='jabber:component:accept' type='chat' id='abc' from='alice@example.com/phone' to='+15557654321@sms.example.com'><body xml:lang='en'>Hello there, this is a text of ordinary length.</body><request xmlns='urn:xmpp:receipts'/><active xmlns='http://jabber.org/protocol/chatstates'/></message>";

fn gateway() -> Gateway {
    let cfg = Config::from_toml(
        "[xmpp]\nserver = \"127.0.0.1:5347\"\ndomain = \"sms.example.com\"\nsecret = \"x\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://sms.example.com/hooks\"\n\
         [providers.main]\ntype = \"sandbox\"\ntoken = \"sandbox-test-token\"\n\
         [[users]]\njid = \"alice@example.com\"\nnumber = \"+15550001111\"\nprovider = \"main\"\n",
    )
    .unwrap();
    let providers = cfg
        .validate(&{
            let mut r = sms_gateway_core::ProviderRegistry::new();
            r.register("sandbox", sms_gateway_runtime::SandboxProvider::from_config);
            r
        })
        .unwrap();
    Gateway::new(Arc::new(Routing::new(&cfg, &providers)), Arc::default())
}

fn form_request(
    hook: &str,
    url: &str,
    header: &str,
    sig: String,
    params: &[(&str, &str)],
) -> WebhookRequest {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let mut headers = BTreeMap::new();
    headers.insert(header.to_owned(), sig);
    WebhookRequest {
        method: "POST".into(),
        hook: hook.into(),
        url: url.into(),
        headers,
        body: body.into(),
    }
}

const INBOUND: &[(&str, &str)] = &[
    ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
    ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
    ("From", "+15557654321"),
    ("To", "+15550001111"),
    ("Body", "Hello there, this is a text of ordinary length."),
    ("NumMedia", "0"),
];

fn owned(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn benches(c: &mut Criterion) {
    // A fresh Gateway per batch, so the chats it remembers do not pile up.
    c.bench_function("stanza to outbound text", |b| {
        b.iter_batched(
            gateway,
            |g| {
                let ev = parse_message(black_box(CHAT));
                let mut tx = g.begin().expect("a transaction");
                let actions = g.on_xmpp(&mut *tx, ev);
                tx.commit().expect("committed");
                black_box(actions)
            },
            criterion::BatchSize::SmallInput,
        )
    });

    // Twilio.
    let ctx = ProviderContext {
        account: "main".into(),
        webhook_base: "https://sms.example.com/hooks/main".into(),
    };
    let twilio = sms_pstn_twilio::TwilioProvider::from_config(
        &ctx,
        serde_json::json!({"account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": "tok"}),
    )
    .unwrap();
    let url = "https://sms.example.com/hooks/main/message";
    let sig = sms_pstn_laml::signature::twilio_signature("tok", url, &owned(INBOUND));
    let req = form_request("message", url, "x-twilio-signature", sig.clone(), INBOUND);
    c.bench_function("twilio webhook to inbound event", |b| {
        b.iter(|| black_box(twilio.webhook(black_box(&req)).unwrap()))
    });
    let params = owned(INBOUND);
    c.bench_function("twilio signature check", |b| {
        b.iter(|| {
            assert!(sms_pstn_laml::signature::verify_form(
                "tok",
                black_box(url),
                black_box(&params),
                black_box(&sig)
            ))
        })
    });

    // SignalWire.
    let sw = sms_pstn_signalwire::SignalWireProvider::from_config(
        &ctx,
        serde_json::json!({"space": "x.signalwire.com", "project_id": "p", "api_token": "t", "signing_key": "PSK"}),
    )
    .unwrap();
    let sw_sig = sms_pstn_laml::signature::twilio_signature("PSK", url, &owned(INBOUND));
    let sw_req = form_request("message", url, "x-signalwire-signature", sw_sig, INBOUND);
    c.bench_function("signalwire webhook to inbound event", |b| {
        b.iter(|| black_box(sw.webhook(black_box(&sw_req)).unwrap()))
    });
    let body = sw_req.body.clone();
    let raw_sig = {
        use hmac_sig::hex_sig;
        hex_sig("PSK", url, &body)
    };
    c.bench_function("signalwire raw-body signature check", |b| {
        b.iter(|| {
            assert!(sms_pstn_laml::signature::verify_raw_body_hex(
                "PSK",
                url,
                black_box(&body),
                black_box(&raw_sig)
            ))
        })
    });

    // Telnyx.
    use base64::Engine;
    use ed25519_dalek::Signer;
    let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let pk = base64::engine::general_purpose::STANDARD.encode(key.verifying_key().as_bytes());
    let telnyx = sms_pstn_telnyx::TelnyxProvider::from_config(
        &ctx,
        serde_json::json!({"api_key": "K", "public_key": pk}),
    )
    .unwrap();
    let event = serde_json::json!({"data": {"event_type": "message.received", "id": "b301ed3f-1490-491f-995f-6e64e69674d4",
        "payload": {"from": {"phone_number": "+15557654321"}, "to": [{"phone_number": "+15550001111"}], "text": "Hello there, this is a text of ordinary length.", "media": []}}})
    .to_string();
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let tsig = base64::engine::general_purpose::STANDARD
        .encode(key.sign(format!("{ts}|{event}").as_bytes()).to_bytes());
    let mut headers = BTreeMap::new();
    headers.insert("telnyx-signature-ed25519".to_owned(), tsig.clone());
    headers.insert("telnyx-timestamp".to_owned(), ts.clone());
    let treq = WebhookRequest {
        method: "POST".into(),
        hook: "message".into(),
        url: url.into(),
        headers,
        body: event.clone().into(),
    };
    c.bench_function("telnyx webhook to inbound event", |b| {
        b.iter(|| black_box(telnyx.webhook(black_box(&treq)).unwrap()))
    });
}

/// SignalWire's hex scheme, computed here the way the carrier does.
mod hmac_sig {
    pub fn hex_sig(key: &str, url: &str, body: &[u8]) -> String {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(url.as_bytes());
        mac.update(body);
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

criterion_group!(hot_paths, benches);
criterion_main!(hot_paths);
