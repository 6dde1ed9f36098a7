//! Tests of `lib.rs`.

use super::*;
use crate::checkpoint::{CHECKPOINT_IDLE, CHECKPOINT_POLL};
use sms_gateway_core::store::StoreExt;

pub(crate) fn inbound(id: &str, body: &str) -> InboundSms {
    InboundSms {
        id: id.into(),
        from: sms_gateway_core::PhoneNumber::parse("+15557654321", None).unwrap(),
        to: sms_gateway_core::PhoneNumber::parse("+15550001111", None).unwrap(),
        body: body.into(),
        media: vec![],
        others: vec![],
        subject: None,
    }
}

/// A new store is its owner's alone, whatever the umask; so are the
/// files SQLite makes beside it.
#[cfg(unix)]
#[test]
fn a_new_store_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let store = SqliteStore::open(&path).unwrap();
    drop(store);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{:?}", entry.path());
    }
}

#[test]
fn sqlite_store_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
    sms_gateway_core::store::check_store(&store);
    let left: i64 = store
        .conn()
        .query_row("SELECT count(*) FROM sent_ids", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0, "forgotten chats leave no receipt-map rows");
}

/// A user's last chat is written at the commit (#30): a batch rolled back
/// leaves the one before, and the next batch starts afresh.
#[test]
fn a_batch_rolled_back_leaves_the_last_chat_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
    let chat = |created: u64| ChatRecord {
        created,
        account: "main".into(),
        user_full_jid: "carol@example.com/phone".into(),
        contact_jid: "+15557654321@sms.example.com".into(),
        stanza_id: None,
        receipt: false,
        parts: vec![],
        state: sms_gateway_core::store::ChatState::Sending,
        group: false,
    };
    let last = |s: &SqliteStore| {
        s.last_chats()
            .unwrap()
            .iter()
            .map(|l| l.created)
            .collect::<Vec<_>>()
    };
    store.write(|t| t.insert_chat(&chat(1)).map(drop)).unwrap();
    {
        let mut tx = store.begin().unwrap();
        tx.insert_chat(&chat(2)).unwrap();
    }
    assert_eq!(last(&store), vec![1], "rolled back");
    store.write(|t| t.set_meta("x", 1)).unwrap();
    assert_eq!(last(&store), vec![1], "a later batch does not write it");
    store.write(|t| t.insert_chat(&chat(4)).map(drop)).unwrap();
    assert_eq!(last(&store), vec![4]);
}

#[test]
fn what_was_written_survives_reopening_and_journal_mode_is_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let sms = inbound("SM1", "kept");
    {
        let s = SqliteStore::open(&path).unwrap();
        assert!(s
            .write(|t| t.insert_inbound("main", &sms, 1))
            .unwrap()
            .is_some());
        let mode: String = s
            .conn()
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.pending_inbound().unwrap()[0].sms, sms);
    assert_eq!(
        s.write(|t| t.insert_inbound("main", &sms, 2)).unwrap(),
        None
    );
}

