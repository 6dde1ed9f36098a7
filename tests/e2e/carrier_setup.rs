//! Setting the carriers up from the command line, as an operator does: the
//! real binary's `check --online` (logging in to a real Prosody, asking
//! each carrier who it is and where each number points) and
//! `configure-carrier` (with and without `--dry-run`), against mocks of
//! Twilio, Telnyx and SignalWire that keep state and answer in the
//! carriers' documented shapes, errors and a 429 included.

use sms_over_xmpp_tests::*;

const EXE: &str = env!("CARGO_BIN_EXE_sms-over-xmpp-under-test");
const TW_URL: &str = "https://sms.example.com/hooks/main/message";
const TX_URL: &str = "https://sms.example.com/hooks/tx/message";
const SW_URL: &str = "https://sms.example.com/hooks/sw/message";
const TX_PROFILE: &str = "400174af-0a13-4e28-b4f5-2a64e8b9d1c7";

/// Runs the binary with `args` and the config `toml`: its exit code and
/// what it printed (stdout, then stderr).
async fn run(dir: &std::path::Path, toml: &str, args: &[&str]) -> (i32, String, String) {
    let cfg = dir.join("c.toml");
    std::fs::write(&cfg, toml).unwrap();
    let out = tokio::process::Command::new(EXE)
        .args(args)
        .arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The table line about `subject`.
fn line<'a>(table: &'a str, subject: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.contains(&format!("  {subject}")))
        .unwrap_or_else(|| panic!("no line about {subject} in\n{table}"))
}

struct Carriers {
    twilio: wiremock::MockServer,
    telnyx: wiremock::MockServer,
    signalwire: wiremock::MockServer,
    tw: LamlNumbers,
    tx: TelnyxAccount,
    sw: LamlNumbers,
}

async fn carriers() -> Carriers {
    let c = Carriers {
        twilio: wiremock::MockServer::start().await,
        telnyx: wiremock::MockServer::start().await,
        signalwire: wiremock::MockServer::start().await,
        tw: LamlNumbers::default(),
        tx: TelnyxAccount::default(),
        sw: LamlNumbers::default(),
    };
    // Alice's number answers a form someone once set up, by GET.
    c.tw.add(
        "+15550001111",
        "PN0123456789abcdef0123456789abcd01",
        "https://old.example.com/sms",
        "GET",
    );
    // Twilio's filter matches partial numbers: a near one is there too.
    c.tw.add(
        "+155500011110",
        "PN0123456789abcdef0123456789abcd02",
        "",
        "POST",
    );
    mount_laml_account(&c.twilio, "/2010-04-01", TWILIO_SID, "twilio-token", &c.tw).await;
    // Bob and Dave share one messaging profile; Erin's number has none.
    {
        let mut n = c.tx.numbers.lock().unwrap();
        n.insert("+15550002222".into(), Some(TX_PROFILE.into()));
        n.insert("+15550002223".into(), Some(TX_PROFILE.into()));
        n.insert("+15550002224".into(), None);
    }
    c.tx.profiles
        .lock()
        .unwrap()
        .insert(TX_PROFILE.into(), "https://old.example.com/telnyx".into());
    mount_telnyx_account(&c.telnyx, "KEY-e2e", &c.tx).await;
    c.sw.add(
        "+15550003333",
        "PN0123456789abcdef0123456789abcd03",
        "",
        "POST",
    );
    mount_laml_account(
        &c.signalwire,
        "/api/laml/2010-04-01",
        SW_PROJECT,
        SW_TOKEN,
        &c.sw,
    )
    .await;
    c
}

