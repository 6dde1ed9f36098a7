//! Two gateways on one PostgreSQL store (`[cluster]`) serving one domain:
//! on ejabberd, which spreads a component domain's stanzas over every
//! connection to it, both hold a link; webhooks are spread over both, as a
//! load balancer would. One is killed with `kill -9` under load; the other
//! takes its work over when its lease lapses.

use sms_over_xmpp_tests::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const EXE: &str = env!("CARGO_BIN_EXE_sms-over-xmpp-under-test");
const TOKEN: &str = "cluster-token";
/// Short, so the test does not wait long for the take-over.
const LEASE_SECS: u64 = 3;

/// A Twilio that accepts every text with a fresh SID (`SM` and the
/// request's number), noting each body.
#[derive(Clone, Default)]
struct Carrier {
    seen: Arc<Mutex<Vec<String>>>,
}

impl Carrier {
    /// A wiremock Twilio answering as this carrier.
    async fn mounted() -> (MockServer, Carrier) {
        let twilio = MockServer::start().await;
        let carrier = Carrier::default();
        Mock::given(method("POST"))
            .and(path(twilio_messages_path()))
            .respond_with(carrier.clone())
            .mount(&twilio)
            .await;
        (twilio, carrier)
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Respond for Carrier {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let text = form_urlencoded::parse(&req.body)
            .find(|(k, _)| k == "Body")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let mut seen = self.seen.lock().unwrap();
        seen.push(text);
        ResponseTemplate::new(201).set_body_json(
            serde_json::json!({"sid": format!("SM{:032}", seen.len()), "status": "queued"}),
        )
    }
}

/// One gateway instance of the two.
struct Instance {
    name: &'static str,
    binary: Binary,
    port: u16,
    log: std::path::PathBuf,
}

impl Instance {
    fn start(
        dir: &std::path::Path,
        name: &'static str,
        server: &dyn XmppServer,
        api: &str,
        db: &Database,
    ) -> Instance {
        Self::start_with_lease(dir, name, server, api, db, LEASE_SECS)
    }

    fn start_with_lease(
        dir: &std::path::Path,
        name: &'static str,
        server: &dyn XmppServer,
        api: &str,
        db: &Database,
        lease: u64,
    ) -> Instance {
        let port = free_port();
        let cfg = format!(
            "{}\n[store]\nurl = \"{}\"\n\n[cluster]\ninstance = \"{name}\"\nlease_secs = {lease}\n",
            gateway_config(server, port, &twilio_alice(api, TOKEN, "")),
            db.url
        );
        let cfg_path = dir.join(format!("{name}.toml"));
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = dir.join(format!("{name}.log"));
        let binary = Binary::start(EXE, &cfg_path, &log);
        Instance {
            name,
            binary,
            port,
            log,
        }
    }

