//! Tests of `pstn.rs`.

use super::*;
use crate::provider::{PstnProvider, WebhookRequest};
use std::collections::BTreeMap;

#[test]
fn retry_delays_double_with_spread_and_cap() {
    for ticket in 0..50 {
        let first = retry_delay(ticket, 0);
        assert!(
            first >= Duration::from_millis(500) && first <= Duration::from_millis(1500),
            "{first:?}"
        );
        let fourth = retry_delay(ticket, 3);
        assert!(
            fourth >= Duration::from_secs(4) && fourth <= Duration::from_secs(12),
            "{fourth:?}"
        );
        assert!(retry_delay(ticket, 30) <= Duration::from_secs(450));
    }
    // Spread: not every chat waits the same.
    let firsts: std::collections::HashSet<Duration> = (0..50).map(|t| retry_delay(t, 0)).collect();
    assert!(firsts.len() > 10);
    assert_eq!(retry_delay(7, 2), retry_delay(7, 2), "reproducible");
}

/// A PSTN process on loopback: what [`started`] gives.
struct Started {
    addr: String,
    from_pstn: mpsc::Receiver<PstnEvent>,
    commands: mpsc::Sender<PstnCommand>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// A PSTN process on loopback with `accounts`, `[http]` settings from
/// `http_extra`, and a Gateway that is the returned receiver (nobody
/// answers unless the test does).
fn started(http_extra: &str, accounts: BTreeMap<String, Arc<dyn PstnProvider>>) -> Started {
    let config = Config::from_toml(&format!(
        "[xmpp]\nserver = \"127.0.0.1:1\"\ndomain = \"sms.example.com\"\nsecret = \"s\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1/hooks\"\n{http_extra}"
    ))
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (to_gateway, from_pstn) = mpsc::channel(8);
    let (commands, commands_rx) = mpsc::channel(1);
    let pstn = PstnProcess::new(
        &config,
        Arc::new(crate::accounts::Accounts::of(accounts)),
        listener,
        to_gateway,
        Arc::new(tokio::sync::Mutex::new(commands_rx)),
        None,
        Default::default(),
    );
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let task = tokio::spawn(async move { pstn.run(stop).await });
    Started {
        addr,
        from_pstn,
        commands,
        shutdown,
        task,
    }
}

/// [`started`] with the sandbox account `sb` (token `t`).
fn server(
    http_extra: &str,
) -> (
    String,
    mpsc::Receiver<PstnEvent>,
    CancellationToken,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let mut accounts: BTreeMap<String, Arc<dyn PstnProvider>> = BTreeMap::new();
    accounts.insert(
        "sb".into(),
        Arc::new(crate::SandboxProvider::new("sb", crate::Secret::new("t"))),
    );
    let s = started(http_extra, accounts);
    (s.addr, s.from_pstn, s.shutdown, s.task)
}

async fn exchange(addr: &str, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn inject(body: &str) -> Vec<u8> {
    format!(
        "POST /hooks/sb/message HTTP/1.1\r\nhost: x\r\nauthorization: Bearer t\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A carrier that always fails for now, counting the requests.
struct Failing(std::sync::atomic::AtomicUsize);

#[async_trait::async_trait]
impl PstnProvider for Failing {
    async fn send(&self, _: &crate::OutboundSms) -> Result<String, crate::ProviderError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        let mut e = crate::ProviderError::new(crate::ProviderErrorKind::CarrierError, "503");
        e.retry_after = Some(Duration::from_secs(1));
        Err(e)
    }
    fn webhook(
        &self,
        _: &WebhookRequest,
    ) -> Result<crate::provider::WebhookReply, crate::provider::WebhookError> {
        Err(crate::provider::WebhookError::NotFound("none".into()))
    }
}

/// A send waiting to retry stops with the process: nothing reaches the
/// carrier once `run` has returned (the chat stays in the store for the
/// next start), and no result goes to the Gateway.
#[tokio::test(start_paused = true)]
async fn retries_stop_with_the_process() {
    let failing = Arc::new(Failing(Default::default()));
    let mut accounts: BTreeMap<String, Arc<dyn PstnProvider>> = BTreeMap::new();
    accounts.insert("f".into(), failing.clone());
    let Started {
        mut from_pstn,
        commands: commands_tx,
        shutdown,
        task,
        ..
    } = started("", accounts);
    let n = crate::PhoneNumber::parse("+15557654321", None).unwrap();
    commands_tx
        .send(PstnCommand::Send {
            account: "f".into(),
            parts: vec![crate::OutboundSms {
                from: n.clone(),
                to: n,
                body: "hi".into(),
                media: vec![],
                cc: vec![],
            }],
            ticket: 1,
            retry_until: u64::MAX,
        })
        .await
        .unwrap();
    while failing.0.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let sent = failing.0.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        failing.0.load(Ordering::SeqCst),
        sent,
        "nothing sent after run returned"
    );
    assert!(
        from_pstn.try_recv().is_err(),
        "no result for an unfinished send"
    );
}

/// A client that never finishes its headers is cut off after
/// `header_timeout_secs`, and one that holds an idle connection too.
#[tokio::test]
async fn slow_headers_and_idle_connections_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (addr, _gw, shutdown, task) = server("header_timeout_secs = 1\n");
    let started = std::time::Instant::now();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"POST /hooks/sb/message HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf))
        .await
        .expect("cut off within the timeout");
    assert!(n.is_ok() || n.is_err());
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut buf))
        .await
        .expect("an idle connection is closed too")
        .ok();
    let waited = started.elapsed();
    println!("slow-header and idle connections closed after {waited:?} (limit 1 s)");
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// With `max_connections = 1`, a second connection waits while the
/// first is held open, and is served once it closes.
#[tokio::test]
async fn connections_beyond_the_cap_wait() {
    use tokio::io::AsyncWriteExt;
    let (addr, _gw, shutdown, task) = server("max_connections = 1\nheader_timeout_secs = 1\n");
    let mut holder = tokio::net::TcpStream::connect(&addr).await.unwrap();
    holder.write_all(b"GET /hooks/ HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = tokio::spawn({
        let addr = addr.clone();
        async move {
            let t = std::time::Instant::now();
            let a = exchange(
                &addr,
                b"GET /hooks/ HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            )
            .await;
            (a, t.elapsed())
        }
    });
    let (answer, waited) = second.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        waited >= Duration::from_millis(500),
        "served at once: {waited:?}"
    );
    drop(holder);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// Bodies past their type's limit get 413, a form's limit being the
