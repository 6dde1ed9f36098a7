//! Group texts as group chats, end to end against real Prosody and ejabberd
//! with a slixmpp user who joins rooms with slixmpp's own XEP-0045 plugin,
//! and a Telnyx mock speaking the group messaging API (`group_mms`, `cc` in
//! inbound events, per-recipient status events).
//!
//! Bob's account is Telnyx's; Alice's is Twilio's, which has no group texts.

use sms_over_xmpp_tests::*;
use std::time::Duration;
use tokio_xmpp::minidom::Element;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const BOB: &str = "+15550002222";
const JANE: &str = "+15553334444";
const ANN: &str = "+15551112222";
const GROUP_PATH: &str = "/v2/messages/group_mms";
const GROUP_ID: &str = "403188fd-58c5-4557-a8de-1700a358d768";
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";

fn room() -> String {
    format!("{ANN},{JANE}@{DOMAIN}")
}

/// A Telnyx `message.received` for a group MMS to Bob: `cc` lists the
/// other participants and Bob's own number, as Telnyx's guide describes.
fn group_received(id: &str, from: &str, others: &[&str], text: &str) -> serde_json::Value {
    let cc: Vec<_> = others
        .iter()
        .chain([&BOB])
        .map(|n| serde_json::json!({"phone_number": n, "status": "delivered"}))
        .collect();
    serde_json::json!({
        "data": {"event_type": "message.received", "id": id, "occurred_at": "2026-11-27T10:00:00.000+00:00",
            "payload": {"id": format!("msg-{id}"), "direction": "inbound", "type": "MMS",
                "group_message_id": format!("grp-{id}"),
                "from": {"phone_number": from}, "to": [{"phone_number": BOB, "status": "webhook_delivered"}],
                "cc": cc, "subject": "Dinner", "text": text, "media": []}, "record_type": "event"},
        "meta": {"attempt": 1, "delivered_to": format!("{PUBLIC}/tx/message")},
    })
}

/// The next message for `user` that `pred` accepts, within 10 s (others
/// are skipped).
async fn message_where(user: &mut User, what: &str, pred: impl Fn(&Msg) -> bool) -> Msg {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = user
            .next_message(left)
            .await
            .unwrap_or_else(|| panic!("no {what} within 10 s"));
        if pred(&m) {
            return m;
        }
    }
}

fn has(m: &Msg, name: &str, ns: &str) -> bool {
    m.child(name, ns).is_some()
}

async fn post(gateway: &Gateway, hook: &str, event: &serde_json::Value) {
    let r = post_telnyx(&format!("{}/hooks/tx/{hook}", gateway.http_base), event).await;
    assert_eq!(r.status(), 200, "{hook}");
}

