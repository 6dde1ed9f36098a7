//! End to end with all three carriers at once: a gateway configured with a
//! Twilio, a Telnyx and a SignalWire account, three users each bound to one,
//! a real Prosody, slixmpp users, and each carrier mocked with its own shapes.

use sms_over_xmpp_tests::*;
use std::time::Duration;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TELNYX_PATH: &str = "/v2/messages";
const SW_PATH: &str = "/api/laml/2010-04-01/Accounts/sw-project/Messages.json";

struct World {
    _prosody: Prosody,
    twilio: MockServer,
    telnyx: MockServer,
    signalwire: MockServer,
    gateway: Gateway,
    alice: User,
    bob: User,
    carol: User,
}

async fn world() -> World {
    let prosody = Prosody::start().await;
    let (twilio, telnyx, signalwire) = (
        MockServer::start().await,
        MockServer::start().await,
        MockServer::start().await,
    );
    for (server, p) in [
        (&twilio, twilio_messages_path()),
        (&signalwire, SW_PATH.to_owned()),
    ] {
        Mock::given(method("POST"))
            .and(path(p))
            .respond_with(
                ResponseTemplate::new(201)
                    .set_body_json(serde_json::json!({"sid": "LAML-1", "status": "queued"})),
            )
            .mount(server)
            .await;
    }
    Mock::given(method("POST"))
        .and(path(TELNYX_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"data": {
            "id": "40385f64-5717-4562-b3fc-2c963f66afa6", "to": [{"phone_number": "+15557654321", "status": "queued"}], "parts": 1,
        }})))
        .mount(&telnyx)
        .await;
    let extra = three_carriers(&twilio.uri(), &telnyx.uri(), &signalwire.uri());
    let gateway = Gateway::start(&gateway_config(&prosody, free_port(), &extra)).await;
    prosody
        .wait_component_logins(1, Duration::from_secs(10))
        .await;
    let alice = User::login(&prosody, "alice").await;
    let bob = User::login(&prosody, "bob").await;
    let carol = User::login(&prosody, "carol").await;
    World {
        _prosody: prosody,
        twilio,
        telnyx,
        signalwire,
        gateway,
        alice,
        bob,
        carol,
    }
}

fn form(r: &wiremock::Request) -> Vec<(String, String)> {
    form_urlencoded::parse(&r.body).into_owned().collect()
}

fn get<'a>(f: &'a [(String, String)], k: &str) -> Option<&'a str> {
    f.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