/// smaller; a body that arrives too slowly gets 408.
#[tokio::test]
async fn body_limits_by_type_and_a_slow_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (addr, _gw, shutdown, task) =
        server("max_form_body = 100\nmax_body = 1000\nbody_timeout_secs = 1\n");
    let form = format!(
        "POST /hooks/sb/message HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\n\
         content-length: 200\r\nconnection: close\r\n\r\n{}",
        "a".repeat(200)
    );
    let a = exchange(&addr, form.as_bytes()).await;
    assert!(a.starts_with("HTTP/1.1 413"), "{a}");
    let json = inject(&format!("{{\"pad\":\"{}\"}}", "a".repeat(1200)));
    let a = exchange(&addr, &json).await;
    assert!(a.starts_with("HTTP/1.1 413"), "{a}");
    // Chunked, no length declared: cut at the limit all the same.
    let chunked = format!(
        "POST /hooks/sb/message HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
        1500,
        "a".repeat(1500)
    );
    let a = exchange(&addr, chunked.as_bytes()).await;
    assert!(a.starts_with("HTTP/1.1 413"), "{a}");
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"POST /hooks/sb/message HTTP/1.1\r\nhost: x\r\ncontent-length: 50\r\nconnection: close\r\n\r\n{").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// A Gateway that does not take an inbound text in time: 503 with
/// Retry-After, so the carrier retries.
#[tokio::test]
async fn a_gateway_that_does_not_answer_gets_the_carrier_a_503() {
    let (addr, mut gw, shutdown, task) = server("ack_timeout_secs = 1\n");
    let holder = tokio::spawn(async move {
        // Takes the event and sits on its ack.
        let ev = gw.recv().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(ev);
    });
    let a = exchange(
        &addr,
        &inject(r#"{"from":"+15557654321","to":"+15550001111","body":"hi"}"#),
    )
    .await;
    assert!(a.starts_with("HTTP/1.1 503"), "{a}");
    assert!(a.to_ascii_lowercase().contains("retry-after: 5"), "{a}");
    shutdown.cancel();
    task.await.unwrap().unwrap();
    holder.abort();
}