async fn suite(server: &dyn XmppServer) {
    let (twilio, telnyx) = (MockServer::start().await, MockServer::start().await);
    Mock::given(method("POST"))
        .and(path(GROUP_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"data": {
            "record_type": "message", "direction": "outbound", "id": GROUP_ID, "type": "MMS",
            "to": [{"phone_number": ANN, "status": "queued"}, {"phone_number": JANE, "status": "queued"}],
            "parts": 1,
        }})))
        .mount(&telnyx)
        .await;
    let extra = format!(
        "{}\n[caller_id]\n\"{JANE}\" = \"Jane Roe\"\n",
        three_carriers(&twilio.uri(), &telnyx.uri(), &twilio.uri())
    );
    let gateway = Gateway::start(&gateway_config(server, free_port(), &extra)).await;
    let mut bob = User::login(server, "bob").await;
    let mut alice = User::login(server, "alice").await;
    wait_for_component(&mut bob).await;
    let room = room();

    // An inbound group text while Bob is in no room: he is invited (XEP-0249
    // from the gateway, XEP-0045 from the room), with what was said.
    post(
        &gateway,
        "message",
        &group_received("evt-1", JANE, &[ANN], "who's in?"),
    )
    .await;
    let direct = message_where(&mut bob, "a direct invitation", |m| {
        has(m, "x", "jabber:x:conference")
    })
    .await;
    let x = direct.child("x", "jabber:x:conference").unwrap();
    assert_eq!(x.attr("jid"), Some(room.as_str()));
    assert!(
        x.attr("reason").unwrap().contains("Jane Roe: who's in?"),
        "{:?}",
        direct.0
    );
    let mediated = message_where(&mut bob, "a mediated invitation", |m| {
        m.child("x", MUC_USER)
            .is_some_and(|x| x.children().any(|c| c.name() == "invite"))
    })
    .await;
    assert_eq!(mediated.from(), Some(room.as_str()));

    // Bob joins later: the participants' presence, his own (110), the
    // text that waited (with its time), the subject.
    bob.join(&room, "bob").await;
    let occupants = presences_from(&mut bob, &room, Duration::from_millis(500)).await;
    let nicks: Vec<&str> = occupants
        .iter()
        .filter_map(|p| p.attr("from")?.split_once('/').map(|(_, n)| n))
        .collect();
    for nick in [ANN, "Jane Roe", "bob"] {
        assert!(nicks.contains(&nick), "{nick} not among {nicks:?}");
    }
    let history = message_where(&mut bob, "the history", |m| m.type_() == "groupchat").await;
    assert_eq!(
        (history.from(), history.body().as_deref()),
        (Some(format!("{room}/Jane Roe").as_str()), Some("who's in?"))
    );
    assert!(has(&history, "delay", "urn:xmpp:delay"), "{:?}", history.0);
    let subject = message_where(&mut bob, "the subject", |m| {
        m.0.children().any(|c| c.name() == "subject")
    })
    .await;
    assert_eq!(subject.from(), Some(room.as_str()));

    // A reply from the room: reflected with its id, and one group_mms
    // request to both participants.
    bob.send_raw(&format!(
        "<message type='groupchat' to='{}' id='g1'><body xml:lang='en'>me!</body></message>",
        esc(&room)
    ))
    .await;
    let mine = message_where(&mut bob, "the reflection", |m| m.id() == Some("g1")).await;
    assert_eq!(
        (mine.type_(), mine.from(), mine.body().as_deref()),
        (
            "groupchat",
            Some(format!("{room}/bob").as_str()),
            Some("me!")
        )
    );
    let sent = wait_requests(&telnyx, GROUP_PATH, 1).await;
    let json: serde_json::Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(json["from"], BOB);
    assert_eq!(json["to"], serde_json::json!([ANN, JANE]));
    assert_eq!(json["text"], "me!");

    // The second participant's text lands in the same room, straight to
    // Bob's session (no invitation now).
    post(
        &gateway,
        "message",
        &group_received("evt-2", ANN, &[JANE], "me too"),
    )
    .await;
    let m = message_where(&mut bob, "Ann's line", |m| m.type_() == "groupchat").await;
    assert_eq!(
        (m.from(), m.body().as_deref()),
        (Some(format!("{room}/{ANN}").as_str()), Some("me too"))
    );
    // A one-to-one text from her is still a one-to-one chat.
    let one = serde_json::json!({
        "data": {"event_type": "message.received", "id": "evt-3", "payload": {"id": "m3",
            "from": {"phone_number": ANN}, "to": [{"phone_number": BOB}], "cc": [], "text": "just you", "media": []}},
    });
    post(&gateway, "message", &one).await;
    let m = message_where(&mut bob, "Ann's chat", |m| m.body().is_some()).await;
    assert_eq!(
        (m.type_(), m.from(), m.body().as_deref()),
        (
            "chat",
            Some(format!("{ANN}@{DOMAIN}").as_str()),
            Some("just you")
        )
    );

    // The carrier could not reach Jane: the error names her, from the room,
    // for Bob's message; Ann's delivery says nothing.
    let finalized = serde_json::json!({
        "data": {"event_type": "message.finalized", "id": "evt-4", "payload": {"id": "rec-jane",
            "group_message_id": GROUP_ID,
            "to": [{"phone_number": JANE, "status": "delivery_failed"}],
            "errors": [{"code": "40300", "title": "Blocked", "detail": "Recipient opted out"}]}},
    });
    post(&gateway, "status", &finalized).await;
    let e = message_where(&mut bob, "the error", |m| m.type_() == "error").await;
    assert_eq!((e.id(), e.from()), (Some("g1"), Some(room.as_str())));
    let (condition, text) = e.error().unwrap();
    assert_eq!(condition, "recipient-unavailable");
    assert!(text.contains(JANE) && text.contains("opted out"), "{text}");

    // Alice's account is Twilio's: a group send is refused, saying why.
    alice.send_chat(&room, "a1", "hello group").await;
    let e = message_where(&mut alice, "Alice's error", |m| m.type_() == "error").await;
    let (condition, text) = e.error().unwrap();
    assert_eq!(condition, "not-acceptable");
    assert!(text.contains("groups.fan_out"), "{text}");

    // Bob leaves; a new text invites him again, and waits for him.
    bob.send_raw(&format!(
        "<presence type='unavailable' to='{}/bob'/>",
        esc(&room)
    ))
    .await;
    let _ = presences_from(&mut bob, &room, Duration::from_millis(500)).await;
    post(
        &gateway,
        "message",
        &group_received("evt-5", JANE, &[ANN], "still there?"),
    )
    .await;
    let again = message_where(&mut bob, "a new invitation", |m| {
        has(m, "x", "jabber:x:conference")
    })
    .await;
    assert!(again
        .child("x", "jabber:x:conference")
        .and_then(|x| x.attr("reason"))
        .unwrap()
        .contains("still there?"));
    // Writing to the room without being in it: refused.
    bob.send_raw(&format!(
        "<message type='groupchat' to='{}' id='g2'><body>x</body></message>",
        esc(&room)
    ))
    .await;
    let e = message_where(&mut bob, "the refusal", |m| m.id() == Some("g2")).await;
    assert_eq!(e.error().unwrap().0, "not-acceptable");
    // disco#info on the room says what it is.
    let info = bob
        .iq(
            "get",
            &room,
            "d1",
            "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        )
        .await;
    let features: Vec<&str> = info
        .children()
        .flat_map(|q: &Element| q.children())
        .filter_map(|f| f.attr("var"))
        .collect();
    for f in [
        "http://jabber.org/protocol/muc",
        "muc_persistent",
        "muc_membersonly",
        "muc_nonanonymous",
        "muc_hidden",
    ] {
        assert!(features.contains(&f), "{f} not in {features:?}");
    }
    bob.quit().await;
    alice.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_texts_on_prosody() {
    let prosody = Prosody::start().await;
    suite(&prosody).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_texts_on_ejabberd() {
    let ejabberd = Ejabberd::start().await;
    suite(&ejabberd).await;
}
