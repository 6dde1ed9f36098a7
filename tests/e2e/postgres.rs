//! The PostgreSQL store end to end (`$DATABASE_URL`'s server; the test
//! command starts one when there is none): the real binary migrates a
//! SQLite store into an empty database (`migrate-store`), refuses to do it
//! twice, and the gateway then runs on the database: a text that was
//! waiting in SQLite reaches its user, and a chat goes out.

use sms_gateway_core::store::StoreExt;
use sms_over_xmpp_tests::*;
use std::time::Duration;

const EXE: &str = env!("CARGO_BIN_EXE_sms-over-xmpp-under-test");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_store_migrated_to_postgres_keeps_its_waiting_text() {
    let prosody = Prosody::start().await;
    let db = Database::new("migrate_e2e");
    let dir = tempfile::tempdir().unwrap();
    // A SQLite store holding a text for Alice that the XMPP server never
    // took (as a gateway stopped during a server outage leaves it).
    let old = dir.path().join("old.db");
    {
        let s = sms_store_sqlite::SqliteStore::open(&old).unwrap();
        let n = |v: &str| sms_gateway_core::PhoneNumber::parse(v, None).unwrap();
        let sms = sms_gateway_core::InboundSms {
            id: "SB-waiting-1".into(),
            from: n("+15557654321"),
            to: n("+15550001111"),
            body: "waited in SQLite".into(),
            media: vec![],
            others: vec![],
            subject: None,
        };
        s.write(|t| t.insert_inbound("sandbox", &sms, sms_gateway_core::unix_now()))
            .unwrap();
    }
    let migrate = || {
        std::process::Command::new(EXE)
            .args(["migrate-store", "--from"])
            .arg(&old)
            .args(["--to", &db.url])
            .output()
            .unwrap()
    };
    let out = migrate();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("1 inbound texts (1 waiting)"), "{said}");
    assert!(said.contains("read back the same"), "{said}");
    let out = migrate();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("already holds a store"), "{said}");

    let http = free_port();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}\n[store]\nurl = \"{}\"\n",
            gateway_config(&prosody, http, SANDBOX_ALICE),
            db.url
        ),
    )
    .unwrap();
    let _gateway = Binary::start(EXE, &cfg, &dir.path().join("log"));
    wait_for_port(http, Duration::from_secs(20)).await;
    let mut alice = User::login(&prosody, "alice").await;
    let m = alice.expect_message().await;
    assert_eq!(m.body().as_deref(), Some("waited in SQLite"), "{m:?}");
    alice.send_chat(CONTACT, "pg-1", "through PostgreSQL").await;
    let hooks = format!("http://127.0.0.1:{http}/hooks/sandbox");
    assert!(
        sandbox_sent(&hooks, SANDBOX_AUTH, &["through PostgreSQL"]).await,
        "the chat did not go out"
    );
}
