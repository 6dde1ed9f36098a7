//! What real clients show, against Prosody and ejabberd with a slixmpp
//! user: presence from a full JID, once per change, and `unavailable` at a
//! clean stop (available again after the restart); contacts put in the
//! roster with their names through XEP-0356 (ejabberd's mod_privilege,
//! Prosody's from prosody-modules); vCard4; replies from the JID the user
//! wrote to; registration (XEP-0077) with an admin's approval; and every
//! ad-hoc command (XEP-0050) as user, admin and stranger.

use sms_over_xmpp_tests::*;
use std::time::Duration;
use tokio_xmpp::minidom::Element;

const COMMANDS: &str = "http://jabber.org/protocol/commands";
const DATA: &str = "jabber:x:data";

fn config(server: &dyn XmppServer, store: &std::path::Path, http: u16) -> String {
    gateway_config(
        server,
        http,
        &format!(
            r#"
[store]
path = "{}"

[providers.sandbox]
type = "sandbox"
token = "quickstart-sandbox-token"
registration_numbers = ["+15550002222"]

[[users]]
jid = "alice@localhost"
number = "+15550001111"
provider = "sandbox"

[registration]
open_to = ["localhost"]
approval = true

[admins]
jids = ["carol@localhost"]

[caller_id]
"+15557654321" = "Jane Roe"
"#,
            store.display()
        ),
    )
}

/// Roster pushes (`iq type='set'` with a roster query) for `jid` within `within`.
async fn roster_push(user: &mut User, jid: &str, within: Duration) -> Option<Element> {
    let deadline = tokio::time::Instant::now() + within;
    while let Some(iq) = user
        .next_of(
            "iq",
            deadline.saturating_duration_since(tokio::time::Instant::now()),
        )
        .await
    {
        let item = child(&iq, "query", "jabber:iq:roster")
            .and_then(|q| q.children().find(|i| i.attr("jid") == Some(jid)))
            .cloned();
        if iq.attr("type") == Some("set") && item.is_some() {
            return item;
        }
    }
    None
}

/// Runs command `node` (first step), then submits `fields`; the answers.
async fn command(
    user: &mut User,
    node: &str,
    fields: &[(&str, &str)],
    id: &str,
) -> (Element, Option<Element>) {
    let first = user
        .iq(
            "set",
            DOMAIN,
            &format!("{id}-1"),
            &format!("<command xmlns='{COMMANDS}' node='{node}' action='execute'/>"),
        )
        .await;
    let Some(cmd) = child(&first, "command", COMMANDS) else {
        return (first, None);
    };
    if cmd.attr("status") != Some("executing") {
        return (first, None);
    }
    let session = cmd.attr("sessionid").unwrap_or_default().to_owned();
    let values: String = fields
        .iter()
        .map(|(var, v)| format!("<field var='{var}'><value>{}</value></field>", esc(v)))
        .collect();
    let second = user
        .iq(
            "set",
            DOMAIN,
            &format!("{id}-2"),
            &format!(
                "<command xmlns='{COMMANDS}' node='{node}' sessionid='{session}' action='complete'><x xmlns='{DATA}' type='submit'>{values}</x></command>"
            ),
        )
        .await;
    (first, Some(second))
}

fn note(iq: &Element) -> String {
    child(iq, "command", COMMANDS)
        .and_then(|c| child(c, "note", COMMANDS))
        .map(|n| n.text())
        .unwrap_or_default()
}