#[test]
fn a_batch_is_durable_only_once_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let sms = inbound("SMb", "batched");
    {
        let s = SqliteStore::open(&path).unwrap();
        let mut tx = s.begin().unwrap();
        tx.insert_inbound("main", &sms, 1).unwrap();
        // Left open when the store closes: as if the process died here.
        std::mem::forget(tx);
    }
    let s = SqliteStore::open(&path).unwrap();
    assert!(
        s.pending_inbound().unwrap().is_empty(),
        "an uncommitted batch is not kept"
    );
    let mut tx = s.begin().unwrap();
    tx.insert_inbound("main", &sms, 1).unwrap();
    tx.commit().unwrap();
    drop(s);
    assert_eq!(
        SqliteStore::open(&path)
            .unwrap()
            .pending_inbound()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn the_receipt_map_is_built_from_a_version_1_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    {
        // A store as version 1 left it: one sent chat, one still sending.
        let c = Connection::open(&path).unwrap();
        c.execute_batch(MIGRATIONS[0]).unwrap();
        c.pragma_update(None, "user_version", 1).unwrap();
        c.execute_batch(
            r#"INSERT INTO chats (created, sent, data) VALUES
            (1, 1, '{"created":1,"account":"main","user_full_jid":"a@x/r","contact_jid":"+15557654321@sms.x","stanza_id":"m1","receipt":true,"parts":[],"state":{"Sent":{"ids":["SMa","SMb"],"undelivered":2}}}'),
            (2, 0, '{"created":2,"account":"main","user_full_jid":"a@x/r","contact_jid":"+15557654321@sms.x","stanza_id":"m2","receipt":true,"parts":[],"state":"Sending"}');"#,
        )
        .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    let (ticket, chat) = s.write(|t| t.find_sent("main", "SMb")).unwrap().unwrap();
    assert_eq!((ticket, chat.stanza_id.as_deref()), (1, Some("m1")));
    assert!(s.write(|t| t.find_sent("main", "SMa")).unwrap().is_some());
    assert!(s.write(|t| t.find_sent("other", "SMa")).unwrap().is_none());
    let n: i64 = s
        .conn()
        .query_row("SELECT count(*) FROM sent_ids", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2, "only the sent chat's ids");
}

#[test]
fn the_wal_is_checkpointed_in_the_background_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let s = SqliteStore::open(&path).unwrap();
    let auto: i64 = s
        .conn()
        .pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))
        .unwrap();
    assert_eq!(auto, 0, "no checkpoint inside the Gateway's commits");
    let write_some = |from: usize| {
        for i in from..from + 200 {
            let sms = inbound(&format!("SM{i}"), &"x".repeat(2000));
            s.write(|t| t.insert_inbound("main", &sms, 1)).unwrap();
        }
    };
    let waiting = || s.activity.wal_bytes.load(Ordering::Relaxed);
    let checkpointed = || {
        let deadline = std::time::Instant::now() + CHECKPOINT_IDLE * 20;
        while waiting() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(CHECKPOINT_POLL);
        }
        assert_eq!(waiting(), 0, "checkpointed once the writes paused");
    };
    let db_len = || std::fs::metadata(&path).unwrap().len();
    let wal_len = || {
        std::fs::metadata(dir.path().join("s.db-wal"))
            .unwrap()
            .len()
    };
    let before = db_len();
    write_some(0);
    assert!(
        waiting() >= 200 * 2000,
        "the WAL hook counts: {}",
        waiting()
    );
    checkpointed();
    // The WAL was copied into the database file ...
    assert!(db_len() > before + 200 * 2000, "{before} -> {}", db_len());
    // ... and the next writes go over it from its start: the file does
    // not grow (RESTART and a size limit, not TRUNCATE).
    let wal = wal_len();
    assert!(wal > 200 * 2000, "{wal}");
    write_some(200);
    assert!(waiting() > 0);
    assert!(wal_len() <= wal, "{wal} -> {}", wal_len());
    checkpointed();
}

#[test]
fn repeated_webhooks_are_caught_in_memory_but_not_after_a_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let sms = inbound("SMrepeat", "hello");
    {
        let s = SqliteStore::open(&path).unwrap();
        let mut tx = s.begin().unwrap();
        assert!(tx.insert_inbound("main", &sms, 1).unwrap().is_some());
        // The process dies before the commit.
        std::mem::forget(tx);
    }
    let s = SqliteStore::open(&path).unwrap();
    {
        let mut tx = s.begin().unwrap();
        assert!(
            tx.insert_inbound("main", &sms, 1).unwrap().is_some(),
            "never stored, so the carrier's retry is new"
        );
        // The batch fails and is dropped: rolled back.
    }
    let mut tx = s.begin().unwrap();
    let id = tx.insert_inbound("main", &sms, 1).unwrap();
    assert!(id.is_some(), "the retry after a rollback is stored");
    assert!(
        tx.insert_inbound("main", &sms, 1).unwrap().is_none(),
        "a repeat in the same batch"
    );
    tx.commit().unwrap();
    assert!(s
        .write(|t| t.insert_inbound("main", &sms, 1))
        .unwrap()
        .is_none());
    assert!(
        s.write(|t| t.insert_inbound("other", &sms, 1))
            .unwrap()
            .is_some(),
        "the same id from another account is another text"
    );
    drop(s);
    let s = SqliteStore::open(&path).unwrap();
    assert!(
        s.write(|t| t.insert_inbound("main", &sms, 1))
            .unwrap()
            .is_none(),
        "still a repeat after reopening"
    );
    // Once the text has expired, its pair is still a repeat (from the
    // seen_expired table, across a reopen) until the seen window ends.
    s.write(|t| t.inbound_delivered(id.unwrap())).unwrap();
    assert_eq!(s.write(|t| t.expire(2, 0)).unwrap(), 1);
    assert!(s
        .write(|t| t.insert_inbound("main", &sms, 3))
        .unwrap()
        .is_none());
    drop(s);
    let s = SqliteStore::open(&path).unwrap();
    assert!(s
        .write(|t| t.insert_inbound("main", &sms, 3))
        .unwrap()
        .is_none());
    s.write(|t| t.expire(2, 2)).unwrap();
    assert!(s
        .write(|t| t.insert_inbound("main", &sms, 3))
        .unwrap()
        .is_some());
}

