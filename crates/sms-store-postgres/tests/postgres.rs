//! The PostgreSQL store against a real PostgreSQL: `$DATABASE_URL` when it
//! is set, else `postgresql://postgres@127.0.0.1:5432/postgres` (the test
//! command starts a throwaway cluster when neither answers). Each test
//! makes a database of its own and drops it after.

use sms_gateway_core::store::{check_store, Store, StoreErrorKind, StoreExt};
use sms_gateway_core::{InboundSms, PhoneNumber};
use sms_store_postgres::{Config, PostgresStore};

fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of the test's own, dropped with it.
struct Db {
    name: String,
    config: Config,
}

impl Db {
    fn new(test: &str) -> Db {
        let name = format!("sox_{}_{test}", std::process::id());
        let mut admin = postgres::Client::connect(&admin_url(), postgres::NoTls).unwrap_or_else(|e| {
            panic!(
                "no PostgreSQL at {} ({e}): set DATABASE_URL, or run scripts/test.sh, which starts one",
                admin_url()
            )
        });
        // One statement a call: neither may run in a transaction block.
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let mut config: Config = admin_url().parse().unwrap();
        config.dbname(&name);
        Db { name, config }
    }

    fn store(&self) -> PostgresStore {
        PostgresStore::with_config(self.config.clone()).unwrap()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(&admin_url(), postgres::NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

fn inbound(id: &str) -> InboundSms {
    InboundSms {
        id: id.into(),
        from: PhoneNumber::parse("+15557654321", None).unwrap(),
        to: PhoneNumber::parse("+15550001111", None).unwrap(),
        body: "hello".into(),
        media: vec![],
        others: vec![],
        subject: None,
    }
}

#[test]
fn postgres_store_meets_the_contract() {
    let db = Db::new("contract");
    check_store(&db.store());
}

#[test]
fn what_was_written_survives_reconnecting_and_the_schema_is_migrated_once() {
    let db = Db::new("reopen");
    {
        let s = db.store();
        assert!(s
            .write(|t| t.insert_inbound("main", &inbound("SM1"), 1))
            .unwrap()
            .is_some());
        s.write(|t| t.set_meta("running", 1)).unwrap();
    }
    let s = db.store();
    assert_eq!(s.meta("running").unwrap(), Some(1));
    let pending = s.pending_inbound().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].sms, inbound("SM1"));
    let mut own = db.config.connect(postgres::NoTls).unwrap();
    let v: i32 = own
        .query_one("SELECT version FROM sox_schema", &[])
        .unwrap()
        .get(0);
    assert_eq!(v, 4);
    assert_eq!(own.query("SELECT * FROM sox_schema", &[]).unwrap().len(), 1);
}

/// The repeat check is the database's: a carrier's retry that reaches a
/// second process on the same database is still a repeat.
#[test]
fn a_repeat_is_a_repeat_whoever_stored_the_first() {
    let db = Db::new("repeat");
    let (a, b) = (db.store(), db.store());
    assert!(a
        .write(|t| t.insert_inbound("main", &inbound("SM9"), 1))
        .unwrap()
        .is_some());
    assert_eq!(
        b.write(|t| t.insert_inbound("main", &inbound("SM9"), 2))
            .unwrap(),
        None
    );
    assert!(b
        .write(|t| t.insert_inbound("other", &inbound("SM9"), 2))
        .unwrap()
        .is_some());
}

/// A transaction dropped without a commit keeps nothing; one whose
/// connection is cut fails as a whole, and the next one works on a new
/// connection.
#[test]
fn a_cut_connection_fails_its_transaction_and_the_next_one_reconnects() {
    let db = Db::new("cut");
    let s = db.store();
    {
        let mut tx = s.begin().unwrap();
        assert!(tx
            .insert_inbound("main", &inbound("SM1"), 1)
            .unwrap()
            .is_some());
        drop(tx);
    }
    assert!(s.pending_inbound().unwrap().is_empty(), "rolled back");

    let mut tx = s.begin().unwrap();
    assert!(tx
        .insert_inbound("main", &inbound("SM2"), 1)
        .unwrap()
        .is_some());
    terminate(&db);
    let e = tx
        .insert_inbound("main", &inbound("SM3"), 1)
        .err()
        .or_else(|| tx.commit().err())
        .expect("the cut transaction fails");
    assert_eq!(e.kind, StoreErrorKind::Io, "{e}");
    assert!(e.is_temporary());
    // The carrier's retry of SM2 is stored: nothing of the cut one stayed.
    // (The client may not have noticed the cut yet: the next transaction
    // starts on a new connection all the same.)
    assert!(s
        .write(|t| t.insert_inbound("main", &inbound("SM2"), 2))
        .unwrap()
        .is_some());
    assert_eq!(s.pending_inbound().unwrap().len(), 1);
    // Cut between transactions, twice in a row: each next transaction
    // starts on a new connection.
    for id in ["SM4", "SM5"] {
        terminate(&db);
        assert!(s
            .write(|t| t.insert_inbound("main", &inbound(id), 3))
            .unwrap()
            .is_some());
    }
    assert_eq!(s.pending_inbound().unwrap().len(), 3);
}

/// Ends the store's connections from the server's side, waiting (up to
/// 5 s) until their backends are gone.
fn terminate(db: &Db) {
    let mut admin = postgres::Client::connect(&admin_url(), postgres::NoTls).unwrap();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
             WHERE datname = $1 AND application_name = 'sms-over-xmpp'",
            &[&db.name],
        )
        .unwrap();
}

