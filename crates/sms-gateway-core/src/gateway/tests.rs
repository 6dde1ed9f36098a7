//! The Gateway's rules, fed events one by one.

use super::*;
use crate::config::Config;
use crate::message::{
    ChatMessage, DeliveryStatus, ErrorCondition, Fetched, InboundRejected, InboundSms, Media,
    OutboundSms, OutgoingStanza, PstnCommand, PstnEvent, Speaker, StatusReport, XmppEvent,
};
use crate::phone::PhoneNumber;
use crate::provider::{ProviderError, ProviderErrorKind};
use crate::time::utc;

/// Each event in a transaction of its own, as a batch of one.
trait OneByOne {
    fn chat(&self, chat: ChatMessage) -> Vec<Action>;
    fn xmpp(&self, event: XmppEvent) -> Vec<Action>;
    fn pstn(&self, event: PstnEvent) -> (Vec<Action>, Option<Ack>);
    fn inbound(&self, account: &str, sms: &InboundSms) -> Result<Vec<Action>, InboundRejected>;
}

/// The actions about texts: roster items (tested on their own, in
/// `contacts_are_remembered_per_user`) left out.
fn texts(actions: Vec<Action>) -> Vec<Action> {
    actions
        .into_iter()
        .filter(|a| !matches!(a, Action::Xmpp(OutgoingStanza::RosterItem { .. })))
        .collect()
}

impl OneByOne for Gateway {
    fn chat(&self, chat: ChatMessage) -> Vec<Action> {
        let mut tx = self.begin().unwrap();
        let a = self.on_chat(&mut *tx, chat);
        tx.commit().unwrap();
        texts(a)
    }
    fn xmpp(&self, event: XmppEvent) -> Vec<Action> {
        let mut tx = self.begin().unwrap();
        let a = self.on_xmpp(&mut *tx, event);
        tx.commit().unwrap();
        texts(a)
    }
    fn pstn(&self, event: PstnEvent) -> (Vec<Action>, Option<Ack>) {
        let mut tx = self.begin().unwrap();
        let (a, ack) = self.on_pstn(&mut *tx, event);
        tx.commit().unwrap();
        (texts(a), ack)
    }
    fn inbound(&self, account: &str, sms: &InboundSms) -> Result<Vec<Action>, InboundRejected> {
        let mut tx = self.begin().unwrap();
        let a = self.on_inbound(&mut *tx, account, sms);
        tx.commit().unwrap();
        a.map(texts)
    }
}

fn gateway() -> Gateway {
    gateway_with("")
}

/// [`gateway`] with more TOML (a `[limits]` section) at the end.
fn gateway_with(extra: &str) -> Gateway {
    let cfg = Config::from_toml(&format!(
        r#"
[xmpp]
server = "127.0.0.1:5347"
domain = "sms.example.com"
secret = "x"
[http]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1/"
[phone]
default_prefix = "+1"
[providers.main]
type = "sandbox"
token = "sandbox-test-token"
[providers.other]
type = "sandbox"
token = "sandbox-test-token"
max_chars = 20
max_media = 2
[providers.strict]
type = "sandbox"
token = "sandbox-test-token"
max_chars = 20
split_long = false
[[users]]
jid = "alice@example.com"
number = "+15550001111"
provider = "main"
[[users]]
jid = "bob@example.com"
number = "+15550002222"
provider = "other"
[[users]]
jid = "carol@example.com"
number = "+15550003333"
provider = "strict"
{extra}
"#,
    ))
    .unwrap();
    let providers = cfg.validate(&crate::test_provider::registry()).unwrap();
    Gateway::new(Arc::new(Routing::new(&cfg, &providers)), Arc::default())
}

fn chat(from: &str, to: &str, body: &str) -> ChatMessage {
    ChatMessage {
        from: from.into(),
        to: to.into(),
        id: Some("m1".into()),
        body: body.into(),
        media: vec![],
        receipt_requested: true,
        addresses: vec![],
        groupchat: false,
    }
}

fn n(s: &str) -> PhoneNumber {
    PhoneNumber::parse(s, None).unwrap()
}

/// The carrier's answer to chat `ticket`: its parts' `ids`, or `error`.
fn send_result(ticket: u64, ids: &[&str], error: Option<ProviderError>) -> PstnEvent {
    PstnEvent::SendResult {
        ticket,
        ids: ids.iter().map(|&id| id.into()).collect(),
        error,
    }
}

fn sent_ticket(actions: &[Action]) -> u64 {
    match actions {
        [Action::Pstn(PstnCommand::Send { ticket, .. })] => *ticket,
        other => panic!("expected one send, got {other:?}"),
    }
}

/// Past the per-user rate: `resource-constraint` naming the limit;
/// other users are not held up. Past the parts cap: `not-acceptable`
/// naming `limits.max_parts`, and no tokens are spent.
#[test]
fn over_the_rate_or_the_parts_cap_gets_an_error_naming_the_limit() {
    let g = gateway_with("[limits]\ntexts_per_minute = 6\ntexts_burst = 3\nmax_parts = 2\n");
    let to = "+15557654321@sms.example.com";
    let long = "x".repeat(50); // bob's account: 20 characters a part, so 3 parts
    let text = expect_error(
        g.chat(chat("bob@example.com/pc", to, &long)),
        ErrorCondition::NotAcceptable,
    );
    assert!(
        text.contains("limits.max_parts") && text.contains("3 SMS"),
        "{text}"
    );
    for i in 0..3 {
        let a = g.chat(chat("alice@example.com/phone", to, &format!("hi {i}")));
        assert!(matches!(&a[..], [Action::Pstn(_)]), "{i}: {a:?}");
    }
    let text = expect_error(
        g.chat(chat("alice@example.com/phone", to, "one too many")),
        ErrorCondition::ResourceConstraint,
    );
    assert!(
        text.contains("limits.texts_per_minute") && text.contains("6 SMS a minute"),
        "{text}"
    );
    let a = g.chat(chat("bob@example.com/pc", to, "bob is not held up"));
    assert!(matches!(&a[..], [Action::Pstn(_)]), "{a:?}");
}

#[test]
fn chat_becomes_a_text_through_the_users_account() {
    let g = gateway();
    let a = g.chat(chat(
        "Alice@example.com/phone",
        "+15557654321@sms.example.com",
        "hello",
    ));
    match &a[..] {
        [Action::Pstn(PstnCommand::Send { account, parts, .. })] => {
            let sms = &parts[0];
            assert_eq!(account, "main");
            assert_eq!(sms.from, n("+15550001111"));
            assert_eq!(sms.to, n("+15557654321"));
            assert_eq!(sms.body, "hello");
        }
        other => panic!("{other:?}"),
    }
    let b = g.chat(chat(
        "bob@example.com/pc",
        "5557654321@sms.example.com",
        "hi",
    ));
    let sends: Vec<_> = b
        .iter()
        .filter_map(|a| match a {
            Action::Pstn(PstnCommand::Send { account, parts, .. }) => Some((account, parts)),
            _ => None,
        })
        .collect();
    let [(account, parts)] = &sends[..] else {
        panic!("{b:?}")
    };
    assert_eq!(account.as_str(), "other");
    assert_eq!(parts[0].to, n("+15557654321"), "default prefix applied");
}