#[test]
fn a_version_4_store_keeps_its_inbound_texts_and_their_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    {
        let c = Connection::open(&path).unwrap();
        for m in &MIGRATIONS[..4] {
            c.execute_batch(m).unwrap();
        }
        c.pragma_update(None, "user_version", 4).unwrap();
        let data = serde_json::to_string(&inbound("SMold", "hello")).unwrap();
        c.execute(
            "INSERT INTO inbound (account, carrier_id, received, data) VALUES ('main', 'SMold', 1, ?1)",
            [&data],
        )
        .unwrap();
        // A later text, since expired: its id must not come back.
        c.execute(
            "INSERT INTO inbound (account, carrier_id, received, delivered, data) VALUES ('main', 'SMgone', 1, 1, '')",
            [],
        )
        .unwrap();
        c.execute("DELETE FROM inbound WHERE carrier_id = 'SMgone'", [])
            .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    let pending = s.pending_inbound().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].sms.id, "SMold");
    assert!(
        s.write(|t| t.insert_inbound("main", &inbound("SMold", "hello"), 2))
            .unwrap()
            .is_none(),
        "a repeat of a text stored before the migration"
    );
    assert_eq!(
        s.write(|t| t.insert_inbound("main", &inbound("SMnew", "hello"), 2))
            .unwrap(),
        Some(3),
        "ids go on from the old sequence"
    );
    let unique: i64 = s
        .conn()
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE tbl_name = 'inbound' AND type = 'index'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(unique, 0, "no index on disk");
}

/// Migration 8 keys the expired pairs a version-7 store kept as text: they
/// stay repeats, other accounts' texts with the same id do not, and the
/// table holds keys only.
#[test]
fn a_version_7_stores_expired_pairs_stay_repeats_as_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    {
        let c = Connection::open(&path).unwrap();
        for m in &MIGRATIONS[..7] {
            c.execute_batch(m).unwrap();
        }
        c.pragma_update(None, "user_version", 7).unwrap();
        c.execute(
            "INSERT INTO seen_expired (account, carrier_id, received) VALUES ('main', 'SMgone', 5)",
            [],
        )
        .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    let insert = |account: &str, id: &str| {
        s.write(|t| t.insert_inbound(account, &inbound(id, "hi"), 6))
            .unwrap()
    };
    assert_eq!(insert("main", "SMgone"), None, "still a repeat");
    assert!(
        insert("other", "SMgone").is_some(),
        "another account's text"
    );
    let (key, received): (i64, i64) = s
        .conn()
        .query_row("SELECT key, received FROM seen_expired", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(
        (key, received),
        (sms_gateway_core::store::seen_key("main", "SMgone"), 5)
    );
    // And the window still ends.
    s.write(|t| t.expire(0, 6)).unwrap();
    assert!(insert("main", "SMgone").is_some());
}

/// Migration 9 keys the receipt map: the ids a version-8 store still
/// mapped are found, one already reported delivered (dropped) stays
/// dropped, `dump` gives the pairs back from the chats, and a key that
/// names a chat without the id finds nothing.
#[test]
fn a_version_8_stores_receipt_map_is_kept_as_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    {
        let c = Connection::open(&path).unwrap();
        add_seen_key(&c).unwrap();
        for m in &MIGRATIONS[..8] {
            c.execute_batch(m).unwrap();
        }
        c.pragma_update(None, "user_version", 8).unwrap();
        c.execute_batch(
            r#"INSERT INTO chats (created, sent, data) VALUES
            (1, 1, '{"created":1,"account":"main","user_full_jid":"a@x/r","contact_jid":"+15557654321@sms.x","stanza_id":"m1","receipt":true,"parts":[],"state":{"Sent":{"ids":["SMa","SMb"],"undelivered":1}}}');
            INSERT INTO sent_ids (account, carrier_id, ticket) VALUES ('main', 'SMa', 1);"#,
        )
        .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    let found = |account: &str, id: &str| s.write(|t| t.find_sent(account, id)).unwrap();
    assert_eq!(found("main", "SMa").map(|(t, _)| t), Some(1));
    assert!(found("main", "SMb").is_none(), "dropped before");
    assert!(found("other", "SMa").is_none());
    assert_eq!(
        s.dump().unwrap().sent_ids,
        vec![("main".to_string(), "SMa".to_string(), 1)]
    );
    let key: i64 = s
        .conn()
        .query_row("SELECT key FROM sent_ids", [], |r| r.get(0))
        .unwrap();
    assert_eq!(key, sms_gateway_core::store::seen_key("main", "SMa"));
    // A key naming a chat that does not hold the id (a collision).
    s.conn()
        .execute(
            "INSERT INTO sent_ids (key, ticket) VALUES (?1, 1)",
            [sms_gateway_core::store::seen_key("main", "SMz")],
        )
        .unwrap();
    assert!(found("main", "SMz").is_none());
    s.write(|t| t.forget_sent_id("main", "SMa")).unwrap();
    assert!(found("main", "SMa").is_none());
}

#[test]
fn a_second_gateway_on_the_same_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let first = SqliteStore::open(&path).unwrap();
    let e = SqliteStore::open(&path).err().unwrap();
    assert!(e.to_string().contains("in use by another process"), "{e}");
    assert_eq!(e.kind, StoreErrorKind::Busy);
    assert!(e.is_temporary());
    drop(first);
    SqliteStore::open(&path).expect("free again once the first is closed");
}

