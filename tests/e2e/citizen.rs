//! The gateway as an XMPP citizen, against both Prosody and ejabberd, with a
//! slixmpp user: discovery, the XEP-0100 prompt, presence subscriptions,
//! vCards, ping, unknown and unreadable stanzas, caller ID names.

use sms_over_xmpp_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use tokio_xmpp::minidom::Element;

fn extra(lookup: &str) -> String {
    format!(
        r#"{SANDBOX_ALICE}
[caller_id]
"+15557654321" = "Jane Roe"
lookup = "{lookup}"
"#
    )
}

/// A gateway whose default region is the US, with caller ID from the config
/// and from a lookup script.
async fn start_gateway(server: &dyn XmppServer, dir: &tempfile::TempDir) -> Gateway {
    let lookup = dir.path().join("cnam-lookup");
    std::fs::write(&lookup, "#!/bin/sh\necho \"Lookup $FROM for $TO\"\n").unwrap();
    std::fs::set_permissions(&lookup, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = gateway_config(server, free_port(), &extra(&lookup.display().to_string()))
        .replace("default_prefix = \"+1\"", "default_region = \"US\"");
    Gateway::start(&cfg).await
}

async fn suite(server: &dyn XmppServer) {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start_gateway(server, &dir).await;
    let mut alice = User::login(server, "alice").await;
    wait_for_component(&mut alice).await;
    let name = server.name();

    // Discovery on the domain: a gateway of type sms with its features.
    let info = alice
        .iq(
            "get",
            "sms.localhost",
            "d1",
            "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        )
        .await;
    assert_eq!(info.attr("type"), Some("result"), "{name}: {info:?}");
    let query = child(&info, "query", "http://jabber.org/protocol/disco#info").expect("query");
    let identity = query
        .children()
        .find(|c| c.name() == "identity")
        .expect("identity");
    assert_eq!(
        (identity.attr("category"), identity.attr("type")),
        (Some("gateway"), Some("sms")),
        "{name}"
    );
    let features: Vec<&str> = query
        .children()
        .filter(|c| c.name() == "feature")
        .filter_map(|f| f.attr("var"))
        .collect();
    for f in [
        "jabber:iq:gateway",
        "urn:xmpp:receipts",
        "jabber:x:oob",
        "vcard-temp",
        "urn:xmpp:ping",
        "http://jabber.org/protocol/disco#info",
    ] {
        assert!(
            features.contains(&f),
            "{name}: feature {f} missing from {features:?}"
        );
    }
    // … on a contact, and disco#items.
    let info = alice
        .iq(
            "get",
            CONTACT,
            "d2",
            "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        )
        .await;
    assert_eq!(info.attr("type"), Some("result"), "{name}: {info:?}");
    let items = alice
        .iq(
            "get",
            "sms.localhost",
            "d3",
            "<query xmlns='http://jabber.org/protocol/disco#items'/>",
        )
        .await;
    assert_eq!(items.attr("type"), Some("result"), "{name}: {items:?}");

    // Ping, and an IQ nobody handles.
    let pong = alice
        .iq(
            "get",
            "sms.localhost",
            "p1",
            "<ping xmlns='urn:xmpp:ping'/>",
        )
        .await;
    assert_eq!(pong.attr("type"), Some("result"), "{name}: {pong:?}");
    let unknown = alice
        .iq(
            "set",
            "sms.localhost",
            "u1",
            "<query xmlns='urn:example:nothing-here'/>",
        )
        .await;
    assert_eq!(
        (unknown.attr("type"), condition(&unknown).as_deref()),
        (Some("error"), Some("service-unavailable")),
        "{name}"
    );

    // XEP-0100: the prompt, then numbers typed the way people type them.
    let prompt = alice
        .iq(
            "get",
            "sms.localhost",
            "g1",
            "<query xmlns='jabber:iq:gateway'/>",
        )
        .await;
    let q = child(&prompt, "query", "jabber:iq:gateway").expect("prompt query");
    assert!(
        child(q, "prompt", "jabber:iq:gateway").is_some()
            && child(q, "desc", "jabber:iq:gateway").is_some(),
        "{name}"
    );
    for (typed, want) in [
        ("(555) 765-4321", "+15557654321@sms.localhost"),
        ("555-765-4321", "+15557654321@sms.localhost"),
        ("+44 20 7946 0958", "+442079460958@sms.localhost"),
        ("12345", "12345@sms.localhost"),
    ] {
        let r = alice
            .iq(
                "set",
                "sms.localhost",
                "g2",
                &format!("<query xmlns='jabber:iq:gateway'><prompt>{typed}</prompt></query>"),
            )
            .await;
        let q = child(&r, "query", "jabber:iq:gateway")
            .unwrap_or_else(|| panic!("{name}: {typed}: {r:?}"));
        assert_eq!(
            child(q, "jid", "jabber:iq:gateway")
                .map(|j| j.text())
                .as_deref(),
            Some(want),
            "{name}: {typed}"
        );
    }
    let bad = alice
        .iq(
            "set",
            "sms.localhost",
            "g3",
            "<query xmlns='jabber:iq:gateway'><prompt>pizza</prompt></query>",
        )
        .await;
    assert_eq!(
        condition(&bad).as_deref(),
        Some("not-acceptable"),
        "{name}: {bad:?}"
    );

    // vCards: the configured name, then one from the lookup command.
    let v = alice
        .iq("get", CONTACT, "v1", "<vCard xmlns='vcard-temp'/>")
        .await;
    let card = child(&v, "vCard", "vcard-temp").unwrap_or_else(|| panic!("{name}: {v:?}"));
    assert_eq!(
        child(card, "FN", "vcard-temp").map(|f| f.text()).as_deref(),
        Some("Jane Roe"),
        "{name}"
    );
    // The lookup runs in the background (it never holds up the link): the
    // first answer may carry the number alone, a later one the name.
    let mut fns = vec![];
    for attempt in 0..20 {
        let v = alice
            .iq(
                "get",
                "+15559998888@sms.localhost",
                &format!("v2-{attempt}"),
                "<vCard xmlns='vcard-temp'/>",
            )
            .await;
        let card = child(&v, "vCard", "vcard-temp").unwrap_or_else(|| panic!("{name}: {v:?}"));
        let fn_ = child(card, "FN", "vcard-temp").map(|f| f.text());
        fns.push(fn_.clone());
        if fn_.as_deref() == Some("Lookup +15559998888 for +15550001111") {
            break;
        }
        assert_eq!(fn_.as_deref(), Some("+15559998888"), "{name}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        fns.last().cloned().flatten().as_deref(),
        Some("Lookup +15559998888 for +15550001111"),
        "{name}: {fns:?}"
    );

    // Subscribing to a contact: approved, available, and asked back with a
    // nick. The server turns our `subscribed` into a roster push
    // (subscription 'to') rather than passing the presence on.
    alice
        .send_raw(&format!("<presence type='subscribe' to='{CONTACT}'/>"))
        .await;
    let mut seen = vec![];
    let mut approved = false;
    for _ in 0..20 {
        seen.extend(presences_from(&mut alice, CONTACT, Duration::from_millis(500)).await);
        while let Some(push) = alice.next_of("iq", Duration::from_millis(1)).await {
            let item = child(&push, "query", "jabber:iq:roster")
                .and_then(|q| q.children().find(|i| i.attr("jid") == Some(CONTACT)));
            approved |= item.is_some_and(|i| matches!(i.attr("subscription"), Some("to" | "both")));
        }
        let types: Vec<&str> = seen
            .iter()
            .map(|p| p.attr("type").unwrap_or("available"))
            .collect();
        approved |= types.contains(&"subscribed");
        if approved && ["available", "subscribe"].iter().all(|t| types.contains(t)) {
            break;
        }
    }
    let types: Vec<&str> = seen
        .iter()
        .map(|p| p.attr("type").unwrap_or("available"))
        .collect();
    assert!(
        approved,
        "{name}: the subscription was not approved; presences {seen:?}"
    );
    for t in ["available", "subscribe"] {
        assert!(
            types.contains(&t),
            "{name}: no {t} presence from the contact in {types:?}"
        );
    }
    let ask = seen
        .iter()
        .find(|p| p.attr("type") == Some("subscribe"))
        .unwrap();
    let nick = ask
        .children()
        .find(|c| c.is("nick", "http://jabber.org/protocol/nick"))
        .map(|n| n.text());
    assert_eq!(
        nick.as_deref(),
        Some("Jane Roe"),
        "{name}: the subscription request carries the name"
    );
    alice
        .send_raw(&format!("<presence type='subscribed' to='{CONTACT}'/>"))
        .await;

    // Unsubscribing: the contact goes unavailable.
    alice
        .send_raw(&format!("<presence type='unsubscribe' to='{CONTACT}'/>"))
        .await;
    let mut gone = false;
    for _ in 0..20 {
        let ps = presences_from(&mut alice, CONTACT, Duration::from_millis(500)).await;
        if ps.iter().any(|p| p.attr("type") == Some("unavailable")) {
            gone = true;
            break;
        }
    }
    assert!(gone, "{name}: no unavailable presence after unsubscribe");

    // Someone who is not a user gets no presence answer at all.
    let mut mallory = User::login(server, "mallory").await;
    mallory
        .send_raw(&format!("<presence type='subscribe' to='{CONTACT}'/>"))
        .await;
    mallory
        .send_raw("<presence type='subscribe' to='sms.localhost'/>")
        .await;
    let from_us: Vec<Element> = presences_from(&mut mallory, CONTACT, Duration::from_secs(2)).await;
    assert!(
        from_us.is_empty(),
        "{name}: answered an unconfigured sender: {from_us:?}"
    );

    // A chat marker is never texted; the chat after it is.
    alice.send_raw(&format!("<message type='chat' to='{CONTACT}' id='mk'><displayed xmlns='urn:xmpp:chat-markers:0' id='x'/></message>")).await;
    alice.send_chat(CONTACT, "real", "after the marker").await;
    let http = reqwest::Client::new();
    let hooks = format!("{}/hooks/sandbox", gateway.http_base);
    let outbox = sandbox_outbox(&hooks, SANDBOX_AUTH).await;
    let bodies: Vec<&str> = outbox
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["after the marker"], "{name}");

    // The contact's name travels with its first chat only.
    for text in ["first", "second"] {
        let r = http
            .post(format!("{hooks}/message"))
            .header("authorization", SANDBOX_AUTH)
            .body(
                serde_json::json!({"from": "+15557654321", "to": "+15550001111", "body": text})
                    .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let first = alice.expect_message().await;
    assert_eq!(first.body().as_deref(), Some("first"), "{name}");
    assert_eq!(
        first
            .child("nick", "http://jabber.org/protocol/nick")
            .map(|n| n.text())
            .as_deref(),
        Some("Jane Roe"),
        "{name}"
    );
    let second = alice.expect_message().await;
    assert_eq!(second.body().as_deref(), Some("second"), "{name}");
    assert!(
        second
            .child("nick", "http://jabber.org/protocol/nick")
            .is_none(),
        "{name}"
    );

    // A stanza xmpp-parsers cannot read (a message type that does not exist)
    // is answered with an error, and the link stays up. Prosody passes such a
    // stanza on; ejabberd drops it itself, so only Prosody can show this.
    if name == "Prosody" {
        alice
            .send_raw(&format!(
                "<message type='bogus' to='{CONTACT}' id='bad1'><body>one</body></message>"
            ))
            .await;
        let m = alice.expect_message().await;
        assert_eq!(m.id(), Some("bad1"), "{name}: {m:?}");
        let (cond, text) = m
            .error()
            .unwrap_or_else(|| panic!("{name}: not an error: {m:?}"));
        assert_eq!(cond, "bad-request", "{name}: {text}");
        assert!(text.contains("could not be read"), "{name}: {text}");
    }

    // Still the same link, still answering.
    let pong = alice
        .iq(
            "get",
            "sms.localhost",
            "p2",
            "<ping xmlns='urn:xmpp:ping'/>",
        )
        .await;
    assert_eq!(pong.attr("type"), Some("result"), "{name}");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_citizen_on_prosody() {
    let prosody = Prosody::start().await;
    suite(&prosody).await;
    assert_eq!(prosody.component_logins(), 1, "the link was never replaced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_citizen_on_ejabberd() {
    let ejabberd = Ejabberd::start().await;
    suite(&ejabberd).await;
}