fn expect_error(actions: Vec<Action>, want: ErrorCondition) -> String {
    match &actions[..] {
        [Action::Xmpp(OutgoingStanza::Error {
            condition,
            text,
            id,
            ..
        })] => {
            assert_eq!(*condition, want, "{text}");
            assert_eq!(id.as_deref(), Some("m1"));
            text.clone()
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn unconfigured_sender_gets_an_error() {
    let g = gateway();
    let text = expect_error(
        g.chat(chat(
            "mallory@example.com/x",
            "+15557654321@sms.example.com",
            "hi",
        )),
        ErrorCondition::RegistrationRequired,
    );
    assert!(text.contains("not a user"));
}

#[test]
fn invalid_number_gets_an_error_naming_it() {
    let g = gateway();
    // Letters: maybe a sender name, which cannot receive texts (#28).
    let text = expect_error(
        g.chat(chat("alice@example.com/x", "pizza@sms.example.com", "hi")),
        ErrorCondition::NotAcceptable,
    );
    assert!(
        text.contains("pizza") && text.contains("not a phone number"),
        "{text}"
    );
    // Numbers no country has, typed or as E.164 (#11: they were texted).
    for to in [
        "+1555@sms.example.com",
        "1555@sms.example.com",
        "1234567@sms.example.com",
    ] {
        let text = expect_error(
            g.chat(chat("alice@example.com/x", to, "hi")),
            ErrorCondition::JidMalformed,
        );
        assert!(
            text.contains("too short") || text.contains("digits"),
            "{to}: {text}"
        );
    }
    expect_error(
        g.chat(chat("alice@example.com/x", "sms.example.com", "hi")),
        ErrorCondition::BadRequest,
    );
}

#[test]
fn empty_and_whitespace_bodies_send_nothing() {
    let g = gateway();
    assert!(g
        .chat(chat(
            "alice@example.com/x",
            "+15557654321@sms.example.com",
            ""
        ))
        .is_empty());
    assert!(g
        .chat(chat(
            "alice@example.com/x",
            "+15557654321@sms.example.com",
            " \n"
        ))
        .is_empty());
}

#[test]
fn carrier_refusal_and_outage_come_back_as_errors() {
    let g = gateway();
    let t = sent_ticket(&g.chat(chat(
        "alice@example.com/x",
        "+15557654321@sms.example.com",
        "hi",
    )));
    let refused =
        ProviderError::from_http_status(400, "Invalid 'To' Phone Number").with_code("21211");
    let text = expect_error(
        g.pstn(send_result(t, &[], Some(refused))).0,
        ErrorCondition::NotAcceptable,
    );
    assert!(
        text.contains("21211") && text.contains("Invalid 'To'"),
        "{text}"
    );

    let t = sent_ticket(&g.chat(chat(
        "alice@example.com/x",
        "+15557654321@sms.example.com",
        "hi",
    )));
    let down = ProviderError::new(ProviderErrorKind::Network, "connection refused");
    let text = expect_error(
        g.pstn(send_result(t, &[], Some(down))).0,
        ErrorCondition::RemoteServerTimeout,
    );
    assert!(text.contains("unreachable"), "{text}");
}

#[test]
fn delivered_gives_a_receipt_and_failed_an_error() {
    let g = gateway();
    let t = sent_ticket(&g.chat(chat(
        "alice@example.com/x",
        "+15557654321@sms.example.com",
        "hi",
    )));
    assert!(g.pstn(send_result(t, &["SM1"], None)).0.is_empty());
    let status = |id: &str, status| PstnEvent::Status {
        account: "main".into(),
        report: StatusReport {
            message_id: id.into(),
            status,
        },
    };
    assert!(g
        .pstn(status("SM1", DeliveryStatus::InProgress))
        .0
        .is_empty());
    assert_eq!(
        g.pstn(status("SM1", DeliveryStatus::Delivered)).0,
        vec![Action::Xmpp(OutgoingStanza::Receipt {
            from: "+15557654321@sms.example.com".into(),
            to: "alice@example.com/x".into(),
            id: "m1".into(),
        })]
    );
    // A repeated report finds nothing left to answer.
    assert!(g
        .pstn(status("SM1", DeliveryStatus::Delivered))
        .0
        .is_empty());

    let t = sent_ticket(&g.chat(chat(
        "alice@example.com/x",
        "+15557654321@sms.example.com",
        "hi",
    )));
    let _ = g.pstn(send_result(t, &["SM2"], None));
    let text = expect_error(
        g.pstn(status(
            "SM2",
            DeliveryStatus::Failed(crate::Failure::from_words(
                "error 30003: Unreachable destination handset",
            )),
        ))
        .0,
        ErrorCondition::RecipientUnavailable,
    );
    assert!(text.contains("30003"), "{text}");
}

fn parts_of(actions: &[Action]) -> Vec<OutboundSms> {
    match actions {
        [Action::Pstn(PstnCommand::Send { parts, .. })] => parts.clone(),
        other => panic!("expected one send, got {other:?}"),
    }
}

#[test]
fn a_long_text_is_split_in_order_with_media_on_the_first_part() {
    let g = gateway();
    let mut c = chat(
        "bob@example.com/x",
        "+15557654321@sms.example.com",
        "one two three four five six seven eight",
    );
    c.media = vec!["https://up.example/a.jpg".into()];
    let parts = parts_of(&g.chat(c));
    assert!(parts.len() >= 2, "{parts:?}");
    assert!(
        parts.iter().all(|p| p.body.chars().count() <= 20),
        "{parts:?}"
    );
    assert_eq!(
        parts.iter().map(|p| p.body.as_str()).collect::<String>(),
        "one two three four five six seven eight"
    );
    assert_eq!(parts[0].media, vec!["https://up.example/a.jpg".to_owned()]);
    assert!(parts[1..].iter().all(|p| p.media.is_empty()));
}

#[test]
fn split_long_false_refuses_and_media_beyond_the_limit_are_refused() {
    let g = gateway();
    let text = expect_error(
        g.chat(chat(
            "carol@example.com/x",
            "+15557654321@sms.example.com",
            "this text is longer than twenty",
        )),
        ErrorCondition::NotAcceptable,
    );
    assert!(
        text.contains("split_long") && text.contains("20 characters"),
        "{text}"
    );
    assert_eq!(
        parts_of(&g.chat(chat(
            "carol@example.com/x",
            "+15557654321@sms.example.com",
            "short"
        )))
        .len(),
        1
    );

    let mut c = chat("bob@example.com/x", "+15557654321@sms.example.com", "");
    c.media = (0..3)
        .map(|i| format!("https://up.example/{i}.jpg"))
        .collect();
    let text = expect_error(g.chat(c), ErrorCondition::NotAcceptable);
    assert!(text.contains("At most 2 media"), "{text}");

    let mut c = chat("alice@example.com/x", "+15557654321@sms.example.com", "");
    c.media = vec!["file:///etc/passwd".into()];
    let text = expect_error(g.chat(c), ErrorCondition::BadRequest);
    assert!(text.contains("http"), "{text}");
}

#[test]
fn the_receipt_waits_for_every_part_and_a_partial_send_is_reported() {
    let g = gateway();
    let actions = g.chat(chat(
        "bob@example.com/x",
        "+15557654321@sms.example.com",
        "one two three four five six seven eight",
    ));
    let t = sent_ticket(&actions);
    let n = parts_of(&actions).len();
    let ids: Vec<String> = (0..n).map(|i| format!("P{i}")).collect();
    let _ = g.pstn(PstnEvent::SendResult {
        ticket: t,
        ids: ids.clone(),
        error: None,
    });
    let delivered = |id: &str| PstnEvent::Status {
        account: "other".into(),
        report: StatusReport {
            message_id: id.into(),
            status: DeliveryStatus::Delivered,
        },
    };
    for id in &ids[..n - 1] {
        assert!(
            g.pstn(delivered(id)).0.is_empty(),
            "no receipt before the last part"
        );
        // Carriers repeat reports; a part is counted once.
        assert!(
            g.pstn(delivered(id)).0.is_empty(),
            "a repeated report counts nothing"
        );
    }
    assert!(matches!(
        &g.pstn(delivered(&ids[n - 1])).0[..],
        [Action::Xmpp(OutgoingStanza::Receipt { .. })]
    ));

    let t = sent_ticket(&g.chat(chat(
        "bob@example.com/x",
        "+15557654321@sms.example.com",
        "one two three four five six seven eight",
    )));
    let e = ProviderError::new(ProviderErrorKind::CarrierError, "boom");
    let text = expect_error(
        g.pstn(send_result(t, &["Q0"], Some(e))).0,
        ErrorCondition::RemoteServerTimeout,
    );
    assert!(
        text.contains("parts 1 to 1 of") && text.contains("part 2 did not"),
        "{text}"
    );
}

#[test]
fn a_part_reported_twice_counts_once_even_after_other_parts() {
    let g = gateway();
    let t = sent_ticket(&g.chat(chat(
        "bob@example.com/x",
        "+15557654321@sms.example.com",
        "one two three four five six seven eight nine ten eleven twelve",
    )));
    let _ = g.pstn(send_result(t, &["R0", "R1", "R2"], None));
    let delivered = |id: &str| PstnEvent::Status {
        account: "other".into(),
        report: StatusReport {
            message_id: id.into(),
            status: DeliveryStatus::Delivered,
        },
    };
    assert!(g.pstn(delivered("R0")).0.is_empty());
    assert!(g.pstn(delivered("R1")).0.is_empty());
    // R0 again, after R1 was stored: still counted once.
    assert!(
        g.pstn(delivered("R0")).0.is_empty(),
        "a repeat after another part's report counts nothing"
    );
    assert!(matches!(
        &g.pstn(delivered("R2")).0[..],
        [Action::Xmpp(OutgoingStanza::Receipt { .. })]
    ));
}

#[test]
fn a_report_that_overtakes_its_send_result_still_counts() {
    let g = gateway();
    let t = sent_ticket(&g.chat(chat(
        "alice@example.com/x",
        "+15557654321@sms.example.com",
        "hi",
    )));
    let early = PstnEvent::Status {
        account: "main".into(),
        report: StatusReport {
            message_id: "SM9".into(),
            status: DeliveryStatus::Delivered,
        },
    };
    assert!(g.pstn(early).0.is_empty());
    let (actions, _) = g.pstn(send_result(t, &["SM9"], None));
    assert!(
        matches!(&actions[..], [Action::Xmpp(OutgoingStanza::Receipt { id, .. })] if id == "m1"),
        "{actions:?}"
    );
}

#[test]
fn after_a_restart_pending_chats_are_resent_and_receipts_still_come() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let cfg_gateway = gateway();
    let make = || {
        Gateway::with_store(
            cfg_gateway.routing.clone(),
            Arc::default(),
            store.clone(),
            DEFAULT_RETRY_DEADLINE,
        )
    };
    let before = make();
    let t1 = sent_ticket(&before.chat(chat(
        "alice@example.com/x",
        "+15557654321@sms.example.com",
        "sent",
    )));
    let _ = before.pstn(send_result(t1, &["SM1"], None));
    let t2 = sent_ticket(&before.chat(chat(
        "alice@example.com/x",
        "+15557654321@sms.example.com",
        "pending",
    )));
    let sms = InboundSms {
        id: "SMin".into(),
        from: n("+15557654321"),
        to: n("+15550001111"),
        body: "in".into(),
        media: vec![],
        others: vec![],
        subject: None,
    };
    let _ = before.inbound("main", &sms).unwrap();
    drop(before);

    // The program dies; a new gateway starts on the same store.
    let after = make();
    let actions = after
        .recover(crate::store::Retention {
            texts: Duration::from_secs(86_400),
            seen: Duration::from_secs(86_400),
        })
        .unwrap();
    assert!(actions.iter().any(|a| matches!(a, Action::Pstn(PstnCommand::Send { ticket, parts, .. }) if *ticket == t2 && parts[0].body == "pending")), "{actions:?}");
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Pstn(PstnCommand::Send { ticket, .. }) if *ticket == t1)),
        "accepted chats are not resent"
    );
    assert!(actions.iter().any(|a| matches!(a, Action::Xmpp(OutgoingStanza::Chat { body, inbound_id: Some(_), .. }) if body == "in")), "{actions:?}");
    // The delivery report of the chat sent before the restart still makes its receipt.
    let (receipt, _) = after.pstn(PstnEvent::Status {
        account: "main".into(),
        report: StatusReport {
            message_id: "SM1".into(),
            status: DeliveryStatus::Delivered,
        },
    });
    assert!(
        matches!(&receipt[..], [Action::Xmpp(OutgoingStanza::Receipt { id, .. })] if id == "m1"),
        "{receipt:?}"
    );
    assert_eq!(
        store.chats().unwrap().len(),
        1,
        "the delivered chat left the store; the pending one stays"
    );
    // And the carrier's retry of the inbound webhook is still recognised.
    assert_eq!(after.inbound("main", &sms), Ok(vec![]));
}