fn telnyx_received(from: &str, to: &str, text: &str, media: &[&str]) -> serde_json::Value {
    let media: Vec<_> = media
        .iter()
        .map(|u| serde_json::json!({"url": u, "content_type": "image/jpeg", "size": 5120}))
        .collect();
    serde_json::json!({
        "data": {"event_type": "message.received", "id": format!("evt-{text}"), "occurred_at": "2026-11-27T10:00:00.000+00:00",
            "payload": {"id": "b0c4f5f6-0000-4000-8000-00000000000a", "direction": "inbound",
                "from": {"phone_number": from}, "to": [{"phone_number": to, "status": "webhook_delivered"}],
                "text": text, "media": media}, "record_type": "event"},
        "meta": {"attempt": 1, "delivered_to": format!("{PUBLIC}/tx/message")},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_texts_through_their_own_carrier_both_ways() {
    let mut w = world().await;
    w.alice.send_chat(CONTACT, "a1", "via Twilio").await;
    w.bob.send_chat(CONTACT, "b1", "via Telnyx").await;
    w.carol.send_chat(CONTACT, "c1", "via SignalWire").await;

    let t = wait_requests(&w.twilio, &twilio_messages_path(), 1).await;
    assert_eq!(t.len(), 1);
    assert_eq!(get(&form(&t[0]), "Body"), Some("via Twilio"));
    assert_eq!(get(&form(&t[0]), "From"), Some("+15550001111"));

    let x = wait_requests(&w.telnyx, TELNYX_PATH, 1).await;
    assert_eq!(x.len(), 1);
    let json: serde_json::Value = serde_json::from_slice(&x[0].body).unwrap();
    assert_eq!(
        (
            json["from"].as_str(),
            json["to"].as_str(),
            json["text"].as_str()
        ),
        (
            Some("+15550002222"),
            Some("+15557654321"),
            Some("via Telnyx")
        )
    );
    assert_eq!(json["webhook_url"], format!("{PUBLIC}/tx/status"));
    assert_eq!(x[0].headers.get("authorization").unwrap(), "Bearer KEY-e2e");

    let s = wait_requests(&w.signalwire, SW_PATH, 1).await;
    assert_eq!(s.len(), 1);
    assert_eq!(get(&form(&s[0]), "Body"), Some("via SignalWire"));
    assert_eq!(
        get(&form(&s[0]), "StatusCallback"),
        Some("https://sms.example.com/hooks/sw/status")
    );

    // Replies, each through its carrier's webhook, reach the right user.
    let r = post_telnyx(
        &format!("{}/hooks/tx/message", w.gateway.http_base),
        &telnyx_received("+15557654321", "+15550002222", "hi bob", &[]),
    )
    .await;
    assert_eq!(r.status(), 200);
    let m = w.bob.expect_message().await;
    assert_eq!(
        (m.from(), m.body().as_deref()),
        (Some(CONTACT), Some("hi bob"))
    );

    let params = [
        ("MessageSid", "e3d7f1b2-0000-4000-8000-000000000001"),
        ("AccountSid", "sw-project"),
        ("From", "+15557654321"),
        ("To", "+15550003333"),
        ("Body", "hi carol"),
        ("NumMedia", "0"),
    ];
    let r = post_signalwire(
        &format!("{}/hooks/sw/message", w.gateway.http_base),
        &format!("{PUBLIC}/sw/message"),
        SW_KEY,
        &params,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/xml");
    let m = w.carol.expect_message().await;
    assert_eq!(
        (m.from(), m.body().as_deref()),
        (Some(CONTACT), Some("hi carol"))
    );

    // A text for Bob's number arriving on the SignalWire account is nobody's there.
    let params = [
        ("MessageSid", "x"),
        ("From", "+15557654321"),
        ("To", "+15550002222"),
        ("Body", "misrouted"),
    ];
    let r = post_signalwire(
        &format!("{}/hooks/sw/message", w.gateway.http_base),
        &format!("{PUBLIC}/sw/message"),
        SW_KEY,
        &params,
    )
    .await;
    assert_eq!(r.status(), 404);
    // Nothing else arrived for anyone.
    assert!(w
        .alice
        .next_message(Duration::from_millis(300))
        .await
        .is_none());
    assert!(w
        .bob
        .next_message(Duration::from_millis(100))
        .await
        .is_none());

    // Bad signatures on the other carriers: 403.
    let bad = reqwest::Client::new()
        .post(format!("{}/hooks/tx/message", w.gateway.http_base))
        .header("telnyx-timestamp", "1")
        .header("telnyx-signature-ed25519", "AAAA")
        .body(telnyx_received("+15557654321", "+15550002222", "forged", &[]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 403);
    let r = post_signalwire(
        &format!("{}/hooks/sw/message", w.gateway.http_base),
        &format!("{PUBLIC}/sw/message"),
        "wrong-key",
        &params,
    )
    .await;
    assert_eq!(r.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mms_both_ways_on_every_carrier() {
    let mut w = world().await;
    let url = "https://upload.example.com/a/photo.jpg";
    let oob = |id: &str| {
        format!("<message type='chat' to='{CONTACT}' id='{id}'><body>{url}</body><x xmlns='jabber:x:oob'><url>{url}</url></x></message>")
    };
    w.alice.send_raw(&oob("am")).await;
    w.bob.send_raw(&oob("bm")).await;
    w.carol.send_raw(&oob("cm")).await;

    let t = wait_requests(&w.twilio, &twilio_messages_path(), 1).await;
    assert_eq!(get(&form(&t[0]), "MediaUrl"), Some(url));
    assert_eq!(
        get(&form(&t[0]), "Body"),
        None,
        "the URL is not texted again"
    );
    let x = wait_requests(&w.telnyx, TELNYX_PATH, 1).await;
    let json: serde_json::Value = serde_json::from_slice(&x[0].body).unwrap();
    assert_eq!(json["media_urls"], serde_json::json!([url]));
    assert!(json.get("text").is_none());
    let s = wait_requests(&w.signalwire, SW_PATH, 1).await;
    assert_eq!(get(&form(&s[0]), "MediaUrl"), Some(url));

    // Inbound MMS: the text, then each picture as its own chat with
    // XEP-0066 data, at the gateway's own URL (the media suite tests the rest).
    let cdn = wiremock::MockServer::start().await;
    let bytes = [picture(300), picture(400)];
    let pics = [
        mount_telnyx_media(&cdn, "1.jpg", &bytes[0], "image/jpeg").await,
        mount_telnyx_media(&cdn, "2.png", &bytes[1], "image/png").await,
    ];
    let pics = [pics[0].as_str(), pics[1].as_str()];
    let r = post_telnyx(
        &format!("{}/hooks/tx/message", w.gateway.http_base),
        &telnyx_received("+15557654321", "+15550002222", "look", &pics),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(w.bob.expect_message().await.body().as_deref(), Some("look"));
    for (pic, want) in pics.iter().zip(&bytes) {
        let m = w.bob.expect_message().await;
        let url = m.body().expect("a link");
        assert!(url.starts_with(PUBLIC), "{url} (was {pic})");
        let x = m.child("x", "jabber:x:oob").expect("oob");
        assert_eq!(x.children().next().map(|u| u.text()), Some(url.clone()));
        let got = download(&w.gateway, &url).await;
        assert_eq!(&got.bytes().await.unwrap().to_vec(), want);
    }
    let twilio_pic = mount_twilio_media(
        &w.twilio,
        &cdn,
        "twilio-token",
        "ME0123456789abcdef0123456789abcdef",
        &bytes[0],
        "image/jpeg",
    )
    .await;
    let twilio_params = [
        ("MessageSid", "MM0123456789abcdef0123456789abcdef"),
        ("AccountSid", TWILIO_SID),
        ("From", "+15557654321"),
        ("To", "+15550001111"),
        ("Body", ""),
        ("NumMedia", "1"),
        ("MediaUrl0", twilio_pic.as_str()),
        ("MediaContentType0", "image/jpeg"),
    ];
    let sig = twilio_sign(
        "twilio-token",
        &format!("{PUBLIC}/main/message"),
        &twilio_params,
    );
    let r = post_form(
        &format!("{}/hooks/main/message", w.gateway.http_base),
        &twilio_params,
        Some(&sig),
    )
    .await;
    assert_eq!(r.status(), 200);
    let m = w.alice.expect_message().await;
    assert!(
        m.body().unwrap_or_default().ends_with(".jpg"),
        "no empty text chat before the picture: {m:?}"
    );
    assert!(m.child("x", "jabber:x:oob").is_some());

    // More media than SignalWire takes (8): an error naming the limit.
    let many: String = (0..9)
        .map(|i| {
            format!("<x xmlns='jabber:x:oob'><url>https://upload.example.com/{i}.jpg</url></x>")
        })
        .collect();
    w.carol
        .send_raw(&format!(
            "<message type='chat' to='{CONTACT}' id='too-many'><body>nine</body>{many}</message>"
        ))
        .await;
    let m = w.carol.expect_message().await;
    assert_eq!(m.id(), Some("too-many"));
    let (cond, text) = m.error().expect("an error");
    assert_eq!(cond, "not-acceptable");
    assert!(text.contains("At most 8 media"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telnyx_and_signalwire_reports_make_receipts_and_errors() {
    let mut w = world().await;
    w.bob.send_chat(CONTACT, "bob-1", "report me").await;
    w.carol.send_chat(CONTACT, "carol-1", "report me too").await;
    wait_requests(&w.telnyx, TELNYX_PATH, 1).await;
    wait_requests(&w.signalwire, SW_PATH, 1).await;
    // Reports may overtake the send results inside the gateway: it keeps
    // them until the results arrive.

    let finalized = serde_json::json!({
        "data": {"event_type": "message.finalized", "id": "evt-fin-1", "occurred_at": "2026-11-27T10:00:01.000+00:00",
            "payload": {"id": "40385f64-5717-4562-b3fc-2c963f66afa6", "to": [{"phone_number": "+15557654321", "status": "delivered"}], "errors": []}},
        "meta": {"attempt": 1},
    });
    let r = post_telnyx(
        &format!("{}/hooks/tx/status", w.gateway.http_base),
        &finalized,
    )
    .await;
    assert_eq!(r.status(), 200);
    let m = w.bob.expect_message().await;
    assert_eq!(
        m.child("received", "urn:xmpp:receipts")
            .and_then(|r| r.attr("id")),
        Some("bob-1")
    );

    let params = [
        ("MessageSid", "LAML-1"),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30005"),
    ];
    let r = post_signalwire(
        &format!("{}/hooks/sw/status", w.gateway.http_base),
        &format!("{PUBLIC}/sw/status"),
        SW_KEY,
        &params,
    )
    .await;
    assert_eq!(r.status(), 200);
    let m = w.carol.expect_message().await;
    assert_eq!(m.id(), Some("carol-1"));
    let (cond, text) = m.error().expect("an error");
    assert_eq!(cond, "recipient-unavailable");
    assert!(
        text.contains("30005") && text.contains("unknown destination handset"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_text_goes_out_as_ordered_requests() {
    let mut w = world().await;
    let long: String = (0..700).map(|i| format!("w{i:03} ")).collect(); // 3500 characters
    w.alice.send_chat(CONTACT, "long", &long).await;
    let reqs = wait_requests(&w.twilio, &twilio_messages_path(), 3).await;
    assert_eq!(reqs.len(), 3);
    let bodies: Vec<String> = reqs
        .iter()
        .map(|r| get(&form(r), "Body").unwrap().to_owned())
        .collect();
    assert!(bodies.iter().all(|b| b.chars().count() <= 1600));
    assert_eq!(bodies.concat(), long, "in order, nothing lost");
    // Telnyx splits by segments: 10 × 153 GSM-7 characters per request.
    w.bob.send_chat(CONTACT, "long2", &long).await;
    let reqs = wait_requests(&w.telnyx, TELNYX_PATH, 3).await;
    let texts: Vec<String> = reqs
        .iter()
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        texts.iter().all(|t| t.chars().count() <= 1530),
        "{:?}",
        texts.iter().map(|t| t.len()).collect::<Vec<_>>()
    );
    assert_eq!(texts.concat(), long);
}