#[test]
fn a_bad_url_is_refused_naming_the_key() {
    let e = PostgresStore::connect("mysql://nope").unwrap_err();
    assert!(e.message.contains("store.url"), "{e}");
    let e = PostgresStore::connect("postgresql://postgres@127.0.0.1:1/x").unwrap_err();
    assert_eq!(e.kind, StoreErrorKind::Io, "{e}");
}

/// `migrate-store`: a SQLite store with every kind of row is copied with
/// its ids, and the copy behaves as the original would: the receipt map
/// finds what it found (and not an id already reported), a text seen
/// (delivered, or expired) is still a repeat, and new tickets come after
/// the old.
#[test]
fn a_sqlite_store_migrates_with_its_ids() {
    use sms_gateway_core::store::ChatState;
    use sms_store_sqlite::SqliteStore;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("s.db")).unwrap();
    let chat = |body: &str| chat("alice@example.com", body);
    let t1 = sqlite.write(|t| t.insert_chat(&chat("one"))).unwrap();
    let t2 = sqlite.write(|t| t.insert_chat(&chat("two"))).unwrap();
    let mut sent = chat("two");
    sent.state = ChatState::Sent {
        ids: vec!["SM-a".into(), "SM-b".into()],
        undelivered: 2,
    };
    sqlite
        .write(|t| {
            t.update_chat(t2, &sent)?;
            t.forget_sent_id("main", "SM-a")
        })
        .unwrap();
    let kept = sqlite
        .write(|t| t.insert_inbound("main", &inbound("IN-1"), 10))
        .unwrap()
        .unwrap();
    let gone = sqlite
        .write(|t| t.insert_inbound("main", &inbound("IN-2"), 10))
        .unwrap()
        .unwrap();
    sqlite.write(|t| t.inbound_delivered(gone)).unwrap();
    let old = sqlite
        .write(|t| t.insert_inbound("main", &inbound("IN-0"), 1))
        .unwrap()
        .unwrap();
    sqlite.write(|t| t.inbound_delivered(old)).unwrap();
    sqlite.write(|t| t.expire(5, 0)).unwrap();
    sqlite
        .write(|t| {
            t.set_meta("running", 1)?;
            t.put_entry(
                "user",
                "carol@example.com",
                Some("{\"number\":\"+15550003333\"}"),
            )
        })
        .unwrap();
    let dump = sqlite.dump().unwrap();
    assert_eq!(dump.chats.len(), 2);
    assert_eq!(dump.seen_keyed.len(), 1, "{dump:?}");
    drop(sqlite);

    let db = Db::new("migrate");
    let pg = db.store();
    pg.import(dump.clone()).unwrap();
    assert_eq!(pg.dump().unwrap(), dump, "read back the same");
    assert_eq!(
        pg.chats().unwrap().iter().map(|c| c.0).collect::<Vec<_>>(),
        [t1, t2]
    );
    assert_eq!(
        pg.pending_inbound()
            .unwrap()
            .iter()
            .map(|p| p.id)
            .collect::<Vec<_>>(),
        [kept]
    );
    assert_eq!(
        pg.write(|t| t.find_sent("main", "SM-a")).unwrap(),
        None,
        "reported before"
    );
    assert_eq!(
        pg.write(|t| t.find_sent("main", "SM-b"))
            .unwrap()
            .map(|f| f.0),
        Some(t2)
    );
    for repeat in ["IN-1", "IN-2", "IN-0"] {
        assert_eq!(
            pg.write(|t| t.insert_inbound("main", &inbound(repeat), 20))
                .unwrap(),
            None,
            "{repeat}"
        );
    }
    assert!(pg.write(|t| t.insert_chat(&chat("three"))).unwrap() > t2);
    assert!(
        pg.write(|t| t.insert_inbound("main", &inbound("IN-3"), 20))
            .unwrap()
            .unwrap()
            > kept
    );
    assert_eq!(pg.meta("running").unwrap(), Some(1));
    assert_eq!(pg.entries("user").unwrap().len(), 1);
    // A database that holds a store is not migrated into.
    let e = pg.import(dump).unwrap_err();
    assert!(e.message.contains("already holds a store"), "{e}");
}