fn config(prosody: &Prosody, c: &Carriers, twilio_token: &str, secret: &str, more: &str) -> String {
    let users = [
        ("alice", "+15550001111", "main"),
        ("bob", "+15550002222", "tx"),
        ("dave", "+15550002223", "tx"),
        ("carol", "+15550003333", "sw"),
    ]
    .iter()
    .map(|(u, n, p)| {
        format!("[[users]]\njid = \"{u}@localhost\"\nnumber = \"{n}\"\nprovider = \"{p}\"\n")
    })
    .collect::<String>();
    format!(
        r#"
[xmpp]
server = "127.0.0.1:{comp}"
domain = "{DOMAIN}"
secret = "{secret}"

[http]
listen = "127.0.0.1:{http}"
public_url = "{PUBLIC}"

[providers.main]
type = "twilio"
account_sid = "{TWILIO_SID}"
auth_token = "{twilio_token}"
api_base = "{tw}"

[providers.tx]
type = "telnyx"
api_key = "KEY-e2e"
public_key = "{pk}"
api_base = "{tx}"

[providers.sw]
type = "signalwire"
space = "example.signalwire.com"
project_id = "{SW_PROJECT}"
api_token = "{SW_TOKEN}"
signing_key = "{SW_KEY}"
api_base = "{sw}"

{users}
{more}
"#,
        comp = prosody.component_port(),
        http = free_port(),
        pk = telnyx_public_key(),
        tw = c.twilio.uri(),
        tx = c.telnyx.uri(),
        sw = c.signalwire.uri(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_then_configure_carrier_points_every_number() {
    let prosody = Prosody::start().await;
    let c = carriers().await;
    let dir = tempfile::tempdir().unwrap();
    let good = config(&prosody, &c, "twilio-token", SECRET, "");

    // Before: credentials fine, numbers pointing elsewhere.
    let (code, table, err) = run(dir.path(), &good, &["check", "--online"]).await;
    println!("check --online, before:\n{table}");
    assert_eq!(code, 1, "{table}{err}");
    assert!(
        line(&table, &format!("xmpp {DOMAIN} at")).starts_with("ok"),
        "{table}"
    );
    let l = line(&table, "account main (twilio)");
    assert!(l.starts_with("ok") && l.contains("Family gateway"), "{l}");
    // Telnyx slowed the first call down (429, Retry-After: 1): waited out.
    let l = line(&table, "account tx (telnyx)");
    assert!(
        l.starts_with("ok") && l.contains("balance 42.00 USD"),
        "{l}"
    );
    let l = line(&table, "+15550001111 (main)");
    assert!(l.starts_with("FIX"), "{l}");
    assert!(
        l.contains("https://old.example.com/sms by GET") && l.contains(TW_URL),
        "{l}"
    );
    assert!(line(&table, "+15550002222 (tx)").contains("https://old.example.com/telnyx"));
    assert!(
        line(&table, "+15550003333 (sw)").contains("go to nowhere"),
        "{table}"
    );
    assert!(table.contains("Something needs fixing"), "{table}");

    // A dry run says what it would change and changes nothing.
    let (code, table, err) = run(dir.path(), &good, &["configure-carrier", "--dry-run"]).await;
    assert_eq!(code, 0, "{table}{err}");
    let l = line(&table, "+15550002222 (tx)");
    assert!(
        l.starts_with("would change") && l.contains(TX_PROFILE),
        "{l}"
    );
    assert!(
        line(&table, "+15550002223 (tx)").contains("(above)"),
        "{table}"
    );
    assert_eq!(
        c.tw.points("+15550001111"),
        ("https://old.example.com/sms".into(), "GET".into())
    );
    assert!(c.tx.patches.lock().unwrap().is_empty());

    // The real thing: each number pointed, the shared profile once.
    let (code, table, err) = run(dir.path(), &good, &["configure-carrier"]).await;
    println!("configure-carrier:\n{table}");
    assert_eq!(code, 0, "{table}{err}");
    assert!(
        line(&table, "+15550001111 (main)").starts_with("changed"),
        "{table}"
    );
    // With Twilio's connection overrides, so a 503 is retried (#27).
    assert_eq!(
        c.tw.points("+15550001111"),
        (
            format!("{TW_URL}{}", sms_pstn_twilio::CONNECTION_OVERRIDES),
            "POST".into()
        )
    );
    assert_eq!(
        c.tw.points("+155500011110"),
        (String::new(), "POST".into()),
        "the near number is left alone"
    );
    assert_eq!(c.sw.points("+15550003333"), (SW_URL.into(), "POST".into()));
    assert_eq!(c.tx.profiles.lock().unwrap()[TX_PROFILE], TX_URL);
    assert_eq!(c.tx.patches.lock().unwrap()[TX_PROFILE], 1);

    // After: all is well, and a second configure changes nothing.
    let (code, table, err) = run(dir.path(), &good, &["check", "--online"]).await;
    assert_eq!(code, 0, "{table}{err}");
    assert!(
        !table.contains("FIX") && !table.contains("FAILED"),
        "{table}"
    );
    let (code, table, _) = run(dir.path(), &good, &["configure-carrier"]).await;
    assert_eq!(code, 0, "{table}");
    assert!(!table.contains("changed"), "{table}");
    assert_eq!(c.tx.patches.lock().unwrap()[TX_PROFILE], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_wrong_is_named() {
    let prosody = Prosody::start().await;
    let c = carriers().await;
    let dir = tempfile::tempdir().unwrap();
    // Twilio's token is wrong; the component secret is wrong; Erin's
    // Telnyx number is in no messaging profile; a registration number is
    // not the account's.
    let more =
        "[[users]]\njid = \"erin@localhost\"\nnumber = \"+15550002224\"\nprovider = \"tx\"\n";
    let bad = config(&prosody, &c, "wrong-token", "wrong-secret", more).replace(
        "api_token = \"PT-e2e\"",
        "api_token = \"PT-e2e\"\nregistration_numbers = [\"+15550003334\"]",
    );
    let (code, table, err) = run(dir.path(), &bad, &["check", "--online"]).await;
    println!("check --online, all wrong:\n{table}");
    assert_eq!(code, 1, "{table}{err}");
    let l = line(&table, &format!("xmpp {DOMAIN} at"));
    assert!(l.starts_with("FAILED") && l.contains("[xmpp]"), "{l}");
    let l = line(&table, "account main (twilio)");
    assert!(l.starts_with("FAILED"), "{l}");
    assert!(
        l.contains("credentials refused") && l.contains("[providers.main]") && l.contains("20003"),
        "{l}"
    );
    assert!(
        !table.contains("(main)"),
        "a refused account's numbers are not asked about:\n{table}"
    );
    let l = line(&table, "+15550002224 (tx)");
    assert!(
        l.starts_with("FIX") && l.contains("no messaging profile"),
        "{l}"
    );
    let l = line(&table, "+15550003334 (sw)");
    assert!(
        l.starts_with("FIX") && l.contains("not a number of this account"),
        "{l}"
    );
    assert!(
        !table.contains("wrong-token") && !err.contains("wrong-token"),
        "no secret printed"
    );

    let (code, table, err) = run(dir.path(), &bad, &["configure-carrier"]).await;
    assert_eq!(code, 1, "{table}{err}");
    assert_eq!(
        c.tw.points("+15550001111"),
        ("https://old.example.com/sms".into(), "GET".into()),
        "nothing changed with refused credentials"
    );
    // What could be changed was.
    assert_eq!(c.sw.points("+15550003333"), (SW_URL.into(), "POST".into()));
}