async fn post_sms(gateway: &Gateway, from: &str, to: &str, body: &str) {
    let r = reqwest::Client::new()
        .post(format!("{}/hooks/sandbox/message", gateway.http_base))
        .header("authorization", SANDBOX_AUTH)
        .body(serde_json::json!({"from": from, "to": to, "body": body}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Whether the server's XEP-0356 roster sets work: Prosody's mod_privilege
/// yes; Debian 12's ejabberd 23.01 no (fixed in 23.10, its issue #3942).
fn roster_works(server: &str) -> bool {
    server == "Prosody"
}

async fn suite(server: &dyn XmppServer) {
    let name = server.name();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.db");
    let cfg = config(server, &store, free_port());
    let gateway = Gateway::start(&cfg).await;
    let mut alice = User::login(server, "alice").await;
    wait_for_component(&mut alice).await;

    // --- Presence: from a full JID, once per subscription.
    let other = "+15553334444@sms.localhost";
    alice
        .send_raw(&format!("<presence type='subscribe' to='{other}'/>"))
        .await;
    let seen = presences_from(&mut alice, other, Duration::from_secs(2)).await;
    let available: Vec<&Element> = seen.iter().filter(|p| p.attr("type").is_none()).collect();
    assert_eq!(
        available.len(),
        1,
        "{name}: one available presence per subscription: {seen:?}"
    );
    assert_eq!(
        available[0].attr("from"),
        Some(format!("{other}/sms").as_str()),
        "{name}: presence from a full JID"
    );
    // Approving the contact's own request announces nothing again.
    alice
        .send_raw(&format!("<presence type='subscribed' to='{other}'/>"))
        .await;
    let again = presences_from(&mut alice, other, Duration::from_secs(1)).await;
    assert!(
        again.iter().all(|p| p.attr("type").is_some()),
        "{name}: announced again: {again:?}"
    );

    // --- One person, one address (#28): a chat to the number as dialled is
    // sent, the user is told once (in that window) that the contact's
    // address is the E.164 one, the roster gets that address with its
    // caller-ID name, and the reply comes from it.
    let dialled = "5557654321@sms.localhost";
    let canonical = "+15557654321@sms.localhost";
    alice.send_chat(dialled, "c1", "hello Jane").await;
    let told = loop {
        let m = alice.expect_message().await;
        if m.body().is_some() {
            break m;
        }
    };
    assert_eq!(told.from(), Some(dialled), "{name}: {told:?}");
    assert!(
        told.body().unwrap_or_default().contains(canonical),
        "{name}: {told:?}"
    );
    if roster_works(name) {
        let item = roster_push(&mut alice, canonical, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| {
                panic!(
                    "{name}: no roster push for {canonical}; log:\n{}",
                    server.log()
                )
            });
        assert_eq!(item.attr("name"), Some("Jane Roe"), "{name}: {item:?}");
        assert_eq!(item.attr("subscription"), Some("both"), "{name}: {item:?}");
        assert_eq!(
            child(&item, "group", "jabber:iq:roster")
                .map(|g| g.text())
                .as_deref(),
            Some("SMS"),
            "{name}"
        );
        let p = presences_from(&mut alice, canonical, Duration::from_secs(2)).await;
        assert!(
            p.iter()
                .any(|p| p.attr("type").is_none()
                    && p.attr("from") == Some(&format!("{canonical}/sms"))),
            "{name}: the new contact is online: {p:?}"
        );
    } else {
        // ejabberd 23.01 grants the privilege but fails the roster set
        // (its issue #3942): the contact asks to be added, with its name.
        let p = presences_from(&mut alice, canonical, Duration::from_secs(5)).await;
        let ask = p
            .iter()
            .find(|p| p.attr("type") == Some("subscribe"))
            .unwrap_or_else(|| panic!("{name}: no request to be added: {p:?}"));
        assert_eq!(
            child(ask, "nick", "http://jabber.org/protocol/nick")
                .map(|n| n.text())
                .as_deref(),
            Some("Jane Roe"),
            "{name}"
        );
    }
    post_sms(&gateway, "+15557654321", "+15550001111", "hi Alice").await;
    let reply = loop {
        let m = alice.expect_message().await;
        if m.body().is_some() {
            break m;
        }
    };
    assert_eq!(
        (reply.from(), reply.body().as_deref()),
        (Some(canonical), Some("hi Alice")),
        "{name}: the reply comes from the contact's one address"
    );

    // --- vCard4 over PubSub (XEP-0292) with the name.
    let v = alice
        .iq(
            "get",
            "+15557654321@sms.localhost",
            "v4",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:vcard4'/></pubsub>",
        )
        .await;
    assert_eq!(v.attr("type"), Some("result"), "{name}: {v:?}");
    let xml = String::from(&v);
    assert!(
        xml.contains("<text>Jane Roe</text>") && xml.contains("tel:+15557654321"),
        "{name}: {xml}"
    );

    // --- Commands: who sees what.
    let items = |iq: &Element| -> Vec<String> {
        child(iq, "query", "http://jabber.org/protocol/disco#items")
            .map(|q| {
                q.children()
                    .filter_map(|i| i.attr("node"))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let list = alice
        .iq(
            "get",
            DOMAIN,
            "items",
            &format!("<query xmlns='http://jabber.org/protocol/disco#items' node='{COMMANDS}'/>"),
        )
        .await;
    let nodes = items(&list);
    assert!(
        nodes.contains(&"new-chat".to_owned()) && !nodes.contains(&"add-user".to_owned()),
        "{name}: {nodes:?}"
    );
    let info = alice
        .iq(
            "get",
            DOMAIN,
            "info",
            "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        )
        .await;
    let info = String::from(&info);
    assert!(
        info.contains(COMMANDS) && info.contains("jabber:iq:register"),
        "{name}: {info}"
    );

    // New chat by number, as typed; bad input names the field.
    let (_, done) = command(
        &mut alice,
        "new-chat",
        &[("number", "(555) 888-9999")],
        "nc",
    )
    .await;
    let done = done.expect("a form first");
    assert_eq!(
        child(&done, "command", COMMANDS).and_then(|c| c.attr("status")),
        Some("completed"),
        "{name}: {done:?}"
    );
    assert!(
        note(&done).contains("+15558889999@sms.localhost"),
        "{name}: {}",
        note(&done)
    );
    let new = "+15558889999@sms.localhost";
    if roster_works(name) {
        assert!(
            roster_push(&mut alice, new, Duration::from_secs(5))
                .await
                .is_some(),
            "{name}: New chat puts the contact in the roster"
        );
    } else {
        let p = presences_from(&mut alice, new, Duration::from_secs(3)).await;
        assert!(
            p.iter().any(|p| p.attr("type") == Some("subscribe")),
            "{name}: New chat has the contact ask to be added: {p:?}"
        );
    }
    let (_, bad) = command(&mut alice, "new-chat", &[("number", "call me")], "nc-bad").await;
    let bad = bad.unwrap();
    assert_eq!(
        condition(&bad).as_deref(),
        Some("bad-request"),
        "{name}: {bad:?}"
    );
    assert!(
        error_text(&bad).contains("'number'"),
        "{name}: {}",
        error_text(&bad)
    );

    // My settings: caller ID off.
    let (first, done) = command(&mut alice, "settings", &[("caller_id", "0")], "set").await;
    assert!(
        String::from(&first).contains("+15550001111"),
        "{name}: the form shows the number"
    );
    assert!(note(&done.unwrap()).contains("Caller ID is off"), "{name}");

    // A stranger may run nothing; a user no admin command.
    let mut mallory = User::login(server, "mallory").await;
    let (refused, _) = command(&mut mallory, "new-chat", &[], "m1").await;
    assert_eq!(
        condition(&refused).as_deref(),
        Some("forbidden"),
        "{name}: {refused:?}"
    );
    let (refused, _) = command(&mut alice, "list-users", &[], "a-list").await;
    assert_eq!(
        condition(&refused).as_deref(),
        Some("forbidden"),
        "{name}: {refused:?}"
    );

    // --- Registration: Bob picks the offered number; it waits for Carol.
    let mut carol = User::login(server, "carol").await;
    let mut bob = User::login(server, "bob").await;
    let form = bob
        .iq("get", DOMAIN, "r1", "<query xmlns='jabber:iq:register'/>")
        .await;
    let form_xml = String::from(&form);
    assert!(
        form_xml.contains("+15550002222"),
        "{name}: the offered number: {form_xml}"
    );
    let submit = |number: &str| {
        format!(
            "<query xmlns='jabber:iq:register'><x xmlns='{DATA}' type='submit'><field var='FORM_TYPE'><value>jabber:iq:register</value></field><field var='number'><value>{number}</value></field></x></query>"
        )
    };
    let bad = bob.iq("set", DOMAIN, "r2", &submit("+15550009999")).await;
    assert_eq!(
        condition(&bad).as_deref(),
        Some("bad-request"),
        "{name}: a number not offered: {bad:?}"
    );
    let ok = bob.iq("set", DOMAIN, "r3", &submit("+15550002222")).await;
    assert_eq!(ok.attr("type"), Some("result"), "{name}: {ok:?}");
    // (Prosody's mod_privilege sends every client an empty <privilege/>.)
    let told = loop {
        let m = carol.expect_message().await;
        if m.body().is_some() {
            break m;
        }
    };
    assert!(
        told.body().unwrap_or_default().contains("bob@localhost"),
        "{name}: the admin is told: {:?}",
        told.0
    );
    // Waiting: not a user yet.
    bob.send_chat("+15557654321@sms.localhost", "b1", "too early")
        .await;
    let early = loop {
        let m = bob.expect_message().await;
        if m.type_() == "error" {
            break m;
        }
    };
    assert_eq!(
        early.error().map(|e| e.0).as_deref(),
        Some("registration-required"),
        "{name}"
    );
    // Someone else asking for the same number is refused.
    let taken = mallory
        .iq("set", DOMAIN, "r4", &submit("+15550002222"))
        .await;
    assert_eq!(
        condition(&taken).as_deref(),
        Some("bad-request"),
        "{name}: {taken:?}"
    );

    // Carol's commands: pending → approve; list; status.
    let nodes = items(
        &carol
            .iq(
                "get",
                DOMAIN,
                "ci",
                &format!(
                    "<query xmlns='http://jabber.org/protocol/disco#items' node='{COMMANDS}'/>"
                ),
            )
            .await,
    );
    assert!(
        nodes.contains(&"pending".to_owned()) && !nodes.contains(&"settings".to_owned()),
        "{name}: {nodes:?}"
    );
    let (_, approved) = command(
        &mut carol,
        "pending",
        &[("jid", "bob@localhost"), ("decision", "approve")],
        "p",
    )
    .await;
    assert!(note(&approved.unwrap()).contains("approved"), "{name}");
    let welcome = loop {
        let m = bob.expect_message().await;
        if m.body().is_some_and(|b| b.contains("approved")) {
            break m;
        }
    };
    assert_eq!(welcome.from(), Some(DOMAIN));
    // The gateway itself is now one of Bob's contacts (XEP-0100).
    if roster_works(name) {
        let item = roster_push(&mut bob, DOMAIN, Duration::from_secs(5)).await;
        assert!(item.is_some(), "{name}: the gateway is put in Bob's roster");
    } else {
        let p = presences_from(&mut bob, DOMAIN, Duration::from_secs(3)).await;
        assert!(
            p.iter().any(|p| p.attr("type") == Some("subscribe")),
            "{name}: the gateway asks Bob to add it: {p:?}"
        );
    }
    let (users, _) = command(&mut carol, "list-users", &[], "l").await;
    let users = String::from(&users);
    assert!(
        users.contains("alice@localhost +15550001111 sandbox (config)")
            && users.contains("bob@localhost +15550002222 sandbox (registered)"),
        "{name}: {users}"
    );
    let (status, _) = command(&mut carol, "status", &[], "s").await;
    assert!(
        String::from(&status).contains("up since"),
        "{name}: {status:?}"
    );
    // Bob texts now.
    bob.send_chat("+15557654321@sms.localhost", "b2", "now")
        .await;
    let hooks = format!("{}/hooks/sandbox", gateway.http_base);
    let mut bobs = None;
    for _ in 0..50 {
        let o = sandbox_outbox(&hooks, SANDBOX_AUTH).await;
        bobs = o
            .as_array()
            .and_then(|a| a.iter().find(|m| m["from"] == "+15550002222"))
            .and_then(|m| m["id"].as_str())
            .map(str::to_owned);
        if bobs.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bobs = bobs.unwrap_or_else(|| panic!("{name}: Bob's text was not sent from his number"));
    // The carrier reports it undelivered: Bob hears, and admins see it.
    let r = reqwest::Client::new()
        .post(format!("{hooks}/status"))
        .header("authorization", SANDBOX_AUTH)
        .body(serde_json::json!({"message_id": bobs, "status": "failed", "error": "30003 Unreachable destination handset"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let failed = loop {
        let m = bob.expect_message().await;
        if m.type_() == "error" {
            break m;
        }
    };
    assert_eq!(
        failed.error().map(|e| e.0).as_deref(),
        Some("recipient-unavailable"),
        "{name}"
    );
    let (status, _) = command(&mut carol, "status", &[], "s2").await;
    assert!(
        String::from(&status)
            .contains("sandbox: not delivered: 30003 Unreachable destination handset"),
        "{name}: {status:?}"
    );

    // Admin: add and remove a user.
    let (_, added) = command(
        &mut carol,
        "add-user",
        &[
            ("jid", "dave@localhost"),
            ("number", "+15550005555"),
            ("account", "sandbox"),
        ],
        "add",
    )
    .await;
    assert!(
        note(&added.unwrap()).contains("dave@localhost is a user"),
        "{name}"
    );
    let (_, removed) = command(
        &mut carol,
        "remove-user",
        &[("jid", "dave@localhost")],
        "rm",
    )
    .await;
    assert!(
        note(&removed.unwrap()).contains("no longer a user"),
        "{name}"
    );
    let (_, refused) = command(
        &mut carol,
        "remove-user",
        &[("jid", "alice@localhost")],
        "rm2",
    )
    .await;
    assert!(
        note(&refused.unwrap()).contains("config"),
        "{name}: the config's users stay"
    );

    // Bob leaves with his client's Unregister.
    let gone = bob
        .iq(
            "set",
            DOMAIN,
            "r5",
            "<query xmlns='jabber:iq:register'><remove/></query>",
        )
        .await;
    assert_eq!(gone.attr("type"), Some("result"), "{name}: {gone:?}");
    let bye = presences_from(&mut bob, DOMAIN, Duration::from_secs(2)).await;
    // It goes offline, and ends the subscription where there is one
    // (on ejabberd Bob never accepted the gateway's request: the server
    // drops the `unsubscribed`).
    assert!(
        bye.iter().any(|p| p.attr("type") == Some("unavailable")),
        "{name}: the gateway goes offline for Bob (XEP-0100): {bye:?}"
    );
    if roster_works(name) {
        assert!(
            bye.iter().any(|p| p.attr("type") == Some("unsubscribed")),
            "{name}: the gateway ends the subscription (XEP-0100): {bye:?}"
        );
    }
    bob.send_chat("+15557654321@sms.localhost", "b3", "after")
        .await;
    let after = loop {
        let m = bob.expect_message().await;
        if m.type_() == "error" {
            break m;
        }
    };
    assert_eq!(
        after.error().map(|e| e.0).as_deref(),
        Some("registration-required"),
        "{name}"
    );

    // --- A clean stop: every announced contact goes offline; a restart
    // announces the subscribed ones again, and the users kept in the store
    // are still users.
    let (_, added) = command(
        &mut carol,
        "add-user",
        &[
            ("jid", "dave@localhost"),
            ("number", "+15550006666"),
            ("account", "sandbox"),
        ],
        "add2",
    )
    .await;
    assert!(note(&added.unwrap()).contains("is a user"), "{name}");
    gateway.stop().await;
    let offline = presences_from(&mut alice, other, Duration::from_secs(3)).await;
    assert!(
        offline.iter().any(|p| p.attr("type") == Some("unavailable")
            && p.attr("from") == Some(&format!("{other}/sms"))),
        "{name}: unavailable at stop: {offline:?}"
    );
    let gateway = Gateway::start(&cfg).await;
    let back = presences_from(&mut alice, other, Duration::from_secs(5)).await;
    assert_eq!(
        back.iter().filter(|p| p.attr("type").is_none()).count(),
        1,
        "{name}: available again after the restart: {back:?}"
    );
    let (users, _) = command(&mut carol, "list-users", &[], "l2").await;
    assert!(
        String::from(&users).contains("dave@localhost +15550006666 sandbox (registered)"),
        "{name}: a stored user survives the restart: {users:?}"
    );
    gateway.stop().await;
    for u in [alice, bob, carol, mallory] {
        u.quit().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_on_prosody() {
    let prosody = Prosody::start_with_privilege().await;
    suite(&prosody).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_on_ejabberd() {
    let ejabberd = Ejabberd::start_with_privilege().await;
    suite(&ejabberd).await;
}

/// The next chat from the gateway's own address (the answer to a command
/// written in chat), skipping anything else.
async fn from_gateway(user: &mut User) -> String {
    loop {
        let m = user.expect_message().await;
        if m.from() == Some(DOMAIN) && m.type_() == "chat" {
            return m.body().unwrap_or_default();
        }
    }
}

/// Commands written in chat to the gateway's address, for clients without
/// an ad-hoc command UI (#31): what the XEP-0050/0077 ones do, answered
/// in chat, for a user, a stranger who registers, and an admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_in_chat_on_prosody() {
    let prosody = Prosody::start_with_privilege().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&prosody, &dir.path().join("store.db"), free_port())
        .replace("approval = true", "approval = false");
    let _gateway = Gateway::start(&cfg).await;
    let mut alice = User::login(&prosody, "alice").await;
    wait_for_component(&mut alice).await;

    alice.send_chat(DOMAIN, "c1", "help").await;
    let help = from_gateway(&mut alice).await;
    assert!(
        help.contains("new +1 555 765 4321") && help.contains("status"),
        "{help}"
    );
    alice.send_chat(DOMAIN, "c2", " Status ").await;
    let status = from_gateway(&mut alice).await;
    assert!(
        status.contains("+15550001111") && status.contains("Caller ID"),
        "{status}"
    );
    assert!(!status.contains("XMPP link"), "not an admin: {status}");
    alice.send_chat(DOMAIN, "c3", "new (555) 765-4321").await;
    let started = from_gateway(&mut alice).await;
    assert!(started.contains("+15557654321@sms.localhost"), "{started}");
    alice.send_chat(DOMAIN, "c4", "new pizza").await;
    let refused = from_gateway(&mut alice).await;
    assert!(refused.starts_with("Not done:"), "{refused}");
    alice.send_chat(DOMAIN, "c5", "hello gateway").await;
    let hint = from_gateway(&mut alice).await;
    assert!(hint.contains("Write help"), "{hint}");

    // A stranger registers in chat.
    let mut bob = User::login(&prosody, "bob").await;
    bob.send_chat(DOMAIN, "b1", "status").await;
    let status = from_gateway(&mut bob).await;
    assert!(
        status.contains("not a user") && status.contains("register"),
        "{status}"
    );
    bob.send_chat(DOMAIN, "b2", "register").await;
    let numbers = from_gateway(&mut bob).await;
    assert!(numbers.contains("+15550002222"), "{numbers}");
    bob.send_chat(DOMAIN, "b3", "register +15550009999").await;
    let refused = from_gateway(&mut bob).await;
    assert!(refused.contains("not offered"), "{refused}");
    bob.send_chat(DOMAIN, "b4", "register +15550002222").await;
    let done = from_gateway(&mut bob).await;
    assert!(done.contains("You are registered"), "{done}");
    bob.send_chat(DOMAIN, "b5", "status").await;
    let status = from_gateway(&mut bob).await;
    assert!(
        status.contains("You are a user") && status.contains("+15550002222"),
        "{status}"
    );

    // An admin's status says how the gateway is.
    let mut carol = User::login(&prosody, "carol").await;
    carol.send_chat(DOMAIN, "a1", "status").await;
    let status = from_gateway(&mut carol).await;
    assert!(
        status.contains("XMPP link: up") && status.contains("Users:"),
        "{status}"
    );
    for u in [alice, bob, carol] {
        u.quit().await;
    }
}