fn chat(user: &str, body: &str) -> sms_gateway_core::store::ChatRecord {
    let n = |s: &str| PhoneNumber::parse(s, None).unwrap();
    sms_gateway_core::store::ChatRecord {
        created: 100,
        account: "main".into(),
        user_full_jid: format!("{user}/phone"),
        contact_jid: "+15557654321@sms.example.com".into(),
        stanza_id: Some("m1".into()),
        receipt: true,
        parts: vec![sms_gateway_core::OutboundSms {
            from: n("+15550001111"),
            to: n("+15557654321"),
            body: body.into(),
            media: vec![],
            cc: vec![],
        }],
        state: sms_gateway_core::store::ChatState::Sending,
        group: false,
    }
}

impl Db {
    /// A store shared with others, as `instance`.
    fn member(&self, instance: &str) -> PostgresStore {
        self.store().in_cluster(sms_gateway_core::store::Member {
            instance: instance.into(),
            lease: std::time::Duration::from_secs(15),
        })
    }

    /// Makes `instance`'s lease lapse, as if it had stopped renewing it a
    /// lease ago (waiting out 15 s would only slow the test).
    fn lapse(&self, instance: &str) {
        let mut c = self.config.connect(postgres::NoTls).unwrap();
        let n = c
            .execute(
                "UPDATE sox_instances SET expires = 0 WHERE id = $1",
                &[&instance],
            )
            .unwrap();
        assert_eq!(n, 1, "{instance} held no lease");
    }
}

/// Two instances on one database: each reads back only its own work, the
/// receipt map is shared, and when one's lease lapses the other takes its
/// unfinished chats and inbound texts, once, with the last chat of each of
/// its users (to tell them).
#[test]
fn a_lapsed_lease_hands_the_instance_s_work_to_another_once() {
    use sms_gateway_core::store::ChatState;
    let db = Db::new("lease");
    let (a, b) = (db.member("a"), db.member("b"));
    assert!(a.adopt(true).unwrap().is_empty());
    assert!(b.adopt(true).unwrap().is_empty());
    let sending = a
        .write(|t| t.insert_chat(&chat("alice@x", "pending one")))
        .unwrap();
    let sent = a
        .write(|t| t.insert_chat(&chat("bob@x", "sent one")))
        .unwrap();
    let mut record = chat("bob@x", "sent one");
    record.state = ChatState::Sent {
        ids: vec!["SM-1".into()],
        undelivered: 1,
    };
    a.write(|t| t.update_chat(sent, &record)).unwrap();
    let waiting = a
        .write(|t| t.insert_inbound("main", &inbound("IN-1"), 10))
        .unwrap()
        .unwrap();
    b.write(|t| t.insert_chat(&chat("carol@x", "b's own")))
        .unwrap();

    // Each reads its own; the receipt map is everyone's.
    assert_eq!(
        a.chats().unwrap().iter().map(|c| c.0).collect::<Vec<_>>(),
        [sending]
    );
    assert_eq!(a.pending_inbound().unwrap()[0].id, waiting);
    assert!(b.pending_inbound().unwrap().is_empty());
    assert_eq!(
        b.write(|t| t.find_sent("main", "SM-1"))
            .unwrap()
            .map(|f| f.0),
        Some(sent)
    );
    // While a's lease holds, b takes nothing.
    assert!(b.adopt(true).unwrap().is_empty());

    db.lapse("a");
    let o = b.adopt(true).unwrap();
    assert_eq!(o.dead, ["a"]);
    assert_eq!(o.chats.iter().map(|c| c.0).collect::<Vec<_>>(), [sending]);
    assert_eq!(
        o.inbound.iter().map(|p| p.id).collect::<Vec<_>>(),
        [waiting]
    );
    let told: Vec<_> = o.last_chats.iter().map(|l| l.user.as_str()).collect();
    assert_eq!(told, ["alice@x", "bob@x"], "a's users, not carol");
    assert!(b.adopt(true).unwrap().is_empty(), "taken once");
    assert_eq!(b.chats().unwrap().len(), 2, "b's own and a's");
    // a comes back: its lease is new, and its old work is b's now.
    assert!(a.adopt(true).unwrap().is_empty());
    assert!(a.chats().unwrap().is_empty());
}