#[test]
fn a_timeout_is_reported_and_not_retried() {
    let g = gateway();
    let t = sent_ticket(&g.chat(chat(
        "alice@example.com/x",
        "+15557654321@sms.example.com",
        "hi",
    )));
    let e = ProviderError::new(ProviderErrorKind::Timeout, "no answer within 30s");
    let text = expect_error(
        g.pstn(send_result(t, &[], Some(e))).0,
        ErrorCondition::RemoteServerTimeout,
    );
    assert!(
        text.contains("may or may not") && text.contains("not sent again"),
        "{text}"
    );
    assert!(
        g.store.chats().unwrap().is_empty(),
        "reported, so it leaves the store"
    );
}

#[test]
fn inbound_text_and_media_become_chats() {
    let g = gateway();
    let sms = InboundSms {
        id: "SMx".into(),
        from: n("+15557654321"),
        to: n("+15550001111"),
        body: "hey".into(),
        media: vec![
            Media::new("https://carrier.example/1", Some("image/jpeg".into())),
            Media::new("https://carrier.example/2", Some("image/png".into())),
        ],
        others: vec![],
        subject: None,
    };
    let a = g.inbound("main", &sms).unwrap();
    let stored = g.store.pending_inbound().unwrap();
    assert_eq!(stored.len(), 1, "stored before it is answered");
    let id = stored[0].id;
    // Media are fetched first; the chats wait for them.
    let [Action::Pstn(PstnCommand::FetchMedia {
        account,
        id: fetch_id,
        user,
        sms: to_fetch,
        ..
    })] = &a[..]
    else {
        panic!("{a:?}")
    };
    assert_eq!(
        (account.as_str(), *fetch_id, user.as_str()),
        ("main", id, "alice@example.com")
    );
    assert_eq!(to_fetch, &sms);
    // A restart before the fetch ends fetches again.
    let again = g
        .recover(crate::config::StoreConfig::default().keep())
        .unwrap();
    assert!(
        matches!(&again[..], [Action::Pstn(PstnCommand::FetchMedia { id: i, .. })] if *i == id),
        "{again:?}"
    );
    let mut fetched = sms.clone();
    fetched.media[0].fetched = Some(Fetched::Served {
        url: "https://gw.example/media/0123/1.jpg".into(),
    });
    fetched.media[1].fetched = Some(Fetched::Failed {
        reason: "the carrier no longer has it (HTTP 404)".into(),
    });
    let (chats, ack) = g.pstn(PstnEvent::MediaFetched {
        account: "main".into(),
        id,
        sms: fetched.clone(),
    });
    assert!(ack.is_none());
    let chat = |body: &str, media_url: Option<&str>, inbound_id, stable_id: &str| {
        Action::Xmpp(OutgoingStanza::Chat {
            from: "+15557654321@sms.example.com".into(),
            to: "alice@example.com".into(),
            body: body.into(),
            media_url: media_url.map(Into::into),
            nick: None,
            inbound_id,
            stable_id: Some(stable_id.into()),
        })
    };
    // Each chat's id comes from the carrier's id for the text, so the
    // delivery after a restart (below) repeats it (#26).
    assert_eq!(
        chats,
        vec![
            chat("hey", None, None, "SMx"),
            chat(
                "https://gw.example/media/0123/1.jpg",
                Some("https://gw.example/media/0123/1.jpg"),
                None,
                "SMx/0"
            ),
            chat(
                "[Attachment 2 of 2 (image/png) could not be fetched: the carrier no longer has it (HTTP 404).]",
                None,
                Some(id),
                "SMx/1"
            ),
        ]
    );
    // Kept so: a restart now delivers without fetching.
    assert_eq!(g.store.pending_inbound().unwrap()[0].sms, fetched);
    let again = g
        .recover(crate::config::StoreConfig::default().keep())
        .unwrap();
    assert_eq!(again, chats);
    // The carrier's retry of the same webhook delivers nothing new.
    assert_eq!(g.inbound("main", &sms), Ok(vec![]));
    // Once written to the server, it leaves the store.
    assert!(g.xmpp(XmppEvent::Delivered(id)).is_empty());
    assert!(g.store.pending_inbound().unwrap().is_empty());
    // Alice's number on the wrong account is nobody's.
    assert_eq!(
        g.inbound("other", &sms),
        Err(InboundRejected::UnknownNumber("+15550001111".into()))
    );
}

#[test]
fn with_media_store_link_the_carriers_urls_go_as_they_are() {
    let g = gateway_with("[media]\nstore = \"link\"\n");
    let sms = InboundSms {
        id: "SMy".into(),
        from: n("+15557654321"),
        to: n("+15550001111"),
        body: String::new(),
        media: vec![Media::new("https://m.example/1.jpg", None)],
        others: vec![],
        subject: None,
    };
    let a = g.inbound("main", &sms).unwrap();
    assert!(
        matches!(&a[..], [Action::Xmpp(OutgoingStanza::Chat { media_url: Some(u), .. })] if u == "https://m.example/1.jpg"),
        "{a:?}"
    );
}

#[test]
fn media_links_on_private_addresses_are_refused_unless_relayed() {
    let mut c = chat(
        "alice@example.com/phone",
        "+15557654321@sms.example.com",
        "",
    );
    c.media = vec!["http://127.0.0.1:5280/upload/a.jpg".into()];
    let text = expect_error(gateway().chat(c.clone()), ErrorCondition::NotAcceptable);
    assert!(text.contains("media.relay_private_urls"), "{text}");
    let relaying =
        gateway_with("[media]\nrelay_private_urls = true\nrelay_hosts = [\"127.0.0.1:5280\"]\n");
    let relayed = relaying.chat(c.clone());
    assert!(
        matches!(&relayed[..], [Action::Pstn(PstnCommand::Send { .. })]),
        "{relayed:?}"
    );
    // #27: only from the listed addresses; never a metadata service.
    for (url, why) in [
        (
            "http://127.0.0.1:9678/metrics",
            "127.0.0.1:9678 is not in media.relay_hosts",
        ),
        (
            "http://localhost:5280/upload/a.jpg",
            "localhost:5280 is not in media.relay_hosts",
        ),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1]:5280/a.jpg", "link-local"),
    ] {
        c.media = vec![url.into()];
        let text = expect_error(relaying.chat(c.clone()), ErrorCondition::NotAcceptable);
        assert!(text.contains(why), "{url}: {text}");
    }
}

