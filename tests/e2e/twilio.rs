//! End to end: a user's XMPP client ⇄ a real Prosody ⇄ the gateway ⇄ a
//! wiremock Twilio speaking Twilio's shapes. Every test starts its own
//! Prosody on loopback with random ports.

use sms_over_xmpp_tests::*;
use std::time::Duration;
use wiremock::matchers::{basic_auth, body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "e2e-auth-token";

fn twilio_extra(api_base: &str) -> String {
    twilio_alice(api_base, TOKEN, "")
}

struct World {
    prosody: Prosody,
    twilio: MockServer,
    gateway: Gateway,
    alice: User,
}

async fn world() -> World {
    let prosody = Prosody::start().await;
    let twilio = MockServer::start().await;
    let gateway = Gateway::start(&gateway_config(
        &prosody,
        free_port(),
        &twilio_extra(&twilio.uri()),
    ))
    .await;
    prosody
        .wait_component_logins(1, Duration::from_secs(10))
        .await;
    let alice = User::login(&prosody, "alice").await;
    World {
        prosody,
        twilio,
        gateway,
        alice,
    }
}

async fn mount_created(twilio: &MockServer, sid: &str) {
    Mock::given(method("POST"))
        .and(path(twilio_messages_path()))
        .and(basic_auth(TWILIO_SID, TOKEN))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
            "sid": sid, "status": "queued", "num_segments": "1", "error_code": null, "error_message": null,
        })))
        .mount(twilio)
        .await;
}

/// Waits until Twilio has received `n` message requests; returns their bodies.
async fn sends(twilio: &MockServer, n: usize) -> Vec<String> {
    for _ in 0..200 {
        let got: Vec<String> = twilio
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path() == twilio_messages_path())
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect();
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("Twilio did not receive {n} send(s)");
}

async fn post_status(
    w: &World,
    sid: &str,
    status: &str,
    error_code: Option<&str>,
) -> reqwest::Response {
    let mut params = vec![
        ("MessageSid", sid),
        ("AccountSid", TWILIO_SID),
        ("MessageStatus", status),
    ];
    if let Some(c) = error_code {
        params.push(("ErrorCode", c));
    }
    let sig = twilio_sign(TOKEN, &format!("{PUBLIC}/main/status"), &params);
    post_form(
        &format!("{}/hooks/main/status", w.gateway.http_base),
        &params,
        Some(&sig),
    )
    .await
}

fn inbound_params<'a>(sid: &'a str, body: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("MessageSid", sid),
        ("AccountSid", TWILIO_SID),
        ("From", "+15557654321"),
        ("To", "+15550001111"),
        ("Body", body),
        ("NumMedia", "0"),
    ]
}

