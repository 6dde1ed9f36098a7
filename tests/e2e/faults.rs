//! The fault suite: carriers failing, webhooks repeated, inputs malformed,
//! the XMPP server going away. Each test prints its counts (sent,
//! delivered, duplicated, lost) and asserts that nothing is lost.

use sms_over_xmpp_tests::*;

/// The gateway binary built from this checkout.
const EXE: &str = env!("CARGO_BIN_EXE_sms-over-xmpp-under-test");
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const TOKEN: &str = "fault-token";

fn twilio_extra(api_base: &str, more: &str) -> String {
    twilio_alice(api_base, TOKEN, more)
}

/// A Twilio that answers from a script, one response per request, then
/// 201 with a fresh SID; it notes when each request came.
#[derive(Clone)]
struct Scripted {
    script: Arc<Mutex<Vec<ResponseTemplate>>>,
    seen: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Scripted {
    fn new(script: Vec<ResponseTemplate>) -> Self {
        Scripted {
            script: Arc::new(Mutex::new(script)),
            seen: Arc::default(),
        }
    }
    fn seen(&self) -> Vec<(Instant, String)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Respond for Scripted {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Vec<(String, String)> = form_urlencoded::parse(&req.body).into_owned().collect();
        let text = body
            .iter()
            .find(|(k, _)| k == "Body")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let mut seen = self.seen.lock().unwrap();
        seen.push((Instant::now(), text));
        let n = seen.len();
        let mut script = self.script.lock().unwrap();
        if script.is_empty() {
            ResponseTemplate::new(201)
                .set_body_json(serde_json::json!({"sid": format!("SM{n:032}"), "status": "queued"}))
        } else {
            script.remove(0)
        }
    }
}

async fn mount(server: &MockServer, r: Scripted) {
    Mock::given(method("POST"))
        .and(path(twilio_messages_path()))
        .respond_with(r)
        .mount(server)
        .await;
}

fn error_json(status: u16, code: u32, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(serde_json::json!({"code": code, "message": message, "status": status}))
}

async fn post_inbound(gateway: &Gateway, sid: &str, text: &str) -> reqwest::Response {
    let params = [
        ("MessageSid", sid),
        ("AccountSid", TWILIO_SID),
        ("From", "+15557654321"),
        ("To", "+15550001111"),
        ("Body", text),
        ("NumMedia", "0"),
    ];
    let sig = twilio_sign(TOKEN, &format!("{PUBLIC}/main/message"), &params);
    post_form(
        &format!("{}/hooks/main/message", gateway.http_base),
        &params,
        Some(&sig),
    )
    .await
}

/// Prosody, a wiremock Twilio (answering from `script` when given), the
/// gateway with `more` added to its Twilio account, and Alice logged in.
async fn setup(script: Option<&Scripted>, more: &str) -> (Prosody, MockServer, Gateway, User) {
    let prosody = Prosody::start().await;
    let twilio = MockServer::start().await;
    if let Some(script) = script {
        mount(&twilio, script.clone()).await;
    }
    let gateway = Gateway::start(&gateway_config(
        &prosody,
        free_port(),
        &twilio_extra(&twilio.uri(), more),
    ))
    .await;
    prosody
        .wait_component_logins(1, Duration::from_secs(10))
        .await;
    let alice = User::login(&prosody, "alice").await;
    (prosody, twilio, gateway, alice)
}

fn report(test: &str, sent: usize, delivered: usize, duplicated: usize, lost: usize) {
    println!("{test}: sent {sent}, delivered {delivered}, duplicated {duplicated}, lost {lost}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_signed_webhook_three_times_is_one_chat() {
    let (_prosody, _twilio, gateway, mut alice) = setup(None, "").await;
    for _ in 0..3 {
        assert_eq!(
            post_inbound(&gateway, "SMaaaaaa0000000000000000000000001", "only once")
                .await
                .status(),
            200
        );
    }
    assert_eq!(
        post_inbound(
            &gateway,
            "SMbbbbb00000000000000000000000002",
            "a different one"
        )
        .await
        .status(),
        200
    );
    let mut got = vec![];
    while let Some(m) = alice.next_message(Duration::from_secs(2)).await {
        got.push(m.body().unwrap_or_default());
    }
    let dups = got
        .iter()
        .filter(|b| *b == "only once")
        .count()
        .saturating_sub(1);
    report(
        "same webhook ×3",
        4,
        got.len(),
        dups,
        2usize.saturating_sub(got.len()),
    );
    assert_eq!(got, ["only once", "a different one"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_failing_twice_then_accepting_sends_once() {
    let script = Scripted::new(vec![
        error_json(500, 20500, "Internal Server Error"),
        error_json(503, 20503, "Service Unavailable"),
    ]);
    let (_prosody, _twilio, _gateway, mut alice) = setup(Some(&script), "").await;
    alice
        .send_chat(CONTACT, "retry", "after two failures")
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while script.seen().len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing more comes: the third answer was a success.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = script.seen();
    report(
        "500, 503, then 201",
        1,
        usize::from(seen.len() == 3),
        0,
        usize::from(seen.len() < 3),
    );
    assert_eq!(
        seen.len(),
        3,
        "two failures and one success: {:?}",
        seen.iter().map(|s| &s.1).collect::<Vec<_>>()
    );
    assert!(seen.iter().all(|(_, b)| b == "after two failures"));
    // The first retry comes within a few seconds.
    assert!(
        seen[1].0 - seen[0].0 < Duration::from_secs(3),
        "{:?}",
        seen[1].0 - seen[0].0
    );
    assert!(
        alice
            .next_message(Duration::from_millis(500))
            .await
            .is_none(),
        "no error for a text that went out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_is_honoured() {
    let script = Scripted::new(vec![
        error_json(429, 20429, "Too Many Requests").insert_header("Retry-After", "2")
    ]);
    let (_prosody, _twilio, _gateway, mut alice) = setup(Some(&script), "").await;
    alice.send_chat(CONTACT, "slow", "rate limited").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while script.seen().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = script.seen();
    report(
        "429 Retry-After 2",
        1,
        usize::from(seen.len() == 2),
        0,
        usize::from(seen.len() < 2),
    );
    assert_eq!(seen.len(), 2);
    let waited = seen[1].0 - seen[0].0;
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(4),
        "waited {waited:?}"
    );
    assert!(alice
        .next_message(Duration::from_millis(500))
        .await
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_left_unanswered_is_reported_and_never_resent() {
    // The carrier reads the request, then answers after our 1 s timeout.
    let script = Scripted::new(vec![ResponseTemplate::new(201)
        .set_body_json(serde_json::json!({"sid": "SMcafe", "status": "queued"}))
        .set_delay(Duration::from_secs(3))]);
    let (_prosody, _twilio, _gateway, mut alice) = setup(Some(&script), "timeout_secs = 1").await;
    alice.send_chat(CONTACT, "late", "maybe sent").await;
    let m = alice.expect_message().await;
    assert_eq!(m.id(), Some("late"));
    let (cond, text) = m.error().expect("an error");
    assert_eq!(cond, "remote-server-timeout");
    assert!(
        text.contains("may or may not") && text.contains("not sent again"),
        "{text}"
    );
    // Well past any retry: still one request.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let n = script.seen().len();
    report(
        "timeout after the request was read",
        1,
        1,
        n.saturating_sub(1),
        0,
    );
    assert_eq!(n, 1, "never resent");
}

/// Prosody, a wiremock Twilio and the gateway logged in, then Prosody
/// stopped: an XMPP outage begins.
async fn outage() -> (Prosody, MockServer, Gateway) {
    let mut prosody = Prosody::start().await;
    let twilio = MockServer::start().await;
    let gateway = Gateway::start(&gateway_config(
        &prosody,
        free_port(),
        &twilio_extra(&twilio.uri(), ""),
    ))
    .await;
    prosody
        .wait_component_logins(1, Duration::from_secs(10))
        .await;
    prosody.stop();
    (prosody, twilio, gateway)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_texts_wait_out_a_30_second_prosody_outage_in_order() {
    let (mut prosody, _twilio, gateway) = outage().await;
    let n = 40;
    for i in 0..n {
        // Taken and stored while the XMPP server is down.
        let r = post_inbound(
            &gateway,
            &format!("SM0da7a6e{i:025}"),
            &format!("during outage {i:02}"),
        )
        .await;
        assert_eq!(r.status(), 200, "webhook {i}");
        tokio::time::sleep(Duration::from_millis(600)).await; // 40 × 0.6 s: the outage lasts ~30 s in all
    }
    prosody.restart().await;
    prosody
        .wait_component_logins(2, Duration::from_secs(40))
        .await;
    let mut alice = User::login(&prosody, "alice").await;
    let mut got = vec![];
    while let Some(m) = alice.next_message(Duration::from_secs(3)).await {
        got.push(m.body().unwrap_or_default());
    }
    let want: Vec<String> = (0..n).map(|i| format!("during outage {i:02}")).collect();
    let lost = want.iter().filter(|w| !got.contains(w)).count();
    let dups = got.len().saturating_sub(want.len() - lost);
    report("Prosody down ~30 s", n, got.len() - dups, dups, lost);
    assert_eq!(lost, 0);
    assert_eq!(got, want, "in order, once each");
}

/// #26: 10,000 texts while the XMPP server is down. They wait in the
/// store, not in the channel to the XMPP process (which holds 1,024: past
/// it the Gateway used to stop taking webhooks, answering 503); every
/// webhook is answered 200, and when the server is back every text reaches
/// the user, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_texts_wait_out_an_outage_and_go_out_in_order() {
    const N: usize = 10_000;
    let (mut prosody, twilio, gateway) = outage().await;
    let started = Instant::now();
    // Eight carriers' connections at once; each text numbered, so order
    // within one connection's run is known (and across them, the store's).
    let mut posters = vec![];
    for lane in 0..8 {
        let base = gateway.http_base.clone();
        posters.push(tokio::spawn(async move {
            // A webhook left unanswered counts as refused (before #26 the
            // 1,025th waited until the gateway's own timeout, then 503).
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap();
            let mut refused = 0;
            for i in (lane..N).step_by(8) {
                let sid = format!("SM0ffa9e{i:026}");
                let text = format!("outage {i:05}");
                let params = [
                    ("MessageSid", sid.as_str()),
                    ("AccountSid", TWILIO_SID),
                    ("From", "+15557654321"),
                    ("To", "+15550001111"),
                    ("Body", text.as_str()),
                    ("NumMedia", "0"),
                ];
                let sig = twilio_sign(TOKEN, &format!("{PUBLIC}/main/message"), &params);
                let r = client
                    .post(format!("{base}/hooks/main/message"))
                    .header("X-Twilio-Signature", sig)
                    .form(&params)
                    .send()
                    .await;
                if !r.is_ok_and(|r| r.status() == 200) {
                    refused += 1;
                }
            }
            refused
        }));
    }
    let mut refused = 0;
    for p in posters {
        refused += p.await.unwrap();
    }
    println!(
        "{N} webhooks during the outage answered in {:?}, {refused} not 200",
        started.elapsed()
    );
    assert_eq!(refused, 0, "every webhook taken while the server is down");
    prosody.restart().await;
    prosody
        .wait_component_logins(2, Duration::from_secs(40))
        .await;
    let released = Instant::now();
    let mut alice = User::login(&prosody, "alice").await;
    // While the backlog goes out, a chat of hers reaches the carrier.
    alice
        .send_chat(CONTACT, "during-release", "sent while the backlog goes out")
        .await;
    let chat_sent = Instant::now();
    let mut reached = None;
    while chat_sent.elapsed() < Duration::from_secs(5) {
        let requests = twilio.received_requests().await.unwrap_or_default();
        if requests
            .iter()
            .any(|r| String::from_utf8_lossy(&r.body).contains("backlog"))
        {
            reached = Some(chat_sent.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("her chat reached the carrier after {reached:?}");
    assert!(
        reached.is_some(),
        "her chat did not reach the carrier within 5 s"
    );
    let mut got = vec![];
    while let Some(m) = alice.next_message(Duration::from_secs(10)).await {
        // (The carrier mock refuses her chat: its error is not a text.)
        if m.type_() == "error" {
            continue;
        }
        got.push(m.body().unwrap_or_default());
        if got.len() == N {
            break;
        }
    }
    let want: Vec<String> = (0..N).map(|i| format!("outage {i:05}")).collect();
    let lost = want.iter().filter(|w| !got.contains(w)).count();
    let dups = got.len().saturating_sub(N - lost);
    println!("released and read by the user in {:?}", released.elapsed());
    report(
        "10,000 texts during an outage",
        N,
        got.len() - dups,
        dups,
        lost,
    );
    assert_eq!(lost, 0);
    // In the order the store took them: each connection's own texts in
    // the order it sent them.
    for lane in 0..8 {
        let mine: Vec<&String> = got
            .iter()
            .filter(|b| b[7..].parse::<usize>().is_ok_and(|i| i % 8 == lane))
            .collect();
        let sent: Vec<&String> = want.iter().skip(lane).step_by(8).collect();
        assert_eq!(mine, sent, "connection {lane}'s texts in order, once each");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_webhooks_get_clear_errors_and_relaying_goes_on() {
    let (_prosody, _twilio, gateway, mut alice) = setup(None, "").await;
    let url = format!("{}/hooks/main/message", gateway.http_base);
    let http = reqwest::Client::new();
    // Invalid UTF-8, garbage, truncated, oversized: 403/400/413, never a panic.
    for (what, body) in [
        ("invalid UTF-8", vec![0xff, 0xfe, b'=', 0xc3, 0x28]),
        ("garbage", b"\x00\x01\x02<<<>>>".to_vec()),
        ("truncated", b"MessageSid=SM1&From=%2B1555".to_vec()),
        ("oversized", vec![b'a'; 2 * 1024 * 1024]),
    ] {
        let sent = http
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", "AAAA")
            .body(body)
            .send()
            .await;
        let r = match sent {
            Ok(r) => r,
            // Refused by its Content-Length before the body was read: the
            // 413 and the close can beat the client's last writes, which
            // then meet a closed socket. Refused all the same.
            Err(e) if what == "oversized" => {
                println!("oversized: the connection closed mid-body ({e})");
                continue;
            }
            Err(e) => panic!("{what}: {e}"),
        };
        assert!(
            matches!(r.status().as_u16(), 400 | 403 | 413),
            "{what}: {}",
            r.status()
        );
    }
    // Correctly signed but missing fields: 400 naming the field.
    let params = [("MessageSid", "SMbad"), ("Body", "no numbers")];
    let sig = twilio_sign(TOKEN, &format!("{PUBLIC}/main/message"), &params);
    let r = post_form(&url, &params, Some(&sig)).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("From"));
    // Still relaying.
    assert_eq!(
        post_inbound(&gateway, "SMeeee0000000000000000000000001", "still fine")
            .await
            .status(),
        200
    );
    assert_eq!(
        alice.expect_message().await.body().as_deref(),
        Some("still fine")
    );
    report("malformed webhooks", 1, 1, 0, 0);
}

/// A fake XMPP server: accepts the component, then sends `garbage`.
async fn fake_server_sending(garbage: &'static [u8]) -> (u16, tokio::task::JoinHandle<usize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut connections = 0;
        while connections < 2 {
            let Ok((mut s, _)) = listener.accept().await else {
                break;
            };
            connections += 1;
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await; // stream header
            let _ = s
                .write_all(b"<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' from='sms.localhost' id='fake1'>")
                .await;
            let _ = s.read(&mut buf).await; // handshake
            let _ = s.write_all(b"<handshake/>").await;
            let _ = s.write_all(garbage).await;
            let _ = s.flush().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        connections
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_truncated_xml_from_the_server_make_the_link_reconnect() {
    for garbage in [
        &b"<message><<<not xml at all & </wrong>"[..],
        &b"<message to='a@b' type='chat'><body>trunc"[..],
    ] {
        let (port, server) = fake_server_sending(garbage).await;
        let cfg = format!(
            "[xmpp]\nserver = \"127.0.0.1:{port}\"\ndomain = \"sms.localhost\"\nsecret = \"s\"\nkeepalive_secs = 1\n[http]\nlisten = \"127.0.0.1:{}\"\npublic_url = \"{PUBLIC}\"\n",
            free_port()
        );
        let gateway = Gateway::start(&cfg).await;
        // The gateway drops the broken stream and logs in again: no panic, no giving up.
        let connections = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("reconnected")
            .unwrap();
        assert_eq!(connections, 2, "{}", String::from_utf8_lossy(garbage));
        // And its webhook side still answers.
        let r = reqwest::get(format!("{}/hooks/", gateway.http_base))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        gateway.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_traffic_then_restart() {
    kill_9_under_traffic_then_restart_on("path = \"state.db\"").await;
}

/// The same on the PostgreSQL store: what the database took survives the
/// process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_traffic_then_restart_on_postgres() {
    let db = Database::new("kill9");
    kill_9_under_traffic_then_restart_on(&format!("url = \"{}\"", db.url)).await;
}

/// 500 chats and 500 webhooks, `kill -9` in the middle, a restart: every
/// webhook answered 200 is delivered; the chats lost are one run, the
/// ones in transit from the server, and the user is told where it starts.
async fn kill_9_under_traffic_then_restart_on(store: &str) {
    const N: usize = 500;
    let prosody = Prosody::start().await;
    let twilio = MockServer::start().await;
    let carrier = Scripted::new(vec![]);
    mount(&twilio, carrier.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let cfg = format!(
        "{}\n[store]\n{store}\n",
        gateway_config(&prosody, http_port, &twilio_extra(&twilio.uri(), ""))
    );
    let cfg_path = dir.path().join("gateway.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let log = dir.path().join("gateway.log");
    let mut gateway = Binary::start(EXE, &cfg_path, &log);
    wait_for_port(http_port, Duration::from_secs(20)).await;
    prosody
        .wait_component_logins(1, Duration::from_secs(10))
        .await;
    let mut alice = User::login(&prosody, "alice").await;

    // The carrier's side: N inbound webhooks, each retried until answered
    // 200, as carriers do.
    let hooks = tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let url = format!("http://127.0.0.1:{http_port}/hooks/main/message");
        let mut retries = 0;
        for i in 0..N {
            let sid = format!("SMdead{i:026}");
            let text = format!("in-{i:03}");
            let params = [
                ("MessageSid", sid.as_str()),
                ("AccountSid", TWILIO_SID),
                ("From", "+15557654321"),
                ("To", "+15550001111"),
                ("Body", text.as_str()),
                ("NumMedia", "0"),
            ];
            let sig = twilio_sign(TOKEN, &format!("{PUBLIC}/main/message"), &params);
            let body = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(params)
                .finish();
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let r = http
                    .post(&url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("x-twilio-signature", &sig)
                    .body(body.clone())
                    .send()
                    .await;
                if matches!(&r, Ok(r) if r.status() == 200) {
                    break;
                }
                assert!(Instant::now() < deadline, "webhook {i} never accepted");
                retries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        retries
    });

    // The user's side: N chats in a burst.
    for i in 0..N {
        alice
            .send_chat(CONTACT, &format!("o{i}"), &format!("out-{i:03}"))
            .await;
    }
    // Kill it in the middle of the traffic.
    let deadline = Instant::now() + Duration::from_secs(30);
    while carrier.seen().len() < N / 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let texted_before = carrier.seen().len();
    gateway.kill_9();
    println!("killed after {texted_before} texts reached the carrier");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _gateway = Binary::start(EXE, &cfg_path, &log);
    prosody
        .wait_component_logins(2, Duration::from_secs(20))
        .await;
    let webhook_retries = hooks.await.unwrap();

    // Collect until quiet.
    let mut inbound: std::collections::HashMap<String, usize> = Default::default();
    let mut errors: std::collections::HashMap<String, String> = Default::default();
    let mut notices = vec![];
    loop {
        let before = carrier.seen().len();
        let Some(m) = alice.next_message(Duration::from_secs(5)).await else {
            if carrier.seen().len() == before {
                break;
            }
            continue;
        };
        if m.from() == Some(DOMAIN) {
            notices.push(m.body().unwrap_or_default());
        } else if let Some((cond, _)) = m.error() {
            errors.insert(m.id().unwrap_or_default().to_owned(), cond);
        } else if let Some(b) = m.body() {
            *inbound.entry(b).or_default() += 1;
        }
    }
    let mut texted: std::collections::HashMap<String, usize> = Default::default();
    for (_, body) in carrier.seen() {
        *texted.entry(body).or_default() += 1;
    }
    let out_delivered = (0..N)
        .filter(|i| texted.contains_key(&format!("out-{i:03}")))
        .count();
    let out_reported = (0..N)
        .filter(|i| {
            !texted.contains_key(&format!("out-{i:03}")) && errors.contains_key(&format!("o{i}"))
        })
        .count();
    let out_dups: usize = texted.values().map(|n| n - 1).sum();
    let out_lost: Vec<usize> = (0..N)
        .filter(|i| {
            !texted.contains_key(&format!("out-{i:03}")) && !errors.contains_key(&format!("o{i}"))
        })
        .collect();
    let in_delivered = (0..N)
        .filter(|i| inbound.contains_key(&format!("in-{i:03}")))
        .count();
    let in_dups: usize = inbound.values().map(|n| n - 1).sum();
    let in_lost = N - in_delivered;
    // Chats the server had handed over but the gateway had not yet stored
    // when it was killed are gone: XEP-0114 has no acknowledgements, so
    // neither the server nor the gateway can know. Everything stored got
    // through, chats are handled in order, and those the user sent after the
    // kill were bounced by the server; so what is missing is one unbroken
    // run of the sequence: the chats in transit at the kill.
    let in_transit = out_lost.len();
    let first_lost = out_lost.first().copied().unwrap_or(N);
    let last_lost = out_lost.last().copied().unwrap_or(N);
    println!(
        "kill -9, chats: sent {N}, texted {out_delivered}, bounced back to the user {out_reported}, duplicated {out_dups} (in flight to the carrier at the kill), lost in transit to the gateway {in_transit}"
    );
    println!("kill -9, webhooks: sent {N} (retried {webhook_retries} times), delivered {in_delivered}, duplicated {in_dups}, lost {in_lost}");
    assert_eq!(in_lost, 0, "inbound texts lost");
    assert_eq!(
        out_lost,
        (first_lost..=last_lost)
            .filter(|_| in_transit > 0)
            .collect::<Vec<_>>(),
        "a chat outside the run in transit at the kill was lost"
    );
    assert!(
        first_lost >= texted_before,
        "chats texted before the kill count as stored"
    );
    // The loss is not silent: after the restart the user is told which
    // chat arrived last, and the lost run starts right after it.
    assert_eq!(
        notices.len(),
        1,
        "one notice of the unclean stop: {notices:?}"
    );
    let last_taken: usize = notices[0]
        .split("\"out-")
        .nth(1)
        .and_then(|rest| rest.get(..3))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the notice names no chat: {}", notices[0]));
    println!("kill -9: the notice names out-{last_taken:03} as the last chat received");
    assert!(
        texted.contains_key(&format!("out-{last_taken:03}")),
        "the chat the notice names was texted"
    );
    if in_transit > 0 {
        assert_eq!(
            first_lost,
            last_taken + 1,
            "the notice marks where the loss starts"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_503_closes_the_stream_and_exits_0() {
    let prosody = Prosody::start().await;
    let twilio = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let cfg_path = dir.path().join("gateway.toml");
    std::fs::write(
        &cfg_path,
        gateway_config(&prosody, http_port, &twilio_extra(&twilio.uri(), "")),
    )
    .unwrap();
    let log = dir.path().join("gateway.log");
    let mut gateway = Binary::start(EXE, &cfg_path, &log);
    wait_for_port(http_port, Duration::from_secs(20)).await;
    prosody
        .wait_component_logins(1, Duration::from_secs(10))
        .await;

    let started = Instant::now();
    let pid = gateway.pid().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    // While it stops, webhooks are told to come back later.
    let http = reqwest::Client::new();
    let mut saw_503 = false;
    while started.elapsed() < Duration::from_secs(5) {
        match http
            .get(format!("http://127.0.0.1:{http_port}/hooks/"))
            .send()
            .await
        {
            Ok(r) if r.status() == 503 => {
                saw_503 = true;
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(_) => break, // already closed
        }
    }
    let status = loop {
        if let Some(s) = gateway.try_wait() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "did not exit within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "SIGTERM: exited {status} after {:?}; 503 seen: {saw_503}",
        started.elapsed()
    );
    assert!(status.success(), "exit status {status}");
    assert!(saw_503, "no 503 while stopping");
    let log = prosody.log();
    assert!(
        log.contains("component disconnected: sms.localhost"),
        "{log}"
    );
    assert!(
        !log.contains("Disconnecting component, <stream:error>"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_process_killed_under_traffic_is_restarted_and_nothing_is_lost() {
    use sms_gateway_core::fault::{arm, Process};
    const N: usize = 90;
    let carrier = Scripted::new(vec![]);
    let (_prosody, _twilio, gateway, mut alice) = setup(Some(&carrier), "").await;

    let mut inbound_retries = 0;
    for i in 0..N {
        // A panic in each process, one after the other, while traffic flows.
        match i {
            20 => arm(Process::Gateway),
            45 => arm(Process::Pstn),
            // A panic on one event inside the Gateway's batch: caught there,
            // that event alone gets an error (a chat) or a 503 (a webhook,
            // which the carrier retries); the rest of the batch goes on.
            80 => arm(Process::GatewayEvent),
            70 => {
                // A panic of the XMPP process drops the connection, and with
                // it whatever the server had written that was not read yet
                // (XEP-0114 has no acknowledgements: see kill_9 below). So
                // let the chats before settle first; what this checks is
                // that what is queued *towards* the process survives.
                let deadline = Instant::now() + Duration::from_secs(10);
                while !carrier.seen().iter().any(|(_, b)| b == "out-069")
                    && Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                arm(Process::Xmpp);
                // The next inbound text trips it while it waits in the queue.
                let r =
                    post_inbound(&gateway, "SMfffffff000000000000000000000000", "in-xmpp").await;
                assert_eq!(r.status(), 200);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            _ => {}
        }
        alice
            .send_chat(CONTACT, &format!("o{i}"), &format!("out-{i:03}"))
            .await;
        // The carrier retries a webhook that was not answered 200.
        loop {
            let r = post_inbound(&gateway, &format!("SMfff{i:027}"), &format!("in-{i:03}")).await;
            if r.status() == 200 {
                break;
            }
            inbound_retries += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut inbound: std::collections::HashMap<String, usize> = Default::default();
    let mut errors = std::collections::HashSet::new();
    while let Some(m) = alice.next_message(Duration::from_secs(4)).await {
        if m.error().is_some() {
            errors.insert(m.id().unwrap_or_default().to_owned());
        } else if let Some(b) = m.body() {
            *inbound.entry(b).or_default() += 1;
        }
    }
    let mut texted: std::collections::HashMap<String, usize> = Default::default();
    for (_, body) in carrier.seen() {
        *texted.entry(body).or_default() += 1;
    }
    let out_lost: Vec<usize> = (0..N)
        .filter(|i| {
            !texted.contains_key(&format!("out-{i:03}")) && !errors.contains(&format!("o{i}"))
        })
        .collect();
    let out_reported = (0..N)
        .filter(|i| {
            !texted.contains_key(&format!("out-{i:03}")) && errors.contains(&format!("o{i}"))
        })
        .count();
    let in_lost: Vec<usize> = (0..N)
        .filter(|i| !inbound.contains_key(&format!("in-{i:03}")))
        .collect();
    assert_eq!(
        inbound.get("in-xmpp"),
        Some(&1),
        "the text queued when the XMPP process panicked"
    );
    let out_dups: usize = texted.values().map(|n| n - 1).sum();
    let in_dups: usize = inbound.values().map(|n| n - 1).sum();
    println!(
        "process panics, chats: sent {N}, texted {}, answered with an error (the link down, or the event that panicked) {out_reported}, duplicated {out_dups}, lost {}",
        texted.len(),
        out_lost.len()
    );
    println!("process panics, webhooks: sent {N} (retried {inbound_retries}), delivered {}, duplicated {in_dups}, lost {}", N - in_lost.len(), in_lost.len());
    assert!(out_lost.is_empty(), "chats lost: {out_lost:?}");
    assert!(
        !sms_gateway_core::fault::armed(Process::GatewayEvent),
        "the event fault tripped"
    );
    assert!(in_lost.is_empty(), "inbound lost: {in_lost:?}");
    assert_eq!(out_dups, 0, "a restart duplicated a chat");
    // What the XMPP process had written but the server had not yet
    // acknowledged when it panicked is written again by the next
    // incarnation (#12): a duplicate the user may see, never a loss. One
    // write batch at most.
    assert!(in_dups <= 64, "{in_dups} texts duplicated");
}

/// #12: Prosody killed with `kill -9` while 400 signed inbound webhooks
/// stream in, 8 at a time, and started again 2 s later. Every text
/// answered 2xx must reach the user: a batch of stanzas counts as taken
/// only once the server has routed back the ping written after it, so what
/// the dying server had not processed is written again on the next link.
/// Duplicates (written again, but the server had taken them) are counted.
async fn prosody_killed_under_inbound_traffic(online: bool) {
    const N: usize = 400;
    let mut prosody = Prosody::start().await;
    let twilio = MockServer::start().await;
    let gateway = std::sync::Arc::new(
        Gateway::start(&gateway_config(
            &prosody,
            free_port(),
            &twilio_extra(&twilio.uri(), ""),
        ))
        .await,
    );
    prosody
        .wait_component_logins(1, Duration::from_secs(10))
        .await;
    let mut alice = if online {
        Some(User::login(&prosody, "alice").await)
    } else {
        None
    };
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (gateway, accepted, next) = (gateway.clone(), accepted.clone(), next.clone());
        senders.spawn(async move {
            let mut retries = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= N {
                    return retries;
                }
                // The carrier retries what is not answered 2xx.
                loop {
                    let r = post_inbound(&gateway, &format!("SMdead{i:028}"), &format!("k-{i:03}"))
                        .await;
                    if r.status() == 200 {
                        break;
                    }
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while accepted.load(std::sync::atomic::Ordering::SeqCst) < N / 3 {
        assert!(Instant::now() < deadline, "webhooks stalled");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Hung first, then killed: what the gateway writes meanwhile sits in
    // the socket's buffers and dies with the server, unread. (Killed
    // outright, a server that keeps up leaves little unread; the issue's
    // release build lost 57 of 400 that way.)
    prosody.freeze();
    let frozen_at = accepted.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    prosody.kill_9();
    let killed_at = accepted.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    prosody.start_again().await;
    let mut retries = 0;
    while let Some(r) = senders.join_next().await {
        retries += r.unwrap();
    }
    let mut got: Vec<String> = vec![];
    // What reached the online session before the kill.
    if let Some(mut a) = alice.take() {
        while let Some(m) = a.next_message(Duration::from_millis(500)).await {
            got.extend(m.body());
        }
    }
    prosody
        .wait_component_logins(2, Duration::from_secs(60))
        .await;
    let mut alice = User::login(&prosody, "alice").await;
    while let Some(m) = alice.next_message(Duration::from_secs(5)).await {
        got.extend(m.body());
    }
    let mut count: std::collections::HashMap<&str, usize> = Default::default();
    for b in &got {
        *count.entry(b.as_str()).or_default() += 1;
    }
    let want: Vec<String> = (0..N).map(|i| format!("k-{i:03}")).collect();
    let lost: Vec<&String> = want
        .iter()
        .filter(|w| !count.contains_key(w.as_str()))
        .collect();
    let dups: usize = count.values().map(|n| n - 1).sum();
    let label = if online {
        "user online"
    } else {
        "user offline"
    };
    println!(
        "Prosody frozen after {frozen_at} webhooks accepted, kill -9 after {killed_at} ({label}): sent {N} (retried {retries}), delivered {}, duplicated {dups}, lost {}",
        N - lost.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "texts answered 2xx and lost: {lost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_killed_under_inbound_traffic_user_offline() {
    prosody_killed_under_inbound_traffic(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_killed_under_inbound_traffic_user_online() {
    prosody_killed_under_inbound_traffic(true).await;
}