#[test]
fn a_store_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    drop(SqliteStore::open(&path).unwrap());
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let e = SqliteStore::open(&path).err().unwrap();
    assert!(e.to_string().contains("newer"), "{e}");
    assert_eq!(e.kind, StoreErrorKind::Corrupt);
    assert!(!e.is_temporary());
    let garbage = dir.path().join("g.db");
    std::fs::write(&garbage, vec![b'x'; 8192]).unwrap();
    let e = SqliteStore::open(&garbage).err().unwrap();
    assert_eq!(e.kind, StoreErrorKind::Corrupt, "{e}");
}

/// The repeat check's memory is bounded: past `KEPT + CHUNK` pairs the
/// oldest move to `seen_expired` (in a batch, leaving memory only once it
/// commits), and every text ever taken is still a repeat, before and after
/// reopening the store.
#[test]
fn the_repeat_check_memory_is_bounded_and_nothing_is_forgotten() {
    use crate::seen::{CHUNK, KEPT};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    // Enough moved to seen_expired that its filter is rebuilt larger.
    let total = KEPT + 4 * CHUNK + 100;
    let s = SqliteStore::open(&path).unwrap();
    let batch = |s: &SqliteStore, from: usize, to: usize, commit: bool| {
        let mut tx = s.begin().unwrap();
        for i in from..to {
            assert!(tx
                .insert_inbound("main", &inbound(&format!("SM{i}"), "x"), 1)
                .unwrap()
                .is_some());
        }
        if commit {
            tx.commit().unwrap();
        }
    };
    for from in (0..total).step_by(1000) {
        batch(&s, from, (from + 1000).min(total), true);
        assert!(s.seen().keys.len() <= KEPT + CHUNK + 1000);
    }
    // A batch that moves a chunk and is then dropped: the chunk stays in
    // memory (its copy was rolled back with it).
    let before = s.seen().keys.len();
    batch(&s, total, total + 10, false);
    assert_eq!(s.seen().keys.len(), before);
    let repeats = |s: &SqliteStore| {
        let mut tx = s.begin().unwrap();
        for i in (0..total).step_by(997).chain([0, total - 1]) {
            assert!(
                tx.insert_inbound("main", &inbound(&format!("SM{i}"), "x"), 1)
                    .unwrap()
                    .is_none(),
                "SM{i} taken again"
            );
        }
        tx.commit().unwrap();
    };
    repeats(&s);
    assert!(
        s.seen().expired.room() > crate::seen::ExpiredFilter::with_room(0).room(),
        "the filter was rebuilt"
    );
    drop(s);
    let s = SqliteStore::open(&path).unwrap();
    assert!(
        s.seen().keys.len() < KEPT + CHUNK,
        "{}",
        s.seen().keys.len()
    );
    repeats(&s);
    // A new text is still new.
    assert!(s
        .write(|t| t.insert_inbound("main", &inbound("SMfresh", "x"), 1))
        .unwrap()
        .is_some());
}