async fn post_inbound(
    w: &World,
    sid: &str,
    text: &str,
    signature: Option<String>,
) -> reqwest::Response {
    let params = inbound_params(sid, text);
    let sig =
        signature.unwrap_or_else(|| twilio_sign(TOKEN, &format!("{PUBLIC}/main/message"), &params));
    post_form(
        &format!("{}/hooks/main/message", w.gateway.http_base),
        &params,
        Some(&sig),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_becomes_a_twilio_text_and_delivered_becomes_a_receipt() {
    let mut w = world().await;
    mount_created(&w.twilio, "SM00000000000000000000000000000001").await;
    w.alice
        .send_chat(CONTACT, "chat-1", "Hello from XMPP")
        .await;
    let bodies = sends(&w.twilio, 1).await;
    let form: Vec<(String, String)> = form_urlencoded::parse(bodies[0].as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("To"), Some("+15557654321"));
    assert_eq!(get("From"), Some("+15550001111"));
    assert_eq!(
        get("Body"),
        Some("Hello from XMPP"),
        "the xml:lang='en' body is read"
    );
    assert_eq!(
        get("StatusCallback"),
        Some("https://sms.example.com/hooks/main/status")
    );

    // Progress reports are quiet; "delivered" produces the receipt.
    assert_eq!(
        post_status(&w, "SM00000000000000000000000000000001", "sent", None)
            .await
            .status(),
        200
    );
    let r = post_status(&w, "SM00000000000000000000000000000001", "delivered", None).await;
    assert_eq!(r.status(), 200);
    let m = w.alice.expect_message().await;
    assert_eq!(m.from(), Some(CONTACT));
    let received = m.child("received", "urn:xmpp:receipts").expect("a receipt");
    assert_eq!(received.attr("id"), Some("chat-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_text_becomes_a_chat_and_is_answered_with_twiml() {
    let mut w = world().await;
    let r = post_inbound(
        &w,
        "SM00000000000000000000000000000002",
        "Hi from the phone ✓",
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/xml");
    assert!(r.text().await.unwrap().contains("<Response></Response>"));
    let m = w.alice.expect_message().await;
    assert_eq!(m.from(), Some(CONTACT));
    assert_eq!(m.type_(), "chat");
    assert_eq!(m.body().as_deref(), Some("Hi from the phone ✓"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_missing_signatures_get_403_and_deliver_nothing() {
    let mut w = world().await;
    let forged = post_inbound(
        &w,
        "SM3",
        "forged",
        Some("AAAAAAAAAAAAAAAAAAAAAAAAAAA=".into()),
    )
    .await;
    assert_eq!(forged.status(), 403);
    let params = inbound_params("SM4", "unsigned");
    let unsigned = post_form(
        &format!("{}/hooks/main/message", w.gateway.http_base),
        &params,
        None,
    )
    .await;
    assert_eq!(unsigned.status(), 403);
    // Signed for another URL (the status hook): also refused.
    let other = twilio_sign(
        TOKEN,
        &format!("{PUBLIC}/main/status"),
        &inbound_params("SM5", "elsewhere"),
    );
    assert_eq!(
        post_inbound(&w, "SM5", "elsewhere", Some(other))
            .await
            .status(),
        403
    );
    // The first chat Alice gets is the genuine one that follows.
    assert_eq!(post_inbound(&w, "SM6", "genuine", None).await.status(), 200);
    let m = w.alice.expect_message().await;
    assert_eq!(m.body().as_deref(), Some("genuine"));
}

async fn expect_error(user: &mut User, id: &str) -> (String, String) {
    let m = user.expect_message().await;
    assert_eq!(m.id(), Some(id), "{m:?}");
    m.error().unwrap_or_else(|| panic!("not an error: {m:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_comes_back_as_an_xmpp_error() {
    let mut w = world().await;
    Mock::given(method("POST"))
        .and(path(twilio_messages_path()))
        .and(body_string_contains("To=%2B15559990000"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "code": 21211, "message": "The 'To' number +15559990000 is not a valid phone number.",
            "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400,
        })))
        .mount(&w.twilio)
        .await;
    mount_created(&w.twilio, "SM00000000000000000000000000000007").await;

    // Not a phone number.
    w.alice
        .send_chat("pizza@sms.localhost", "bad-number", "hi")
        .await;
    let (cond, text) = expect_error(&mut w.alice, "bad-number").await;
    // Letters may be a sender name, which cannot receive texts (#28).
    assert_eq!(cond, "not-acceptable");
    assert!(
        text.contains("pizza") && text.contains("not a phone number"),
        "{text}"
    );

    // The carrier refuses it: its code and words reach the user.
    w.alice
        .send_chat("+15559990000@sms.localhost", "refused", "hi")
        .await;
    let (cond, text) = expect_error(&mut w.alice, "refused").await;
    assert_eq!(cond, "not-acceptable");
    assert!(
        text.contains("21211") && text.contains("not a valid phone number"),
        "{text}"
    );

    // Accepted, then reported undelivered: an error on the original id.
    w.alice.send_chat(CONTACT, "undelivered", "hi").await;
    sends(&w.twilio, 2).await;
    assert_eq!(
        post_status(
            &w,
            "SM00000000000000000000000000000007",
            "undelivered",
            Some("30003")
        )
        .await
        .status(),
        200
    );
    let (cond, text) = expect_error(&mut w.alice, "undelivered").await;
    assert_eq!(cond, "recipient-unavailable");
    assert!(
        text.contains("30003") && text.contains("unreachable destination handset"),
        "{text}"
    );

    // A sender the gateway does not know.
    let mut mallory = User::login(&w.prosody, "mallory").await;
    mallory.send_chat(CONTACT, "stranger", "hi").await;
    let (cond, _) = expect_error(&mut mallory, "stranger").await;
    assert_eq!(cond, "registration-required");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_carrier_is_retried_then_reported() {
    let prosody = Prosody::start().await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    // Retried for 3 s (the default is an hour), then reported.
    let extra = format!("{}\n[retry]\ndeadline_secs = 3\n", twilio_extra(&dead));
    let _gateway = Gateway::start(&gateway_config(&prosody, free_port(), &extra)).await;
    prosody
        .wait_component_logins(1, Duration::from_secs(10))
        .await;
    let mut alice = User::login(&prosody, "alice").await;
    alice.send_chat(CONTACT, "down", "hi").await;
    let (cond, text) = expect_error(&mut alice, "down").await;
    assert_eq!(cond, "remote-server-timeout");
    assert!(
        text.contains("unreachable") && text.contains("tried"),
        "{text}"
    );
    let tries: u32 = text
        .split("tried ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(tries >= 2, "retried before reporting: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_states_and_empty_bodies_are_not_texted() {
    let mut w = world().await;
    mount_created(&w.twilio, "SM00000000000000000000000000000008").await;
    w.alice
        .send_raw(&format!("<message type='chat' to='{CONTACT}'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"))
        .await;
    w.alice
        .send_raw(&format!("<message type='chat' to='{CONTACT}' id='e'><body xml:lang='en'>  </body><active xmlns='http://jabber.org/protocol/chatstates'/></message>"))
        .await;
    w.alice.send_chat(CONTACT, "real", "the only text").await;
    let bodies = sends(&w.twilio, 1).await;
    // Stanzas are handled in order, so had the first two been texted they
    // would be here before this one.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let bodies_after = sends(&w.twilio, 1).await;
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies_after.len(), 1, "{bodies_after:?}");
    assert!(bodies[0].contains("Body=the+only+text"));
    // No error came back for the chat state either.
    assert!(w
        .alice
        .next_message(Duration::from_millis(300))
        .await
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_front_door_and_unknown_paths() {
    let w = world().await;
    let root = reqwest::get(format!("{}/hooks/", w.gateway.http_base))
        .await
        .unwrap();
    assert_eq!(root.status(), 200);
    assert!(root.text().await.unwrap().contains("sms-over-xmpp"));
    // An account that does not exist answers as a known one answers an
    // unsigned request, so names cannot be probed (#27).
    let r = reqwest::Client::new()
        .post(format!("{}/hooks/nobody/message", w.gateway.http_base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    for (known, unknown) in [
        ("/hooks/main/nothing", "/hooks/nobody/nothing"),
        ("/hooks/main/message/extra", "/hooks/nobody/message/extra"),
    ] {
        let answer = |p: String| async move {
            let r = reqwest::Client::new().post(p).send().await.unwrap();
            (r.status(), r.text().await.unwrap())
        };
        assert_eq!(
            answer(format!("{}{known}", w.gateway.http_base)).await,
            answer(format!("{}{unknown}", w.gateway.http_base)).await,
            "{known} and {unknown} answer alike"
        );
    }
    for p in [
        "/hooks/main/nothing",
        "/elsewhere",
        "/hooks/main/message/extra",
    ] {
        let r = reqwest::Client::new()
            .post(format!("{}{p}", w.gateway.http_base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{p}");
    }
    let big = vec![b'a'; 1024 * 1024 + 1];
    let r = reqwest::Client::new()
        .post(format!("{}/hooks/main/message", w.gateway.http_base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_link_stays_up_past_the_read_timeout() {
    let prosody = Prosody::start().await;
    let twilio = MockServer::start().await;
    // keepalive 1 s: tokio-xmpp's read timeout is 3 s of silence.
    let extra = format!("{}\n", twilio_extra(&twilio.uri()));
    let cfg = gateway_config(&prosody, free_port(), &extra).replace(
        &format!("secret = \"{SECRET}\"\n"),
        &format!("secret = \"{SECRET}\"\nkeepalive_secs = 1\n"),
    );
    let gateway = Gateway::start(&cfg).await;
    prosody
        .wait_component_logins(1, Duration::from_secs(10))
        .await;
    // Idle for well over three read timeouts.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        prosody.component_logins(),
        1,
        "the link was re-established:\n{}",
        prosody.log()
    );
    let mut alice = User::login(&prosody, "alice").await;
    let params = inbound_params("SM9", "still here");
    let sig = twilio_sign(TOKEN, &format!("{PUBLIC}/main/message"), &params);
    let r = post_form(
        &format!("{}/hooks/main/message", gateway.http_base),
        &params,
        Some(&sig),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        alice.expect_message().await.body().as_deref(),
        Some("still here")
    );
    assert_eq!(prosody.component_logins(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_reconnects_after_prosody_restarts() {
    let mut w = world().await;
    mount_created(&w.twilio, "SM00000000000000000000000000000010").await;
    w.prosody.restart().await;
    w.prosody
        .wait_component_logins(2, Duration::from_secs(20))
        .await;
    // Both directions work over the new link.
    let mut alice = User::login(&w.prosody, "alice").await;
    assert_eq!(
        post_inbound(&w, "SM11", "after restart", None)
            .await
            .status(),
        200
    );
    assert_eq!(
        alice.expect_message().await.body().as_deref(),
        Some("after restart")
    );
    alice.send_chat(CONTACT, "after", "out after restart").await;
    let bodies = sends(&w.twilio, 1).await;
    assert!(bodies[0].contains("Body=out+after+restart"), "{bodies:?}");
    drop(w.alice);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_the_stream_cleanly() {
    let w = world().await;
    w.gateway.stop().await;
    // Prosody logs its own close after our </stream:stream> as "(stream
    // error)" whatever the cause (mod_component's session_close); an unclean
    // end would also log a stream error element or a processing error.
    let mut log = String::new();
    for _ in 0..100 {
        log = w.prosody.log();
        if log.contains("component disconnected: sms.localhost") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        log.contains("component disconnected: sms.localhost"),
        "{log}"
    );
    assert!(
        !log.contains("Disconnecting component, <stream:error>"),
        "{log}"
    );
    assert!(!log.contains("Error processing component stream"), "{log}");
}

/// The Twilio sends received so far (none is waited for).
async fn sends_now(twilio: &MockServer) -> usize {
    twilio
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == twilio_messages_path())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_start_and_the_carriers_codes_reach_the_user_plainly() {
    let mut w = world().await;
    // A send to +15557654322 is refused as Twilio refuses a number that
    // opted out (its error shape, code 21610); others are accepted.
    Mock::given(method("POST"))
        .and(path(twilio_messages_path()))
        .and(body_string_contains("To=%2B15557654322"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "code": 21610, "message": "Attempt to send to unsubscribed recipient",
            "more_info": "https://www.twilio.com/docs/errors/21610", "status": 400,
        })))
        .mount(&w.twilio)
        .await;
    mount_created(&w.twilio, "SM00000000000000000000000000000010").await;

    // STOP: the text, then what it means (#31).
    let stop = "SM00000000000000000000000000000011";
    assert_eq!(post_inbound(&w, stop, "Stop", None).await.status(), 200);
    assert_eq!(
        w.alice.expect_message().await.body().as_deref(),
        Some("Stop")
    );
    let notice = w.alice.expect_message().await;
    assert_eq!(notice.from(), Some(CONTACT));
    let notice = notice.body().unwrap_or_default();
    assert!(
        notice.contains("has opted out") && notice.contains("START"),
        "{notice}"
    );
    // A chat to them is refused at once, without asking Twilio.
    w.alice
        .send_chat(CONTACT, "after-stop", "are you there?")
        .await;
    let (cond, text) = expect_error(&mut w.alice, "after-stop").await;
    assert_eq!(cond, "forbidden");
    assert!(text.contains("opted out"), "{text}");
    assert_eq!(
        sends_now(&w.twilio).await,
        0,
        "no API call for an opted-out contact"
    );

    // START undoes it.
    let start = "SM00000000000000000000000000000012";
    assert_eq!(post_inbound(&w, start, "START", None).await.status(), 200);
    assert_eq!(
        w.alice.expect_message().await.body().as_deref(),
        Some("START")
    );
    let notice = w.alice.expect_message().await.body().unwrap_or_default();
    assert!(notice.contains("opted back in"), "{notice}");
    w.alice
        .send_chat(CONTACT, "after-start", "welcome back")
        .await;
    sends(&w.twilio, 1).await;

    // A STOP the gateway never saw: Twilio's 21610 marks the contact.
    let other = "+15557654322@sms.localhost";
    w.alice.send_chat(other, "refused", "hi").await;
    let (cond, text) = expect_error(&mut w.alice, "refused").await;
    assert_eq!(cond, "forbidden");
    assert!(
        text.contains("opted out") && text.contains("21610"),
        "{text}"
    );
    w.alice.send_chat(other, "refused-again", "hi").await;
    let (cond, _) = expect_error(&mut w.alice, "refused-again").await;
    assert_eq!(cond, "forbidden");
    assert_eq!(sends_now(&w.twilio).await, 2, "the second was not sent");

    // A delivery failure reads as a sentence, then Twilio's words and code.
    assert_eq!(
        post_status(
            &w,
            "SM00000000000000000000000000000010",
            "undelivered",
            Some("30007")
        )
        .await
        .status(),
        200
    );
    let (cond, text) = expect_error(&mut w.alice, "after-start").await;
    assert_eq!(cond, "recipient-unavailable");
    assert!(
        text.contains("blocked it as spam") && text.contains("30007"),
        "{text}"
    );
}

/// The `Body` of each Twilio send so far, once there are `n`.
async fn sent_bodies(twilio: &MockServer, n: usize) -> Vec<String> {
    sends(twilio, n)
        .await
        .iter()
        .map(|b| {
            form_urlencoded::parse(b.as_bytes())
                .find(|(k, _)| k == "Body")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactions_corrections_and_replies_read_as_phones_show_them() {
    let mut w = world().await;
    mount_created(&w.twilio, "SM00000000000000000000000000000020").await;
    let tonight = "are we still on for tonight at the usual place?";
    w.alice.send_chat(CONTACT, "r1", tonight).await;
    sent_bodies(&w.twilio, 1).await;

    // A reaction (XEP-0444) goes out as Google Messages words one (#31).
    w.alice
        .send_raw(&format!("<message type='chat' to='{CONTACT}' id='r2'><reactions xmlns='urn:xmpp:reactions:0' id='r1'><reaction>👍</reaction></reactions><store xmlns='urn:xmpp:hints'/></message>"))
        .await;
    let bodies = sent_bodies(&w.twilio, 2).await;
    assert_eq!(
        bodies[1],
        "Reacted 👍 to \u{201c}are we still on for tonight at the usual…\u{201d}"
    );
    // Taking it back sends nothing.
    w.alice
        .send_raw(&format!("<message type='chat' to='{CONTACT}' id='r3'><reactions xmlns='urn:xmpp:reactions:0' id='r1'/></message>"))
        .await;

    // A correction (XEP-0308) goes as a new text saying so.
    w.alice
        .send_raw(&format!("<message type='chat' to='{CONTACT}' id='r4'><body>are we still on for tomorrow?</body><replace xmlns='urn:xmpp:message-correct:0' id='r1'/></message>"))
        .await;
    // A reply (XEP-0461) quotes once, shortened (its XEP-0428 fallback).
    let quote = format!("> {tonight}\n");
    let end = quote.chars().count();
    w.alice
        .send_raw(&format!("<message type='chat' to='{CONTACT}' id='r5'><body>{}yes!</body><reply xmlns='urn:xmpp:reply:0' id='r1' to='{CONTACT}'/><fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'><body start='0' end='{end}'/></fallback></message>", esc(&quote)))
        .await;
    let bodies = sent_bodies(&w.twilio, 4).await;
    assert_eq!(bodies.len(), 4, "the removal sent nothing: {bodies:?}");
    // (The two go out at once: in either order.)
    assert!(
        bodies.contains(&"Correction: are we still on for tomorrow?".to_owned()),
        "{bodies:?}"
    );
    assert!(
        bodies.contains(&"> are we still on for tonight at the usual…\nyes!".to_owned()),
        "{bodies:?}"
    );

    // The phone's reaction becomes one on Alice's message, its words kept
    // as the fallback.
    let liked = format!("Liked \u{201c}{tonight}\u{201d}");
    let sid = "SM00000000000000000000000000000021";
    assert_eq!(post_inbound(&w, sid, &liked, None).await.status(), 200);
    let m = w.alice.expect_message().await;
    let reactions = m
        .child("reactions", "urn:xmpp:reactions:0")
        .unwrap_or_else(|| panic!("not a reaction: {m:?}"));
    assert_eq!(reactions.attr("id"), Some("r1"));
    assert_eq!(
        reactions
            .get_child("reaction", "urn:xmpp:reactions:0")
            .map(|r| r.text())
            .as_deref(),
        Some("👍")
    );
    assert!(m.child("fallback", "urn:xmpp:fallback:0").is_some());
    assert_eq!(m.body().as_deref(), Some(liked.as_str()));

    // Two of Alice's messages say the same: the phone's reaction stays text.
    for id in ["o1", "o2"] {
        w.alice.send_chat(CONTACT, id, "ok").await;
    }
    sent_bodies(&w.twilio, 6).await;
    let sid = "SM00000000000000000000000000000022";
    assert_eq!(
        post_inbound(&w, sid, "Loved \"ok\"", None).await.status(),
        200
    );
    let m = w.alice.expect_message().await;
    assert_eq!(m.body().as_deref(), Some("Loved \"ok\""));
    assert!(m.child("reactions", "urn:xmpp:reactions:0").is_none());

    // The feature is advertised.
    let info = w
        .alice
        .iq(
            "get",
            CONTACT,
            "d1",
            "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        )
        .await;
    assert!(
        String::from(&info).contains("urn:xmpp:reactions:0"),
        "{info:?}"
    );
}
