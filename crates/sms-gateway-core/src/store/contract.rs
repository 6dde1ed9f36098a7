//! The contract every [`Store`] passes.

use super::*;
use crate::message::{InboundSms, OutboundSms};

/// The checks every [`Store`] must pass; `sms-store-sqlite` runs them too.
pub fn check_store(store: &dyn Store) {
    use crate::phone::PhoneNumber;
    let n = |s: &str| PhoneNumber::parse(s, None).expect("valid");
    let chat = ChatRecord {
        created: 100,
        account: "main".into(),
        user_full_jid: "alice@example.com/phone".into(),
        contact_jid: "+15557654321@sms.example.com".into(),
        stanza_id: Some("m1".into()),
        receipt: true,
        parts: vec![OutboundSms {
            from: n("+15550001111"),
            to: n("+15557654321"),
            body: "hi ✓".into(),
            media: vec![],
            cc: vec![],
        }],
        state: ChatState::Sending,
        group: false,
    };
    assert_eq!(store.last_chats().expect("last"), vec![]);
    let t1 = store.write(|t| t.insert_chat(&chat)).expect("insert");
    let mut later = chat.clone();
    later.created = 101;
    later.user_full_jid = "Alice@Example.com/laptop".into();
    later.parts[0].body = "x".repeat(50);
    let t2 = store.write(|t| t.insert_chat(&later)).expect("insert");
    assert!(t2 > t1, "tickets increase");
    assert_eq!(
        store.last_chats().expect("last"),
        vec![LastChat {
            user: "alice@example.com".into(),
            contact_jid: "+15557654321@sms.example.com".into(),
            created: 101,
            preview: format!("{}…", "x".repeat(40)),
        }],
        "one per user (bare JID), the newest"
    );
    // The checks below want t2 to hold `chat`.
    store.write(|t| t.update_chat(t2, &chat)).expect("update");

    assert_eq!(store.meta("running").expect("meta"), None);
    store.write(|t| t.set_meta("running", 1)).expect("set meta");
    store.write(|t| t.set_meta("running", 0)).expect("set meta");
    assert_eq!(store.meta("running").expect("meta"), Some(0));
    let mut sent = chat.clone();
    sent.state = ChatState::Sent {
        ids: vec!["SM1".into()],
        undelivered: 1,
    };
    assert_eq!(
        store.write(|t| t.find_sent("main", "SM1")).expect("find"),
        None
    );
    store.write(|t| t.update_chat(t1, &sent)).expect("update");
    assert_eq!(
        store.chats().expect("chats"),
        vec![(t1, sent.clone()), (t2, chat.clone())]
    );
    assert_eq!(
        store.write(|t| t.find_sent("main", "SM1")).expect("find"),
        Some((t1, sent.clone())),
        "a sent chat is found by its carrier id"
    );
    assert_eq!(
        store.write(|t| t.find_sent("other", "SM1")).expect("find"),
        None,
        "carrier ids are per account"
    );
    store.write(|t| t.delete_chat(t2)).expect("delete");
    assert_eq!(store.chats().expect("chats"), vec![(t1, sent.clone())]);

    // A multi-part chat is found by any part's id, until it is forgotten.
    let mut two = chat.clone();
    two.state = ChatState::Sent {
        ids: vec!["SM2a".into(), "SM2b".into()],
        undelivered: 2,
    };
    let t3 = store.write(|t| t.insert_chat(&two)).expect("insert sent");
    assert_eq!(
        store.write(|t| t.find_sent("main", "SM2b")).expect("find"),
        Some((t3, two.clone()))
    );
    if let ChatState::Sent { undelivered, .. } = &mut two.state {
        *undelivered = 1;
    }
    store.write(|t| t.update_chat(t3, &two)).expect("update");
    assert_eq!(
        store.write(|t| t.find_sent("main", "SM2a")).expect("find"),
        Some((t3, two.clone()))
    );
    store
        .write(|t| t.forget_sent_id("main", "SM2a"))
        .expect("forget one id");
    assert_eq!(
        store.write(|t| t.find_sent("main", "SM2a")).expect("find"),
        None
    );
    store
        .write(|t| t.update_chat(t3, &two))
        .expect("update again");
    assert_eq!(
        store.write(|t| t.find_sent("main", "SM2a")).expect("find"),
        None,
        "a later update does not bring a dropped id back"
    );
    assert_eq!(
        store.write(|t| t.find_sent("main", "SM2b")).expect("find"),
        Some((t3, two)),
        "still found by its other part"
    );
    store.write(|t| t.delete_chat(t3)).expect("delete");
    assert_eq!(
        store.write(|t| t.find_sent("main", "SM2a")).expect("find"),
        None
    );

    let sms = InboundSms {
        id: "SMin".into(),
        from: n("+15557654321"),
        to: n("+15550001111"),
        body: "yo".into(),
        media: vec![],
        others: vec![],
        subject: None,
    };
    let id = store
        .write(|t| t.insert_inbound("main", &sms, 100))
        .expect("insert inbound")
        .expect("new");
    assert_eq!(
        store
            .write(|t| t.insert_inbound("main", &sms, 101))
            .expect("again"),
        None,
        "a repeat is recognised"
    );
    assert!(
        store
            .write(|t| t.insert_inbound("other", &sms, 101))
            .expect("other account")
            .is_some(),
        "ids are per account"
    );
    let pending = store.pending_inbound().expect("pending");
    assert_eq!(
        pending[0],
        PendingInbound {
            id,
            account: "main".into(),
            sms: sms.clone()
        }
    );
    // A range of them, as the release of held texts reads them.
    let between = |a, b| store.pending_inbound_between(a, b).expect("between");
    assert_eq!(pending.len(), 2, "{pending:?}");
    assert_eq!(between(id, id), vec![pending[0].clone()]);
    assert_eq!(between(0, u64::MAX), pending);
    assert_eq!(between(pending[1].id, u64::MAX), vec![pending[1].clone()]);
    assert!(between(pending[1].id + 1, u64::MAX).is_empty());
    // Its media, once fetched, are kept with it; a delivered text is not
    // changed any more.
    let mut fetched = sms.clone();
    fetched.media = vec![crate::message::Media {
        url: "https://carrier.example/m/1".into(),
        content_type: Some("image/png".into()),
        fetched: Some(crate::message::Fetched::Served {
            url: "https://gw.example/media/00/a.png".into(),
        }),
    }];
    store
        .write(|t| t.update_inbound(id, &fetched))
        .expect("update inbound");
    assert_eq!(store.pending_inbound().expect("pending")[0].sms, fetched);
    store.write(|t| t.inbound_delivered(id)).expect("delivered");
    store
        .write(|t| t.update_inbound(id, &sms))
        .expect("update a delivered text");
    assert!(store
        .pending_inbound()
        .expect("pending")
        .iter()
        .all(|p| p.id != id));
    assert!(
        between(id, id).is_empty(),
        "a delivered text is not pending"
    );
    assert_eq!(
        store
            .write(|t| t.insert_inbound("main", &sms, 102))
            .expect("again"),
        None,
        "still a repeat once delivered"
    );

    // Expiry forgets old sent chats and old delivered texts, nothing pending.
    assert_eq!(store.write(|t| t.expire(50, 0)).expect("expire"), 0);
    let removed = store.write(|t| t.expire(1000, 0)).expect("expire");
    assert_eq!(removed, 2, "the sent chat and the delivered text");
    assert!(store.chats().expect("chats").is_empty());
    assert_eq!(
        store.write(|t| t.find_sent("main", "SM1")).expect("find"),
        None,
        "an expired chat is not found"
    );
    assert_eq!(
        store.pending_inbound().expect("pending").len(),
        1,
        "the undelivered one stays"
    );
    assert_eq!(
        store
            .write(|t| t.insert_inbound("main", &sms, 2000))
            .expect("replayed"),
        None,
        "a webhook replayed after its text expired is still a repeat"
    );
    store.write(|t| t.expire(1000, 1000)).expect("expire seen");
    assert!(
        store
            .write(|t| t.insert_inbound("main", &sms, 2000))
            .expect("after expiry")
            .is_some(),
        "forgotten once the seen window has passed too"
    );

    // Entries: written, replaced, kinds kept apart, deleted, ordered by key.
    assert_eq!(store.entries(ENTRY_USER).expect("entries"), vec![]);
    store
        .write(|t| {
            t.put_entry(ENTRY_USER, "bob@example.com", Some("{\"a\":1}"))?;
            t.put_entry(ENTRY_USER, "alice@example.com", Some("{}"))?;
            t.put_entry(ENTRY_CONTACT, "alice@example.com|+15557654321", Some("c"))?;
            t.put_entry(ENTRY_USER, "bob@example.com", Some("{\"a\":2}"))
        })
        .expect("entries written");
    assert_eq!(
        store.entries(ENTRY_USER).expect("entries"),
        vec![
            ("alice@example.com".to_owned(), "{}".to_owned()),
            ("bob@example.com".to_owned(), "{\"a\":2}".to_owned()),
        ]
    );
    store
        .write(|t| t.put_entry(ENTRY_USER, "alice@example.com", None))
        .expect("entry deleted");
    assert_eq!(store.entries(ENTRY_USER).expect("entries").len(), 1);
    assert_eq!(store.entries(ENTRY_CONTACT).expect("entries").len(), 1);

    // Several chats of one user in one batch: the last is her last chat
    // (SQLite writes it once, at the commit, #30).
    let carol = |created: u64, body: &str| {
        let mut c = chat.clone();
        c.created = created;
        c.user_full_jid = "carol@example.com/phone".into();
        c.parts[0].body = body.into();
        c
    };
    let hers = |store: &dyn Store| {
        store
            .last_chats()
            .expect("last")
            .into_iter()
            .find(|l| l.user == "carol@example.com")
            .map(|l| (l.created, l.preview))
    };
    store
        .write(|t| {
            t.insert_chat(&carol(200, "first"))?;
            t.insert_chat(&carol(201, "second"))?;
            t.insert_chat(&carol(202, "third"))
        })
        .expect("insert");
    assert_eq!(hers(store), Some((202, "third".to_owned())));
    store
        .write(|t| t.insert_chat(&carol(204, "fourth")))
        .expect("insert");
    assert_eq!(hers(store), Some((204, "fourth".to_owned())));
}