/// An instance that stops cleanly gives its lease up: its unfinished work
/// is taken at once, and nobody is told of a loss. A gateway that ran
/// alone on the database before leaves work that the first instance takes.
#[test]
fn a_clean_stop_and_a_lone_gateway_s_work_are_taken_without_a_notice() {
    let db = Db::new("leave");
    let alone = db.store();
    let old = alone
        .write(|t| t.insert_chat(&chat("dave@x", "from before")))
        .unwrap();
    drop(alone);
    let (a, b) = (db.member("a"), db.member("b"));
    let o = a.adopt(true).unwrap();
    assert_eq!(o.chats.iter().map(|c| c.0).collect::<Vec<_>>(), [old]);
    assert!(o.last_chats.is_empty() && o.dead.is_empty());
    b.adopt(true).unwrap();
    let t = a
        .write(|t| t.insert_chat(&chat("alice@x", "left")))
        .unwrap();
    a.leave().unwrap();
    let o = b.adopt(true).unwrap();
    assert_eq!(o.chats.iter().map(|c| c.0).collect::<Vec<_>>(), [old, t]);
    assert!(o.dead.is_empty() && o.last_chats.is_empty());
    assert_eq!(b.last_chats().unwrap().len(), 1, "dave's, from before");
}

/// Instances taking over at the same moment never take the same piece.
#[test]
fn instances_taking_over_at_once_take_each_piece_once() {
    let db = Db::new("race");
    let dead = db.member("dead");
    dead.adopt(true).unwrap();
    for i in 0..60 {
        dead.write(|t| t.insert_chat(&chat("alice@x", &format!("chat {i}"))))
            .unwrap();
        dead.write(|t| t.insert_inbound("main", &inbound(&format!("IN-{i}")), 10))
            .unwrap();
    }
    let survivors: Vec<_> = ["b", "c", "d"].iter().map(|n| db.member(n)).collect();
    for s in &survivors {
        s.adopt(true).unwrap();
    }
    db.lapse("dead");
    let taken: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = survivors
            .iter()
            .map(|s| scope.spawn(|| s.adopt(true).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut chats: Vec<u64> = taken
        .iter()
        .flat_map(|o| o.chats.iter().map(|c| c.0))
        .collect();
    let mut inbound: Vec<u64> = taken
        .iter()
        .flat_map(|o| o.inbound.iter().map(|p| p.id))
        .collect();
    let deaths: usize = taken.iter().map(|o| o.dead.len()).sum();
    let notices: usize = taken.iter().map(|o| o.last_chats.len()).sum();
    chats.sort();
    inbound.sort();
    chats.dedup();
    inbound.dedup();
    assert_eq!((chats.len(), inbound.len()), (60, 60));
    assert_eq!(
        taken.iter().map(|o| o.chats.len()).sum::<usize>(),
        60,
        "no chat taken twice"
    );
    assert_eq!(taken.iter().map(|o| o.inbound.len()).sum::<usize>(), 60);
    assert_eq!(
        (deaths, notices),
        (1, 1),
        "one death found, alice told once"
    );
}

/// An instance without an XMPP link hands an inbound text over: instances
/// listening are woken at once, and only one with a link takes it.
#[test]
fn a_released_text_wakes_the_others_and_goes_to_one_with_a_link() {
    let db = Db::new("release");
    let (a, b) = (db.member("a"), db.member("b"));
    a.adopt(true).unwrap();
    b.adopt(true).unwrap();
    let wake = b.wake().expect("a shared store wakes its Gateway");
    // Give the listener its moment to LISTEN.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let id = a
        .write(|t| {
            let id = t.insert_inbound("main", &inbound("IN-r"), 10)?.unwrap();
            t.release_inbound(id)?;
            Ok(id)
        })
        .unwrap();
    assert!(a.pending_inbound().unwrap().is_empty(), "no longer a's");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(10), wake.notified()).await
    })
    .expect("the other instance is woken");
    assert!(
        b.adopt(false).unwrap().inbound.is_empty(),
        "no link, no texts"
    );
    let with = b.adopt(true).unwrap();
    assert_eq!(with.inbound.iter().map(|p| p.id).collect::<Vec<_>>(), [id]);
}