#[test]
fn utc_matches_python() {
    // python3: email.utils.formatdate(t, usegmt=True)
    for (t, want) in [
        (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
        (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
        (1_709_251_199, "Thu, 29 Feb 2024 23:59:59 GMT"),
        (1_795_762_352, "Fri, 27 Nov 2026 06:52:32 GMT"),
        (4_102_444_800, "Fri, 01 Jan 2100 00:00:00 GMT"),
        (253_402_300_799, "Fri, 31 Dec 9999 23:59:59 GMT"),
    ] {
        assert_eq!(utc(t), want, "{t}");
    }
}

fn notices(actions: &[Action]) -> Vec<(String, String, String)> {
    actions
        .iter()
        .map(|a| match a {
            Action::Xmpp(OutgoingStanza::Chat { from, to, body, .. }) => {
                (from.clone(), to.clone(), body.clone())
            }
            other => panic!("not a notice: {other:?}"),
        })
        .collect()
}

#[test]
fn after_an_unclean_stop_each_user_is_told_what_arrived_last() {
    let g = gateway();
    assert!(g.start_run().is_empty(), "a new store: nothing to tell");
    g.chat(chat(
        "alice@example.com/phone",
        "+15557654321@sms.example.com",
        "first",
    ));
    g.chat(chat(
        "Alice@example.com/laptop",
        "+15557654322@sms.example.com",
        "the last one, with more than forty characters in it",
    ));
    // The process dies here: no end_run. The next run shares the store.
    let next = Gateway::with_store(
        g.routing.clone(),
        Arc::default(),
        g.store.clone(),
        DEFAULT_RETRY_DEADLINE,
    );
    let told = notices(&next.start_run());
    assert_eq!(told.len(), 3, "every configured user: {told:?}");
    let (from, to, body) = &told[0];
    assert_eq!(
        (from.as_str(), to.as_str()),
        ("sms.example.com", "alice@example.com")
    );
    assert!(body.contains("unexpected stop"), "{body}");
    assert!(body.contains("to +15557654322 on "), "{body}");
    assert!(body.contains(" GMT: "), "{body}");
    assert!(
        body.contains("\"the last one, with more than forty chara…\""),
        "{body}"
    );
    assert!(
        told[1].2.contains("no chat from you on record"),
        "{}",
        told[1].2
    );
    // Killed again at once: not told twice within the hour.
    assert!(next.start_run().is_empty());
    // A clean stop leaves nothing to tell.
    next.end_run();
    assert!(next.start_run().is_empty());
}

#[test]
fn contacts_are_remembered_per_user() {
    let g = gateway();
    let all = |actions: Vec<Action>| actions;
    // Alice writes to the number as she dials it: the text goes, she is
    // told once that the contact's one address is the E.164 one, and the
    // roster and every reply use that address (#28).
    let mut tx = g.begin().unwrap();
    let a = all(g.on_chat(
        &mut *tx,
        chat(
            "alice@example.com/phone",
            "5557654321@sms.example.com",
            "hi",
        ),
    ));
    tx.commit().unwrap();
    let rostered: Vec<_> = a
        .iter()
        .filter_map(|a| match a {
            Action::Xmpp(OutgoingStanza::RosterItem { contact, user, .. }) => {
                Some((contact.as_str(), user.as_str()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        rostered,
        vec![("+15557654321@sms.example.com", "alice@example.com")]
    );
    let told: Vec<_> = a
        .iter()
        .filter_map(|a| match a {
            Action::Xmpp(OutgoingStanza::Chat { from, body, .. }) => Some((from.as_str(), body)),
            _ => None,
        })
        .collect();
    assert_eq!(told.len(), 1, "{a:?}");
    assert_eq!(
        told[0].0, "5557654321@sms.example.com",
        "in the window used"
    );
    assert!(
        told[0].1.contains("+15557654321@sms.example.com"),
        "{told:?}"
    );
    assert!(
        a.iter().any(|a| matches!(a, Action::Pstn(_))),
        "and sent: {a:?}"
    );
    let mut tx = g.begin().unwrap();
    let again = g.on_chat(
        &mut *tx,
        chat(
            "alice@example.com/phone",
            "5557654321@sms.example.com",
            "again",
        ),
    );
    tx.commit().unwrap();
    assert!(
        !again.iter().any(|a| matches!(
            a,
            Action::Xmpp(OutgoingStanza::RosterItem { .. } | OutgoingStanza::Chat { .. })
        )),
        "a contact goes to the roster once, and the form is told of once: {again:?}"
    );
    let sms = InboundSms {
        id: "in-1".into(),
        from: n("+15557654321"),
        to: n("+15550001111"),
        body: "hello back".into(),
        media: vec![],
        others: vec![],
        subject: None,
    };
    let a = g.inbound("main", &sms).unwrap();
    assert!(
        matches!(&a[..], [Action::Xmpp(OutgoingStanza::Chat { from, .. })] if from == "+15557654321@sms.example.com"),
        "the reply comes from the contact's one address: {a:?}"
    );
    // Bob never wrote to it: his chats from the number use the canonical JID.
    let to_bob = InboundSms {
        id: "in-2".into(),
        to: n("+15550002222"),
        ..sms.clone()
    };
    let a = g.inbound("other", &to_bob).unwrap();
    assert!(
        matches!(&a[..], [Action::Xmpp(OutgoingStanza::Chat { from, .. })] if from == "+15557654321@sms.example.com"),
        "{a:?}"
    );
    // Subscriptions are kept: after a restart the subscribed contacts (and
    // the gateway) are announced available.
    for to in ["5557654321@sms.example.com", "sms.example.com"] {
        g.xmpp(XmppEvent::Subscription {
            from: "alice@example.com/phone".into(),
            to: to.into(),
            subscribed: true,
        });
    }
    let presence = g.load_people().unwrap();
    let mut announced: Vec<(String, String)> = presence
        .into_iter()
        .filter_map(|a| match a {
            Action::Xmpp(OutgoingStanza::Presence {
                from,
                to,
                available: true,
            }) => Some((from, to)),
            _ => None,
        })
        .collect();
    announced.sort();
    assert_eq!(
        announced,
        vec![
            (
                "+15557654321@sms.example.com".to_owned(),
                "alice@example.com".to_owned()
            ),
            ("sms.example.com".to_owned(), "alice@example.com".to_owned()),
        ]
    );
}

#[test]
fn users_who_register_wait_for_approval_and_can_leave() {
    use crate::directory::StoredUser;
    use crate::message::UserChange;
    let g = gateway();
    let dave = jid::BareJid::new("dave@example.com").unwrap();
    let change = |c: UserChange| match &g.xmpp(XmppEvent::Users {
        change: c,
        ticket: 7,
    })[..]
    {
        [Action::Xmpp(OutgoingStanza::Done { ticket: 7, result })] => result.clone(),
        other => panic!("{other:?}"),
    };
    let waiting = StoredUser {
        number: n("+15550004444"),
        account: "main".into(),
        approved: false,
    };
    assert_eq!(
        change(UserChange::Put {
            jid: dave.clone(),
            user: waiting
        }),
        Ok(())
    );
    let refused = g.chat(chat(
        "dave@example.com/x",
        "+15557654321@sms.example.com",
        "hi",
    ));
    expect_error(refused, ErrorCondition::RegistrationRequired);
    assert_eq!(change(UserChange::Approve { jid: dave.clone() }), Ok(()));
    let sent = g.chat(chat(
        "dave@example.com/x",
        "+15557654321@sms.example.com",
        "hi",
    ));
    assert!(
        matches!(&sent[..], [Action::Pstn(PstnCommand::Send { .. })]),
        "{sent:?}"
    );
    // Kept in the store: another gateway on it knows Dave.
    let entries = g.store.entries(crate::store::ENTRY_USER).unwrap();
    assert_eq!(entries.len(), 1);
    // A number someone has, or a JID of the config, is refused with why.
    let taken = StoredUser {
        number: n("+15550001111"),
        account: "main".into(),
        approved: true,
    };
    let e = change(UserChange::Put {
        jid: jid::BareJid::new("eve@example.com").unwrap(),
        user: taken,
    })
    .unwrap_err();
    assert!(e.contains("another user"), "{e}");
    let e = change(UserChange::Remove {
        jid: jid::BareJid::new("alice@example.com").unwrap(),
    })
    .unwrap_err();
    assert!(e.contains("config"), "{e}");
    assert_eq!(change(UserChange::Remove { jid: dave }), Ok(()));
    assert!(g
        .store
        .entries(crate::store::ENTRY_USER)
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_contact_goes_to_the_roster_at_once_and_is_renamed_when_caller_id_learns_the_name() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let lookup = dir.path().join("cnam");
    std::fs::write(&lookup, "#!/bin/sh\nsleep 0.2\necho \"Name of $FROM\"\n").unwrap();
    std::fs::set_permissions(&lookup, std::fs::Permissions::from_mode(0o755)).unwrap();
    let g = gateway_with(&format!("[caller_id]\nlookup = \"{}\"\n", lookup.display()));
    let mut learned = g.names_learned();
    let roster = |a: &[Action]| -> Vec<Option<String>> {
        a.iter()
            .filter_map(|a| match a {
                Action::Xmpp(OutgoingStanza::RosterItem { name, .. }) => Some(name.clone()),
                _ => None,
            })
            .collect()
    };
    let sms = InboundSms {
        id: "in-1".into(),
        from: n("+15557654321"),
        to: n("+15550001111"),
        body: "hello".into(),
        media: vec![],
        others: vec![],
        subject: None,
    };
    let mut tx = g.begin().unwrap();
    let a = g.on_inbound(&mut *tx, "main", &sms).unwrap();
    tx.commit().unwrap();
    assert_eq!(
        roster(&a),
        vec![None],
        "in the roster at once, the name not known yet"
    );
    let (contact, user) = tokio::time::timeout(std::time::Duration::from_secs(10), learned.recv())
        .await
        .expect("the lookup finishes")
        .expect("a name");
    let mut tx = g.begin().unwrap();
    let a = g.on_name_learned(&mut *tx, &contact, &user);
    tx.commit().unwrap();
    assert_eq!(roster(&a), vec![Some("Name of +15557654321".to_owned())]);
    // Known now: nothing more to say.
    let mut tx = g.begin().unwrap();
    let a = g.on_name_learned(&mut *tx, &contact, &user);
    tx.commit().unwrap();
    assert!(roster(&a).is_empty(), "{a:?}");
}

#[test]
fn a_user_cannot_grow_the_contacts_without_bound() {
    let g = gateway();
    for i in 0..super::contacts::MAX_CONTACTS + 5 {
        g.xmpp(XmppEvent::Subscription {
            from: "alice@example.com/x".into(),
            to: format!("+1555{:07}@sms.example.com", i),
            subscribed: true,
        });
    }
    let kept = g.store.entries(crate::store::ENTRY_CONTACT).unwrap().len();
    assert_eq!(kept, super::contacts::MAX_CONTACTS);
    // Others are not affected.
    g.xmpp(XmppEvent::Subscription {
        from: "bob@example.com/x".into(),
        to: "+15557654321@sms.example.com".into(),
        subscribed: true,
    });
    assert_eq!(
        g.store.entries(crate::store::ENTRY_CONTACT).unwrap().len(),
        kept + 1
    );
}

// Group texts: rooms named by their participants.

const ROOM: &str = "+15551112222,+15553334444@sms.example.com";

fn group_text(id: &str, from: &str, others: &[&str], body: &str) -> InboundSms {
    let mut sms = InboundSms::new(id, n(from), n("+15550001111"), body, vec![]);
    sms.others = others.iter().map(|o| n(o)).collect();
    sms
}

fn group_lines(actions: &[Action]) -> Vec<(String, crate::message::RoomLine, Option<u64>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Xmpp(OutgoingStanza::Group {
                room,
                user,
                line,
                inbound_id,
            }) => {
                assert_eq!(user, "alice@example.com");
                Some((room.clone(), line.clone(), *inbound_id))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_group_text_lands_in_its_room_and_waits_in_its_history() {
    let g = gateway_with("[caller_id]\n\"+15553334444\" = \"Jane Roe\"");
    // The user's own number is among the participants Telnyx lists: it is
    // left out, and the room is named by the other two, sorted.
    let a = g
        .inbound(
            "main",
            &group_text(
                "g1",
                "+15553334444",
                &["+15551112222", "+15550001111"],
                "hi all",
            ),
        )
        .unwrap();
    let lines = group_lines(&a);
    assert_eq!(lines.len(), 1, "{a:?}");
    let (room, line, inbound) = &lines[0];
    assert_eq!(room, ROOM);
    assert_eq!(line.from, Speaker::Participant("Jane Roe".into()));
    assert_eq!(line.number, Some(n("+15553334444")));
    assert!(inbound.is_some(), "the line completes the stored text");
    assert!(
        !a.iter()
            .any(|a| matches!(a, Action::Xmpp(OutgoingStanza::Chat { .. }))),
        "no one-to-one chat for a group text: {a:?}"
    );
    // A second participant's text lands in the same room; a repeat of the
    // first (a carrier's retry) is nothing.
    let a = g
        .inbound(
            "main",
            &group_text("g2", "+15551112222", &["+15553334444"], "hello"),
        )
        .unwrap();
    assert_eq!(group_lines(&a)[0].0, ROOM);
    assert_eq!(
        group_lines(&a)[0].1.from,
        Speaker::Participant("+15551112222".into())
    );
    assert!(g
        .inbound(
            "main",
            &group_text("g1", "+15553334444", &["+15551112222"], "hi all")
        )
        .unwrap()
        .is_empty());
    // A one-to-one text from one of them is still a chat.
    let a = g
        .inbound(
            "main",
            &InboundSms::new(
                "one",
                n("+15551112222"),
                n("+15550001111"),
                "just you",
                vec![],
            ),
        )
        .unwrap();
    assert!(
        matches!(&a[..], [Action::Xmpp(OutgoingStanza::Chat { from, .. })] if from == "+15551112222@sms.example.com"),
        "{a:?}"
    );
    // Joining an hour later: the participants, both lines, oldest first.
    let a = g.xmpp(XmppEvent::Join {
        from: "alice@example.com/laptop".into(),
        room: ROOM.into(),
        nick: "alice".into(),
        max_history: None,
    });
    let [Action::Xmpp(OutgoingStanza::RoomJoined {
        room,
        to,
        occupants,
        history,
        ..
    })] = &a[..]
    else {
        panic!("{a:?}")
    };
    assert_eq!(
        (room.as_str(), to.as_str()),
        (ROOM, "alice@example.com/laptop")
    );
    assert_eq!(
        occupants,
        &["+15551112222".to_owned(), "Jane Roe".to_owned()]
    );
    let said: Vec<&str> = history.iter().map(|l| l.body.as_str()).collect();
    assert_eq!(said, ["hi all", "hello"]);
    // `<history maxstanzas='1'/>`: the last line only.
    let a = g.xmpp(XmppEvent::Join {
        from: "alice@example.com/phone".into(),
        room: ROOM.into(),
        nick: "alice".into(),
        max_history: Some(1),
    });
    assert!(
        matches!(&a[..], [Action::Xmpp(OutgoingStanza::RoomJoined { history, .. })] if history.len() == 1 && history[0].body == "hello"),
        "{a:?}"
    );
}

#[test]
fn a_message_to_a_room_is_one_group_text_and_is_reflected() {
    let g = gateway();
    let mut c = chat("alice@example.com/x", ROOM, "see you at 8");
    c.groupchat = true;
    let a = g.chat(c);
    let send = a
        .iter()
        .find_map(|a| match a {
            Action::Pstn(PstnCommand::Send { parts, ticket, .. }) => Some((parts.clone(), *ticket)),
            _ => None,
        })
        .expect("a send");
    let (parts, ticket) = send;
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].to, n("+15551112222"));
    assert_eq!(parts[0].cc, vec![n("+15553334444")]);
    let lines = group_lines(&a);
    assert_eq!(lines.len(), 1, "{a:?}");
    assert_eq!(lines[0].1.id, "m1", "reflected with the client's id");
    assert_eq!(lines[0].1.from, Speaker::User);
    // A participant the carrier could not reach is named in the error,
    // which comes from the room.
    let _ = g.pstn(send_result(ticket, &["G1"], None));
    let (a, _) = g.pstn(PstnEvent::Status {
        account: "main".into(),
        report: StatusReport {
            message_id: "G1".into(),
            status: DeliveryStatus::Failed(crate::Failure::from_words(
                "to +15553334444: delivery_failed",
            )),
        },
    });
    assert!(
        matches!(&a[..], [Action::Xmpp(OutgoingStanza::Error { from, text, .. })] if from == ROOM && text.contains("+15553334444")),
        "{a:?}"
    );
    // Reports are per recipient: a delivery to the other says nothing (no
    // receipt in a room), and a second failure is told too.
    let report = |status| PstnEvent::Status {
        account: "main".into(),
        report: StatusReport {
            message_id: "G1".into(),
            status,
        },
    };
    assert!(g.pstn(report(DeliveryStatus::Delivered)).0.is_empty());
    let (a, _) = g.pstn(report(DeliveryStatus::Failed(crate::Failure::from_words(
        "to +15551112222: expired",
    ))));
    assert!(
        matches!(&a[..], [Action::Xmpp(OutgoingStanza::Error { text, .. })] if text.contains("+15551112222")),
        "{a:?}"
    );
    // Any order of numbers names the same group; a bad one is named.
    let a = g.chat(chat(
        "alice@example.com/x",
        "+15553334444,5551112222@sms.example.com",
        "again",
    ));
    assert!(
        a.iter().any(|a| matches!(a, Action::Pstn(PstnCommand::Send { parts, .. }) if parts[0].cc == vec![n("+15553334444")])),
        "{a:?}"
    );
    let a = g.chat(chat(
        "alice@example.com/x",
        "+15553334444,pizza@sms.example.com",
        "x",
    ));
    assert!(
        matches!(&a[..], [Action::Xmpp(OutgoingStanza::Error { condition: ErrorCondition::JidMalformed, text, .. })] if text.contains("pizza")),
        "{a:?}"
    );
    // XEP-0033: addressed to the gateway with the participants in
    // `<addresses/>`.
    let mut c = chat("alice@example.com/x", "sms.example.com", "by address");
    c.addresses = vec![
        "+15553334444@sms.example.com".into(),
        "+15551112222@sms.example.com".into(),
        "alice@example.com".into(),
    ];
    let a = g.chat(c);
    assert!(
        a.iter().any(|a| matches!(a, Action::Pstn(PstnCommand::Send { parts, .. }) if parts[0].to == n("+15551112222") && parts[0].cc == vec![n("+15553334444")])),
        "{a:?}"
    );
}

const PLAIN: &str = r#"
[providers.plain]
type = "sandbox"
token = "sandbox-test-token"
max_group = 2
[[users]]
jid = "dave@example.com"
number = "+15550004444"
provider = "plain"
[[users]]
jid = "erin@example.com"
number = "+15550005555"
provider = "none"
[providers.none]
type = "sandbox"
token = "sandbox-test-token"
max_group = 0
"#;

#[test]
fn a_carrier_without_group_texts_refuses_or_fans_out() {
    let g = gateway_with(PLAIN);
    // Over the carrier's group size: refused, saying the limit.
    let a = g.chat(chat(
        "dave@example.com/x",
        "+15551112222,+15553334444,+15556667777@sms.example.com",
        "x",
    ));
    assert!(
        matches!(&a[..], [Action::Xmpp(OutgoingStanza::Error { condition: ErrorCondition::NotAcceptable, text, .. })] if text.contains("at most 2")),
        "{a:?}"
    );
    // No group texts at all: refused, saying why and what would do.
    let a = g.chat(chat("erin@example.com/x", ROOM, "x"));
    assert!(
        matches!(&a[..], [Action::Xmpp(OutgoingStanza::Error { condition: ErrorCondition::NotAcceptable, text, .. })] if text.contains("groups.fan_out")),
        "{a:?}"
    );
    // With `groups.fan_out`: one text to each, and the room says so.
    let g = gateway_with(&format!("{PLAIN}\n[groups]\nfan_out = true"));
    let mut c = chat("erin@example.com/x", ROOM, "x");
    c.groupchat = true;
    let a = g.chat(c);
    let parts = a
        .iter()
        .find_map(|a| match a {
            Action::Pstn(PstnCommand::Send { parts, .. }) => Some(parts.clone()),
            _ => None,
        })
        .expect("a send");
    let to: Vec<_> = parts.iter().map(|p| (p.to.clone(), p.cc.len())).collect();
    assert_eq!(to, [(n("+15551112222"), 0), (n("+15553334444"), 0)]);
    assert!(
        a.iter().any(|a| matches!(a, Action::Xmpp(OutgoingStanza::Group { line, .. }) if line.from == Speaker::Room && line.body.contains("2 separate texts"))),
        "{a:?}"
    );
}

#[test]
fn rooms_and_their_history_survive_a_restart() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let routing = gateway().routing.clone();
    let make = || {
        Gateway::with_store(
            routing.clone(),
            Arc::default(),
            store.clone(),
            DEFAULT_RETRY_DEADLINE,
        )
    };
    let before = make();
    let mut sms = group_text("g1", "+15553334444", &["+15551112222"], "kept");
    sms.subject = Some("Dinner".into());
    before.inbound("main", &sms).unwrap();
    let after = make();
    after.load_people().unwrap();
    let a = after.xmpp(XmppEvent::Join {
        from: "alice@example.com/x".into(),
        room: ROOM.into(),
        nick: "a".into(),
        max_history: None,
    });
    assert!(
        matches!(&a[..], [Action::Xmpp(OutgoingStanza::RoomJoined { history, subject, .. })] if history.len() == 1 && history[0].body == "kept" && subject == "Dinner"),
        "{a:?}"
    );
}

/// A store shared with other instances, whose next [`Store::adopt`] hands
/// over what the test put there (and records whether a link was up).
struct Shared {
    inner: MemoryStore,
    member: crate::store::Member,
    orphans: std::sync::Mutex<Option<crate::store::Orphans>>,
    asked_with_link: std::sync::Mutex<Vec<bool>>,
}

impl Store for Shared {
    fn begin(&self) -> Result<Box<dyn Transaction + '_>, StoreError> {
        self.inner.begin()
    }
    fn chats(&self) -> Result<Vec<(u64, ChatRecord)>, StoreError> {
        self.inner.chats()
    }
    fn pending_inbound(&self) -> Result<Vec<crate::store::PendingInbound>, StoreError> {
        self.inner.pending_inbound()
    }
    fn last_chats(&self) -> Result<Vec<crate::store::LastChat>, StoreError> {
        self.inner.last_chats()
    }
    fn meta(&self, key: &str) -> Result<Option<u64>, StoreError> {
        self.inner.meta(key)
    }
    fn entries(&self, kind: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.inner.entries(kind)
    }
    fn member(&self) -> Option<&crate::store::Member> {
        Some(&self.member)
    }
    fn adopt(&self, with_link: bool) -> Result<crate::store::Orphans, StoreError> {
        self.asked_with_link.lock().unwrap().push(with_link);
        Ok(self.orphans.lock().unwrap().take().unwrap_or_default())
    }
}

/// Taking a dead instance's work over: its pending chat is sent, its
/// pending text delivered, its user told (naming the last chat it took),
/// and a user who registered through it becomes known here. Without a
/// link, an inbound text is handed on instead of delivered.
#[test]
fn a_dead_instance_s_work_is_resumed_and_its_users_told() {
    use crate::store::{ChatState, LastChat, Orphans, PendingInbound, StoreExt};
    let cfg_gateway = gateway();
    let n = |s: &str| PhoneNumber::parse(s, None).unwrap();
    let shared = Arc::new(Shared {
        inner: MemoryStore::default(),
        member: crate::store::Member {
            instance: "gw-a".into(),
            lease: Duration::from_secs(15),
        },
        orphans: Default::default(),
        asked_with_link: Default::default(),
    });
    // Dave registered through the dead instance.
    shared
        .inner
        .write(|t| {
            t.put_entry(
                crate::store::ENTRY_USER,
                "dave@example.com",
                Some(r#"{"number":"+15550004444","account":"main","approved":true}"#),
            )
        })
        .unwrap();
    let gw = Gateway::with_store(
        cfg_gateway.routing.clone(),
        Arc::default(),
        shared.clone(),
        DEFAULT_RETRY_DEADLINE,
    );
    assert!(gw.start_run().is_empty(), "no global notice when shared");
    let sms = InboundSms {
        id: "SM-in".into(),
        from: n("+15557654321"),
        to: n("+15550001111"),
        body: "while gw-b died".into(),
        media: vec![],
        others: vec![],
        subject: None,
    };
    let pending_chat = ChatRecord {
        created: 100,
        account: "main".into(),
        user_full_jid: "alice@example.com/phone".into(),
        contact_jid: "+15557654321@sms.example.com".into(),
        stanza_id: Some("m9".into()),
        receipt: true,
        parts: vec![OutboundSms {
            from: n("+15550001111"),
            to: n("+15557654321"),
            body: "pending at gw-b".into(),
            media: vec![],
            cc: vec![],
        }],
        state: ChatState::Sending,
        group: false,
    };
    *shared.orphans.lock().unwrap() = Some(Orphans {
        dead: vec!["gw-b".into()],
        chats: vec![(77, pending_chat)],
        inbound: vec![PendingInbound {
            id: 5,
            account: "main".into(),
            sms: sms.clone(),
        }],
        last_chats: vec![LastChat {
            user: "alice@example.com".into(),
            contact_jid: "+15557654321@sms.example.com".into(),
            created: 100,
            preview: "pending at gw-b".into(),
        }],
    });
    cfg_gateway.routing.metrics.link_up();
    let actions = gw.adopt();
    assert_eq!(shared.asked_with_link.lock().unwrap()[..], [true]);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Pstn(PstnCommand::Send { ticket: 77, .. }))),
        "{actions:?}"
    );
    assert!(
        actions.iter().any(|a| matches!(a,
            Action::Xmpp(OutgoingStanza::Chat { body, inbound_id: Some(5), .. }) if body == "while gw-b died")),
        "{actions:?}"
    );
    let notices: Vec<&String> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Xmpp(OutgoingStanza::Chat { from, to, body, .. })
                if from == "sms.example.com" && to == "alice@example.com" =>
            {
                Some(body)
            }
            _ => None,
        })
        .collect();
    assert_eq!(notices.len(), 1, "{actions:?}");
    assert!(notices[0].contains("instances stopped unexpectedly"));
    assert!(notices[0].contains("\"pending at gw-b\""));
    assert!(
        gw.routing
            .users
            .by_number("main", &n("+15550004444"))
            .is_some(),
        "dave, who registered through gw-b, is known here now"
    );
    // Nothing more to take: nothing happens.
    assert!(gw.adopt().is_empty());

    // Without a link, a text is handed on, not delivered here.
    cfg_gateway.routing.metrics.link_down();
    let out = gw
        .inbound(
            "main",
            &InboundSms {
                id: "SM-2".into(),
                ..sms
            },
        )
        .unwrap();
    assert!(
        !out.iter()
            .any(|a| matches!(a, Action::Xmpp(OutgoingStanza::Chat { .. }))),
        "{out:?}"
    );
    assert!(gw.adopt().is_empty());
    assert_eq!(
        shared.asked_with_link.lock().unwrap()[..],
        [true, true, false]
    );
}

/// #27: limits count what carriers bill, not API requests. A 2,000
/// character GSM-7 chat is 14 segments (153 each), though the account
/// takes it in one request; a group text costs one per recipient; and
/// `limits.texts_per_day` caps a user's day.
#[test]
fn limits_count_billed_segments_recipients_and_days() {
    let g = gateway_with(
        "[limits]\ntexts_per_minute = 600\ntexts_burst = 100\nmax_parts = 10\ntexts_per_day = 20\n",
    );
    let to = "+15557654321@sms.example.com";
    let text = expect_error(
        g.chat(chat("alice@example.com/phone", to, &"x".repeat(2_000))),
        ErrorCondition::NotAcceptable,
    );
    assert!(
        text.contains("14 SMS") && text.contains("limits.max_parts"),
        "{text}"
    );
    // 10 segments of GSM-7 (1,530 characters) go: 10 of the day's 20.
    let a = g.chat(chat("alice@example.com/phone", to, &"x".repeat(1_530)));
    assert!(matches!(&a[..], [Action::Pstn(_)]), "{a:?}");
    // UCS-2: 67 a segment, so 9 segments; 10 + 9 = 19.
    let a = g.chat(chat("alice@example.com/phone", to, &"é€ж".repeat(201)));
    assert!(matches!(&a[..], [Action::Pstn(_)]), "{a:?}");
    // A group of two more numbers: 2 against the one left today.
    let text = expect_error(
        g.chat(chat(
            "alice@example.com/phone",
            "+15557654321,+15553334444@sms.example.com",
            "to both",
        )),
        ErrorCondition::ResourceConstraint,
    );
    assert!(
        text.contains("limits.texts_per_day") && text.contains("20 SMS a day"),
        "{text}"
    );
    let a = g.chat(chat("alice@example.com/phone", to, "the last one today"));
    assert!(matches!(&a[..], [Action::Pstn(_)]), "{a:?}");
    let text = expect_error(
        g.chat(chat("alice@example.com/phone", to, "one more")),
        ErrorCondition::ResourceConstraint,
    );
    assert!(text.contains("limits.texts_per_day"), "{text}");
}

/// #28: a picture that cannot be fetched (retried for up to an hour) no
/// longer holds its text: after `media.wait_secs` the words go, with a
/// line saying the attachment follows; when the fetch ends, the attachment
/// (or a line saying it failed) comes alone, completing the stored text.
#[test]
fn a_slow_picture_does_not_hold_its_text() {
    let g = gateway();
    let sms = InboundSms::new(
        "SMslow",
        n("+15557654321"),
        n("+15550001111"),
        "look at this",
        vec![Media::new(
            "https://carrier.example/1",
            Some("image/jpeg".into()),
        )],
    );
    let a = g.inbound("main", &sms).unwrap();
    assert!(
        matches!(&a[..], [Action::Pstn(PstnCommand::FetchMedia { .. })]),
        "{a:?}"
    );
    let id = g.store.pending_inbound().unwrap()[0].id;
    let (early, _) = g.pstn(PstnEvent::MediaSlow {
        account: "main".into(),
        id,
        sms: sms.clone(),
    });
    let bodies: Vec<(String, Option<u64>, Option<String>)> = early
        .iter()
        .filter_map(|a| match a {
            Action::Xmpp(OutgoingStanza::Chat {
                body,
                inbound_id,
                stable_id,
                ..
            }) => Some((body.clone(), *inbound_id, stable_id.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(bodies.len(), 2, "{early:?}");
    assert_eq!(
        bodies[0],
        ("look at this".into(), None, Some("SMslow".into()))
    );
    assert!(
        bodies[1].0.contains("on its way") && bodies[1].1.is_none(),
        "{bodies:?}"
    );
    // Still pending: nothing completed it yet.
    assert_eq!(g.store.pending_inbound().unwrap().len(), 1);
    let mut failed = sms.clone();
    failed.media[0].fetched = Some(Fetched::Failed {
        reason: "the carrier's media server could not be reached".into(),
    });
    let (late, _) = g.pstn(PstnEvent::MediaFetched {
        account: "main".into(),
        id,
        sms: failed,
    });
    let [Action::Xmpp(OutgoingStanza::Chat {
        body,
        inbound_id: Some(done),
        ..
    })] = &late[..]
    else {
        panic!("the attachment's line alone: {late:?}")
    };
    assert_eq!(*done, id);
    assert!(body.contains("could not be fetched"), "{body}");
}

/// A one-to-one text from `from` to Alice.
fn text_to_alice(id: &str, from: &str, body: &str) -> InboundSms {
    InboundSms {
        id: id.into(),
        from: n(from),
        to: n("+15550001111"),
        body: body.into(),
        media: vec![],
        others: vec![],
        subject: None,
    }
}

/// The bodies of the chats among `actions`.
fn chat_bodies(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Xmpp(OutgoingStanza::Chat { body, .. }) => Some(body.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn stop_refuses_chats_until_start_and_the_user_is_told() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let configured = gateway();
    let make = || {
        Gateway::with_store(
            configured.routing.clone(),
            Arc::default(),
            store.clone(),
            DEFAULT_RETRY_DEADLINE,
        )
    };
    let g = make();
    let to_contact = || chat("alice@example.com/x", "+15557654321@sms.example.com", "hi");
    // The text first, then what it means (#31).
    let a = g
        .inbound("main", &text_to_alice("SMa", "+15557654321", " Stop. "))
        .unwrap();
    let bodies = chat_bodies(&a);
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(bodies[0], " Stop. ");
    assert!(
        bodies[1].contains("+15557654321 has opted out") && bodies[1].contains("texting START"),
        "{}",
        bodies[1]
    );
    // A chat to them is refused at once: no send.
    let why = expect_error(g.chat(to_contact()), ErrorCondition::Forbidden);
    assert!(why.contains("opted out") && why.contains("START"), "{why}");
    // The carrier repeating the webhook tells nobody twice.
    assert!(g
        .inbound("main", &text_to_alice("SMa", "+15557654321", " Stop. "))
        .unwrap()
        .is_empty());
    // A text that merely has the word in it is a text.
    let a = g
        .inbound(
            "main",
            &text_to_alice("SMb", "+15557654321", "please stop by"),
        )
        .unwrap();
    assert_eq!(chat_bodies(&a), vec!["please stop by".to_owned()]);
    // Other contacts, and other users, are not concerned.
    sent_ticket(&g.chat(chat(
        "alice@example.com/x",
        "+15557654322@sms.example.com",
        "hi",
    )));
    sent_ticket(&g.chat(chat(
        "bob@example.com/x",
        "+15557654321@sms.example.com",
        "hi",
    )));
    // Kept across a restart.
    let g = make();
    g.load_people().unwrap();
    expect_error(g.chat(to_contact()), ErrorCondition::Forbidden);
    // START undoes it, and says so.
    let a = g
        .inbound("main", &text_to_alice("SMc", "+15557654321", "start"))
        .unwrap();
    let bodies = chat_bodies(&a);
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert!(bodies[1].contains("opted back in"), "{}", bodies[1]);
    sent_ticket(&g.chat(to_contact()));
    // START again changes nothing: no second notice.
    let a = g
        .inbound("main", &text_to_alice("SMd", "+15557654321", "START"))
        .unwrap();
    assert_eq!(chat_bodies(&a).len(), 1);
}

#[test]
fn the_carriers_opt_out_codes_mark_the_contact_and_failures_read_plainly() {
    let g = gateway();
    let to = |number: &str| {
        chat(
            "alice@example.com/x",
            &format!("{number}@sms.example.com"),
            "hi",
        )
    };
    // Twilio refuses the send with 21610 (a STOP the gateway never saw).
    let t = sent_ticket(&g.chat(to("+15557654321")));
    let refused = ProviderError::from_http_status(400, "Attempt to send to unsubscribed recipient")
        .with_code("21610");
    let why = expect_error(
        g.pstn(send_result(t, &[], Some(refused))).0,
        ErrorCondition::Forbidden,
    );
    assert!(
        why.starts_with("Not sent: The contact has opted out") && why.contains("21610"),
        "{why}"
    );
    expect_error(g.chat(to("+15557654321")), ErrorCondition::Forbidden);

    // Telnyx reports its block (40300) in the delivery report.
    let status = |id: &str, why: &str| PstnEvent::Status {
        account: "main".into(),
        report: StatusReport {
            message_id: id.into(),
            status: DeliveryStatus::Failed(crate::Failure::from_words(why)),
        },
    };
    let t = sent_ticket(&g.chat(to("+15557654323")));
    let _ = g.pstn(send_result(t, &["m1"], None));
    let why = expect_error(
        g.pstn(status(
            "m1",
            "delivery_failed, error 40300: Blocked due to STOP message",
        ))
        .0,
        ErrorCondition::Forbidden,
    );
    assert!(why.contains("opted out") && why.contains("40300"), "{why}");
    expect_error(g.chat(to("+15557654323")), ErrorCondition::Forbidden);

    // Other codes: the sentence, then the carrier's words and code.
    for (code, sentence) in [
        ("30003", "could not be reached"),
        ("30006", "cannot receive texts"),
        ("30007", "blocked it as spam"),
        ("40002", "blocked it as spam"),
        ("30034", "not registered for business texting"),
    ] {
        let t = sent_ticket(&g.chat(to("+15557654329")));
        let _ = g.pstn(send_result(t, &[&format!("id{code}")], None));
        let why = expect_error(
            g.pstn(status(
                &format!("id{code}"),
                &format!("undelivered, error {code}: the carrier's words"),
            ))
            .0,
            ErrorCondition::RecipientUnavailable,
        );
        assert!(
            why.contains(sentence) && why.contains(&format!("error {code}: the carrier's words")),
            "{code}: {why}"
        );
    }
    // An unknown code is the carrier's words alone.
    let t = sent_ticket(&g.chat(to("+15557654329")));
    let _ = g.pstn(send_result(t, &["idx"], None));
    let why = expect_error(
        g.pstn(status("idx", "undelivered, error 39999")).0,
        ErrorCondition::RecipientUnavailable,
    );
    assert_eq!(why, "Not delivered: undelivered, error 39999.");
}

#[test]
fn texts_wait_in_the_store_while_the_link_is_down_and_go_out_in_order() {
    let g = gateway();
    let text = |i: usize| text_to_alice(&format!("SM{i}"), "+15557654321", &format!("text {i}"));
    g.routing.metrics.link_down();
    // Held in the store, not in the channel to the XMPP process (#26): the
    // webhook is answered, and nothing waits for the link.
    for i in 0..1200 {
        assert!(chat_bodies(&g.inbound("main", &text(i)).unwrap()).is_empty());
    }
    assert_eq!(g.store.pending_inbound().unwrap().len(), 1200);
    assert!(!g.begin_release(), "not while the link is down");
    g.routing.metrics.link_up();
    assert!(g.begin_release());
    assert!(!g.begin_release(), "one release at a time");
    let mut bodies = chat_bodies(&g.next_released());
    assert_eq!(bodies.len(), super::inbound::RELEASE_BATCH);
    // One that comes during the release waits behind the held ones.
    assert!(chat_bodies(&g.inbound("main", &text(5000)).unwrap()).is_empty());
    loop {
        let batch = g.next_released();
        if batch.is_empty() {
            break;
        }
        bodies.extend(chat_bodies(&batch));
    }
    let want: Vec<String> = (0..1200)
        .chain([5000])
        .map(|i| format!("text {i}"))
        .collect();
    assert_eq!(bodies, want, "every one, oldest first");
    // Released: the next goes at once.
    assert_eq!(
        chat_bodies(&g.inbound("main", &text(6000)).unwrap()),
        vec!["text 6000".to_owned()]
    );
    // Lost again in the middle of a release: the rest waits for its return.
    g.routing.metrics.link_down();
    for i in 7000..7600 {
        g.inbound("main", &text(i)).unwrap();
    }
    g.routing.metrics.link_up();
    assert!(g.begin_release());
    assert_eq!(
        chat_bodies(&g.next_released()).len(),
        super::inbound::RELEASE_BATCH
    );
    g.routing.metrics.link_down();
    assert!(g.next_released().is_empty());
    g.routing.metrics.link_up();
    assert!(g.begin_release());
    assert_eq!(chat_bodies(&g.next_released()).len(), 100);
    assert!(g.next_released().is_empty());
}

/// An embedder without an XMPP process never reports the link: nothing is
/// held for it.
#[test]
fn without_a_link_ever_reported_nothing_is_held() {
    let g = gateway();
    let a = g
        .inbound("main", &text_to_alice("SMe", "+15557654321", "hello"))
        .unwrap();
    assert_eq!(chat_bodies(&a), vec!["hello".to_owned()]);
}

/// A store that counts the pending texts it hands out, and how.
#[derive(Default)]
struct Counted {
    inner: MemoryStore,
    /// Rows handed out by `pending_inbound` (everything pending).
    all_reads: std::sync::atomic::AtomicUsize,
    /// Rows handed out by `pending_inbound_between`.
    range_rows: std::sync::atomic::AtomicUsize,
}

impl Store for Counted {
    fn begin(&self) -> Result<Box<dyn Transaction + '_>, StoreError> {
        self.inner.begin()
    }
    fn chats(&self) -> Result<Vec<(u64, ChatRecord)>, StoreError> {
        self.inner.chats()
    }
    fn pending_inbound(&self) -> Result<Vec<crate::store::PendingInbound>, StoreError> {
        let all = self.inner.pending_inbound()?;
        self.all_reads
            .fetch_add(all.len(), std::sync::atomic::Ordering::Relaxed);
        Ok(all)
    }
    fn pending_inbound_between(
        &self,
        first: u64,
        last: u64,
    ) -> Result<Vec<crate::store::PendingInbound>, StoreError> {
        let some = self.inner.pending_inbound_between(first, last)?;
        self.range_rows
            .fetch_add(some.len(), std::sync::atomic::Ordering::Relaxed);
        Ok(some)
    }
    fn last_chats(&self) -> Result<Vec<crate::store::LastChat>, StoreError> {
        self.inner.last_chats()
    }
    fn meta(&self, key: &str) -> Result<Option<u64>, StoreError> {
        self.inner.meta(key)
    }
    fn entries(&self, kind: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.inner.entries(kind)
    }
}

/// Releasing what was held reads each held text once, a batch's range at a
/// time: 2,000 held texts cost 2,000 rows read, where reading everything
/// pending for each batch of 500 cost 5,000 (and grew as the square of the
/// backlog).
#[test]
fn a_release_reads_each_held_text_once() {
    use std::sync::atomic::Ordering;
    let cfg_gateway = gateway();
    let store = Arc::new(Counted::default());
    let g = Gateway::with_store(
        cfg_gateway.routing.clone(),
        Arc::default(),
        store.clone(),
        DEFAULT_RETRY_DEADLINE,
    );
    let text = |i: usize| text_to_alice(&format!("SM{i}"), "+15557654321", &format!("text {i}"));
    g.routing.metrics.link_down();
    for i in 0..2000 {
        assert!(chat_bodies(&g.inbound("main", &text(i)).unwrap()).is_empty());
    }
    g.routing.metrics.link_up();
    let before = store.all_reads.load(Ordering::Relaxed);
    assert!(g.begin_release());
    let mut released = 0;
    loop {
        let batch = chat_bodies(&g.next_released());
        if batch.is_empty() {
            break;
        }
        released += batch.len();
    }
    assert_eq!(released, 2000);
    assert_eq!(store.range_rows.load(Ordering::Relaxed), 2000);
    assert_eq!(
        store.all_reads.load(Ordering::Relaxed),
        before,
        "no read of everything pending"
    );
}