    async fn connected(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains("connected to the XMPP server") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} never connected:\n{log}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A signed Twilio inbound text's fields: `text` from the contact to Alice.
fn text_params<'a>(sid: &'a str, text: &'a str) -> [(&'static str, &'a str); 6] {
    [
        ("MessageSid", sid),
        ("AccountSid", TWILIO_SID),
        ("From", "+15557654321"),
        ("To", "+15550001111"),
        ("Body", text),
        ("NumMedia", "0"),
    ]
}

fn signed(params: &[(&str, &str)], hook: &str) -> (String, String) {
    let sig = twilio_sign(TOKEN, &format!("{PUBLIC}/main/{hook}"), params);
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    (body, sig)
}

/// Posts a signed webhook to the instances' ports in turn, starting with
/// `first`, until one answers 200, as a load balancer retrying elsewhere
/// would; returns how many tries failed.
async fn deliver(
    http: &reqwest::Client,
    ports: &[u16],
    first: usize,
    hook: &str,
    params: &[(&str, &str)],
) -> usize {
    let (body, sig) = signed(params, hook);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut failed = 0;
    loop {
        let port = ports[(first + failed) % ports.len()];
        let r = http
            .post(format!("http://127.0.0.1:{port}/hooks/main/{hook}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", &sig)
            .body(body.clone())
            .send()
            .await;
        if matches!(&r, Ok(r) if r.status() == 200) {
            return failed;
        }
        assert!(Instant::now() < deadline, "a {hook} webhook never accepted");
        failed += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two instances on ejabberd, 500 chats and 500 signed webhooks spread over
/// both, `kill -9` of one in the middle: every webhook answered 200 is
/// delivered; the chats lost are only ones the dead instance had not yet
/// stored (after the last one it took, which its users are told of); the
/// survivor sends what the dead one had not, and turns a delivery report
/// for a chat the dead one sent into the user's receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_ejabberd_one_killed_under_load() {
    const N: usize = 500;
    let ejabberd = Ejabberd::start().await;
    let db = Database::new("cluster");
    let (twilio, carrier) = Carrier::mounted().await;
    let dir = tempfile::tempdir().unwrap();
    let mut a = Instance::start(dir.path(), "gw-a", &ejabberd, &twilio.uri(), &db);
    let mut b = Instance::start(dir.path(), "gw-b", &ejabberd, &twilio.uri(), &db);
    a.connected().await;
    b.connected().await;
    let mut alice = User::login(&ejabberd, "alice").await;
    wait_for_component(&mut alice).await;

    // A chat whose report comes later: whichever instance took it is the
    // one killed.
    alice.send_chat(CONTACT, "probe", "receipt probe").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while carrier.seen().is_empty() {
        assert!(Instant::now() < deadline, "the probe never reached Twilio");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let probe_sid = format!("SM{:032}", 1);
    let owner = db.column("SELECT owner FROM chats").await;
    assert_eq!(owner.len(), 1, "one chat stored: {owner:?}");
    let (victim, survivor) = if owner[0] == a.name {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    println!("the probe was taken by {}", victim.name);
    let ports = [victim.port, survivor.port];

    // The carrier's side: N webhooks, spread over both instances, each
    // tried elsewhere until one answers 200.
    let hooks = tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let mut failed = 0;
        for i in 0..N {
            let (sid, text) = (format!("SMc1c{i:027}"), format!("in-{i:03}"));
            let params = text_params(&sid, &text);
            failed += deliver(&http, &ports, i % 2, "message", &params).await;
        }
        failed
    });
    // The user's side: N chats in a burst; ejabberd spreads them.
    for i in 0..N {
        alice
            .send_chat(CONTACT, &format!("o{i}"), &format!("out-{i:03}"))
            .await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while carrier.seen().len() < N / 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let texted_before = carrier.seen().len();
    victim.binary.kill_9();
    let killed = Instant::now();
    println!(
        "killed {} after {texted_before} texts reached the carrier",
        victim.name
    );
    // The survivor takes the lease over once it lapses.
    loop {
        let held = db
            .column(&format!(
                "SELECT id FROM sox_instances WHERE id = '{}'",
                victim.name
            ))
            .await;
        if held.is_empty() {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(LEASE_SECS * 10),
            "the dead instance's lease was never taken over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let takeover = killed.elapsed();
    println!(
        "cluster: {}'s work taken over {:.1} s after the kill (lease {LEASE_SECS} s, renewed every {:.1} s)",
        victim.name,
        takeover.as_secs_f64(),
        LEASE_SECS as f64 / 3.0
    );
    let webhook_retries = hooks.await.unwrap();

    // Collect until quiet.
    let mut inbound: HashMap<String, usize> = HashMap::new();
    // The stanza ids each inbound text came with: one, however often (#26).
    let mut inbound_ids: HashMap<String, std::collections::BTreeSet<String>> = HashMap::new();
    let mut errors: HashMap<String, String> = HashMap::new();
    let mut notices = vec![];
    loop {
        let before = carrier.seen().len();
        let Some(m) = alice.next_message(Duration::from_secs(6)).await else {
            if carrier.seen().len() == before {
                break;
            }
            continue;
        };
        if m.from() == Some(DOMAIN) {
            notices.push(m.body().unwrap_or_default());
        } else if let Some((cond, _)) = m.error() {
            errors.insert(m.id().unwrap_or_default().to_owned(), cond);
        } else if let Some(body) = m.body() {
            *inbound.entry(body.clone()).or_default() += 1;
            inbound_ids
                .entry(body)
                .or_default()
                .insert(m.id().unwrap_or_default().to_owned());
        }
    }
    let mut texted: HashMap<String, usize> = HashMap::new();
    for body in carrier.seen() {
        *texted.entry(body).or_default() += 1;
    }
    let out = |i: &usize| format!("out-{i:03}");
    let out_texted = (0..N).filter(|i| texted.contains_key(&out(i))).count();
    let out_reported = (0..N)
        .filter(|i| !texted.contains_key(&out(i)) && errors.contains_key(&format!("o{i}")))
        .count();
    let out_dups: usize = texted.values().map(|n| n - 1).sum();
    let out_lost: Vec<usize> = (0..N)
        .filter(|i| !texted.contains_key(&out(i)) && !errors.contains_key(&format!("o{i}")))
        .collect();
    let in_delivered = (0..N)
        .filter(|i| inbound.contains_key(&format!("in-{i:03}")))
        .count();
    let in_dups: usize = inbound.values().map(|n| n - 1).sum();
    println!(
        "cluster kill -9, chats: sent {N}, texted {out_texted}, bounced back to the user {out_reported}, duplicated {out_dups} (in flight to the carrier at the kill), lost in transit to the dead instance {}",
        out_lost.len()
    );
    println!(
        "cluster kill -9, webhooks: sent {N} (tried elsewhere {webhook_retries} times), delivered {in_delivered}, duplicated {in_dups}, lost {}",
        N - in_delivered
    );
    assert_eq!(in_delivered, N, "inbound texts lost");
    // A text delivered again (by the survivor, after the kill) carries the
    // first delivery's stanza id, so a client can fold the copies.
    let changed: Vec<_> = inbound_ids
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .collect();
    assert!(changed.is_empty(), "repeated under new ids: {changed:?}");

    // The dead instance's users are told once, naming the last chat it
    // took; what was lost comes after it.
    assert_eq!(notices.len(), 1, "one notice: {notices:?}");
    assert!(
        notices[0].contains("instances stopped unexpectedly"),
        "{}",
        notices[0]
    );
    let last_taken: usize = notices[0]
        .split("\"out-")
        .nth(1)
        .and_then(|rest| rest.get(..3))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the notice names no chat: {}", notices[0]));
    println!("cluster kill -9: the notice names out-{last_taken:03} as the last chat the dead instance took");
    assert!(
        texted.contains_key(&out(&last_taken)),
        "the chat it names was texted"
    );
    assert!(
        out_lost.iter().all(|i| *i > last_taken),
        "a chat stored before the kill was lost: {out_lost:?}"
    );

    // A delivery report for the probe, which the dead instance sent,
    // reaches the survivor: the user gets her receipt.
    let http = reqwest::Client::new();
    let params = [
        ("MessageSid", probe_sid.as_str()),
        ("AccountSid", TWILIO_SID),
        ("MessageStatus", "delivered"),
    ];
    assert_eq!(
        deliver(&http, &[survivor.port], 0, "status", &params).await,
        0
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = alice
            .next_message(Duration::from_secs(10))
            .await
            .expect("the probe's receipt");
        if m.child("received", "urn:xmpp:receipts")
            .is_some_and(|r| r.attr("id") == Some("probe"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no receipt for the probe");
    }
}

/// Two instances on Prosody, which takes one connection per component
/// domain: the first holds the link, the second stands by (refused with
/// `conflict`, trying again every third of a lease) and still takes
/// webhooks, which wait in the store. The holder is killed with
/// `kill -9`: the stand-by takes the link, delivers what it stored, takes
/// over the dead one's work, and chats flow again. The fail-over time is
/// printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_stand_by_takes_the_link_when_the_holder_dies() {
    const N: usize = 100;
    let prosody = Prosody::start().await;
    let db = Database::new("standby");
    let (twilio, carrier) = Carrier::mounted().await;
    let dir = tempfile::tempdir().unwrap();
    let mut active = Instance::start(dir.path(), "gw-active", &prosody, &twilio.uri(), &db);
    active.connected().await;
    let standby = Instance::start(dir.path(), "gw-standby", &prosody, &twilio.uri(), &db);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&standby.log)
        .unwrap_or_default()
        .contains("standing by")
    {
        assert!(
            Instant::now() < deadline,
            "the second instance never stood by"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut alice = User::login(&prosody, "alice").await;

    // Webhooks to both; the stand-by's wait for its link.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    // While the holder lives, texts reaching the stand-by are handed to
    // it (LISTEN/NOTIFY) and delivered at once, not kept for later.
    const EARLY: usize = 20;
    let mut early: HashMap<String, usize> = HashMap::new();
    for i in 0..EARLY {
        let (sid, text) = (format!("SMea51e{i:025}"), format!("early-{i:02}"));
        let params = text_params(&sid, &text);
        assert_eq!(
            deliver(&http, &[standby.port], 0, "message", &params).await,
            0
        );
    }
    let handed = Instant::now();
    while early.len() < EARLY {
        let m = alice
            .next_message(Duration::from_secs(10))
            .await
            .expect("texts taken by the stand-by reach the user while the holder lives");
        if let Some(body) = m.body() {
            *early.entry(body).or_default() += 1;
        }
    }
    println!(
        "prosody stand-by: {EARLY} texts it took were delivered through the holder within {:.2} s",
        handed.elapsed().as_secs_f64()
    );
    assert!(early.values().all(|n| *n == 1), "duplicated: {early:?}");
    let ports = [active.port, standby.port];
    let mut killed = Instant::now();
    for i in 0..N {
        if i == N / 2 {
            active.binary.kill_9();
            killed = Instant::now();
        }
        let (sid, text) = (format!("SM5b7{i:027}"), format!("in-{i:03}"));
        let params = text_params(&sid, &text);
        deliver(&http, &ports, i % 2, "message", &params).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&standby.log)
        .unwrap_or_default()
        .contains("connected to the XMPP server")
    {
        assert!(
            Instant::now() < deadline,
            "the stand-by never took the link"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "prosody fail-over: the stand-by held the link within {:.1} s of the holder being killed (lease {LEASE_SECS} s)",
        killed.elapsed().as_secs_f64()
    );
    let mut inbound: HashMap<String, usize> = HashMap::new();
    while let Some(m) = alice.next_message(Duration::from_secs(8)).await {
        if let Some(body) = m.body() {
            *inbound.entry(body).or_default() += 1;
        }
    }
    let delivered = (0..N)
        .filter(|i| inbound.contains_key(&format!("in-{i:03}")))
        .count();
    let dups: usize = inbound
        .iter()
        .filter(|(k, _)| k.starts_with("in-"))
        .map(|(_, n)| n - 1)
        .sum();
    println!("prosody fail-over, webhooks: sent {N}, delivered {delivered}, duplicated {dups}");
    assert_eq!(delivered, N, "a stored text was lost");
    // Chats flow through the new holder.
    alice
        .send_chat(CONTACT, "after", "after the fail-over")
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !carrier.seen().iter().any(|b| b == "after the fail-over") {
        assert!(
            Instant::now() < deadline,
            "no chat went out after the fail-over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The database goes away for a few seconds under load (connections cut,
/// new ones refused, as during a restart), with both instances on
/// ejabberd, balanced by sender as docs/operations.md advises (one user's
/// chats stay in order on one instance): webhooks wait for the store (or
/// get 503 and are retried), chats wait; once it is back, everything gets
/// through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_instances_ride_out_the_database_going_away() {
    const N: usize = 200;
    const OUTAGE: Duration = Duration::from_secs(3);
    let ejabberd = Ejabberd::start_with(&format!(
        "domain_balancing:\n  \"{DOMAIN}\":\n    type: bare_source\n    component_number: 2\n"
    ))
    .await;
    let db = Database::new("outage");
    let (twilio, carrier) = Carrier::mounted().await;
    let dir = tempfile::tempdir().unwrap();
    // A lease longer than the outage: neither is taken for dead.
    let a = Instance::start_with_lease(dir.path(), "gw-a", &ejabberd, &twilio.uri(), &db, 15);
    let b = Instance::start_with_lease(dir.path(), "gw-b", &ejabberd, &twilio.uri(), &db, 15);
    a.connected().await;
    b.connected().await;
    let mut alice = User::login(&ejabberd, "alice").await;
    wait_for_component(&mut alice).await;
    let ports = [a.port, b.port];
    let hooks = tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let mut failed = 0;
        for i in 0..N {
            let (sid, text) = (format!("SM0a7{i:027}"), format!("in-{i:03}"));
            let params = text_params(&sid, &text);
            failed += deliver(&http, &ports, i % 2, "message", &params).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        failed
    });
    for i in 0..N {
        alice
            .send_chat(CONTACT, &format!("o{i}"), &format!("out-{i:03}"))
            .await;
        if i == N / 4 {
            // The database goes away.
            db.admin_sql(&format!(
                "ALTER DATABASE {} ALLOW_CONNECTIONS false",
                db.name
            ))
            .await;
            db.admin_sql(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
                db.name
            ))
            .await;
            tokio::time::sleep(OUTAGE).await;
            db.admin_sql(&format!(
                "ALTER DATABASE {} ALLOW_CONNECTIONS true",
                db.name
            ))
            .await;
            println!("database outage: {} s, at chat {i}", OUTAGE.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused = hooks.await.unwrap();
    let mut inbound: HashMap<String, usize> = HashMap::new();
    let mut errors = 0;
    while let Some(m) = alice.next_message(Duration::from_secs(8)).await {
        if m.error().is_some() {
            errors += 1;
        } else if let Some(body) = m.body() {
            *inbound.entry(body).or_default() += 1;
        }
    }
    let texted: std::collections::HashSet<String> = carrier.seen().into_iter().collect();
    let out_texted = (0..N)
        .filter(|i| texted.contains(&format!("out-{i:03}")))
        .count();
    let in_delivered = (0..N)
        .filter(|i| inbound.contains_key(&format!("in-{i:03}")))
        .count();
    let in_dups: usize = inbound.values().map(|n| n - 1).sum();
    println!(
        "database outage: chats sent {N}, texted {out_texted}, answered with an error {errors}; webhooks sent {N} (refused and retried {refused} times), delivered {in_delivered}, duplicated {in_dups}"
    );
    assert_eq!(in_delivered, N, "a webhook answered 200 was lost");
    assert_eq!(out_texted + errors, N, "a chat was lost without a word");
    // The outage was felt: webhooks go one at a time, so the one waiting
    // on an instance may keep the other idle through it.
    let mut felt = 0;
    for i in [&a, &b] {
        let log = std::fs::read_to_string(&i.log).unwrap_or_default();
        let failures: Vec<&str> = log
            .lines()
            .filter(|l| (l.contains("ERROR") || l.contains("WARN")) && l.contains("store"))
            .collect();
        println!(
            "database outage: {} logged {} store failures while it lasted",
            i.name,
            failures.len()
        );
        for l in failures.iter().take(3) {
            println!("  {l}");
        }
        felt += failures.len();
    }
    assert!(felt > 0, "neither instance saw the outage");
}