/// A process that comes back under the name of one that died within its
/// lease (a restart) finds the lease still held: the last run ended
/// without a clean stop, and its users are told.
#[test]
fn a_restart_within_the_lease_tells_the_instance_s_users() {
    let db = Db::new("restart");
    let a = db.member("a");
    a.adopt(true).unwrap();
    a.write(|t| t.insert_chat(&chat("alice@x", "before the crash")))
        .unwrap();
    drop(a);
    let again = db.member("a");
    let o = again.adopt(true).unwrap();
    assert_eq!(o.dead, ["a"]);
    assert_eq!(o.last_chats.len(), 1);
    assert_eq!(again.chats().unwrap().len(), 1, "its own chats are its own");
    assert!(again.adopt(true).unwrap().is_empty());
}

/// A delivery report that reached one instance before the sender recorded
/// its send's result is kept for the sender, taken once, and expires.
#[test]
fn an_early_report_is_kept_for_whichever_instance_sent_the_text() {
    use sms_gateway_core::{DeliveryStatus, Failure};
    let landline = || Failure::new(Some("30006".into()), "undelivered, error 30006: landline");
    let db = Db::new("early");
    let (a, b) = (db.member("a"), db.member("b"));
    b.write(|t| t.keep_early("main", "SM-1", &DeliveryStatus::Delivered, 100))
        .unwrap();
    b.write(|t| t.keep_early("main", "SM-2", &DeliveryStatus::Failed(landline()), 100))
        .unwrap();
    b.write(|t| t.keep_early("main", "SM-3", &DeliveryStatus::Delivered, 100))
        .unwrap();
    assert_eq!(
        a.write(|t| t.take_early("main", "SM-1")).unwrap(),
        Some(DeliveryStatus::Delivered)
    );
    assert_eq!(a.write(|t| t.take_early("main", "SM-1")).unwrap(), None);
    assert_eq!(
        a.write(|t| t.take_early("main", "SM-2")).unwrap(),
        Some(DeliveryStatus::Failed(landline())),
        "the code kept apart from the words"
    );
    assert_eq!(a.write(|t| t.take_early("other", "SM-3")).unwrap(), None);
    a.write(|t| t.expire(101, 0)).unwrap();
    assert_eq!(
        a.write(|t| t.take_early("main", "SM-3")).unwrap(),
        None,
        "expired"
    );
}

/// #27: an instance never shares a name (and so a lease) with a live one:
/// `claim_name` watches a held lease, and refuses the name if its holder
/// renews it, naming the key; a holder that died lets it lapse, and the
/// name is taken (its successor then takes its work over).
#[test]
fn a_live_instance_s_name_is_refused_and_a_dead_one_s_is_taken() {
    let db = Db::new("claim");
    let member = sms_gateway_core::store::Member {
        instance: "gw".into(),
        lease: std::time::Duration::from_secs(2),
    };
    // Nobody has it.
    db.store().claim_name(&member).unwrap();
    // A live holder renewing it.
    let live = std::sync::Arc::new(db.store().in_cluster(member.clone()));
    live.adopt(true).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let renewer = {
        let (live, stop) = (live.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(1100));
                live.adopt(true).unwrap();
            }
        })
    };
    let err = db.store().claim_name(&member).unwrap_err().to_string();
    assert!(
        err.contains("cluster.instance") && err.contains("\"gw\""),
        "{err}"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    renewer.join().unwrap();
    // The holder dies (stops renewing): the name is taken once it lapses.
    let started = std::time::Instant::now();
    db.store().claim_name(&member).unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
