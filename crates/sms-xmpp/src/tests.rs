//! Tests of `lib.rs`.

use super::*;
use crate::link::testing::{accept_login, read_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What [`start`] gives: the process's events, the Gateway's sender,
/// the stop, and the running process.
type Started = (
    mpsc::Receiver<XmppEvent>,
    mpsc::Sender<OutgoingStanza>,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), ProcessError>>,
);

/// What [`start_with`] gives: [`Started`] and the process's metrics.
type WithMetrics = (
    mpsc::Receiver<XmppEvent>,
    mpsc::Sender<OutgoingStanza>,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), ProcessError>>,
    std::sync::Arc<sms_gateway_core::metrics::Metrics>,
);

/// The XMPP process against a fake server on `listener`, with `extra`
/// lines in `[xmpp]`: its events, the Gateway's sender, and its stop.
fn start(listener: &TcpListener, extra: &str) -> Started {
    let (events, gateway_tx, shutdown, run, _) = start_with(listener, extra);
    (events, gateway_tx, shutdown, run)
}

/// [`start`], and the process's metrics.
fn start_with(listener: &TcpListener, extra: &str) -> WithMetrics {
    let config = Config::from_toml(&format!(
        "[xmpp]\nserver = \"{}\"\ndomain = \"sms.example.com\"\nsecret = \"s\"\n{extra}\n\
         [http]\nlisten = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1/\"\n",
        listener.local_addr().unwrap()
    ))
    .unwrap();
    let metrics = std::sync::Arc::new(sms_gateway_core::metrics::Metrics::default());
    let providers = sms_gateway_core::Providers {
        accounts: Default::default(),
        users: std::sync::Arc::new(sms_gateway_core::Directory::from_config(&config).unwrap()),
        activity: Default::default(),
        metrics: metrics.clone(),
        limits: Default::default(),
    };
    let process = XmppProcess::new(&config, &providers);
    let (to_gateway, events) = mpsc::channel(16);
    let (gateway_tx, from_gateway) = mpsc::channel(16);
    let channels = XmppChannels {
        to_gateway,
        from_gateway: std::sync::Arc::new(tokio::sync::Mutex::new(from_gateway)),
    };
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let run = tokio::spawn(async move { process.run(channels, stop).await });
    (events, gateway_tx, shutdown, run, metrics)
}

/// The id of the last ping in `written`.
fn ping_id(written: &str) -> String {
    let at = written.rfind("<iq").expect("a ping");
    let rest = &written[at..];
    let id = rest
        .split("id='")
        .nth(1)
        .or_else(|| rest.split("id=\"").nth(1))
        .unwrap();
    id.split(['\'', '"']).next().unwrap().to_owned()
}

fn chat(inbound_id: u64, body: &str) -> OutgoingStanza {
    OutgoingStanza::Chat {
        from: "+15557654321@sms.example.com".into(),
        to: "alice@example.com".into(),
        body: body.into(),
        media_url: None,
        nick: None,
        inbound_id: Some(inbound_id),
        stable_id: None,
    }
}

/// A server that reads the stanzas and never routes the ping back:
/// nothing counts as taken; the link is replaced and the same stanzas
/// (same ids) are written again; only when the ping comes back are the
/// stored texts reported delivered.
#[tokio::test]
async fn nothing_counts_as_taken_until_the_server_routes_the_ping_back() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (mut events, gateway_tx, shutdown, run) = start(&listener, "");

    // Link 1: two texts written, the ping never answered, then cut.
    let (mut s, mut buf) = accept_login(&listener).await;
    gateway_tx.send(chat(1, "one")).await.unwrap();
    gateway_tx.send(chat(2, "two")).await.unwrap();
    read_until(&mut s, &mut buf, "two</body>").await;
    read_until(&mut s, &mut buf, "urn:xmpp:ping").await;
    let first = buf.clone();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        events.try_recv().is_err(),
        "nothing is taken before the ping returns"
    );
    drop(s);

    // Link 2: the same stanzas come again, with the same ids.
    let (mut s, mut buf) = accept_login(&listener).await;
    read_until(&mut s, &mut buf, "two</body>").await;
    read_until(&mut s, &mut buf, "urn:xmpp:ping").await;
    let id_of = |w: &str, body: &str| {
        let at = w.find(body).unwrap();
        let m = w[..at].rfind("<message").unwrap();
        w[m..at]
            .split("id='")
            .nth(1)
            .unwrap()
            .split('\'')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(id_of(&first, "one</body>"), id_of(&buf, "one</body>"));
    assert_eq!(id_of(&first, "two</body>"), id_of(&buf, "two</body>"));
    assert!(buf.contains("urn:xmpp:sid:0"), "an origin-id: {buf}");
    assert!(events.try_recv().is_err());

    // The server routes the ping back: both texts are taken.
    let id = ping_id(&buf);
    s.write_all(format!("<iq type='get' id='{id}' from='sms.example.com' to='sms.example.com'><ping xmlns='urn:xmpp:ping'/></iq>").as_bytes()).await.unwrap();
    let mut delivered = vec![];
    for _ in 0..2 {
        match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
            Ok(Some(XmppEvent::Delivered(id))) => delivered.push(id),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(delivered, [1, 2]);
    shutdown.cancel();
    s.write_all(b"</stream:stream>").await.unwrap();
    run.await.unwrap().unwrap();
}

/// A server that keeps the link up but never routes the ping back: after
/// twice the keep-alive interval the link is replaced, and what was
/// written is written again on the new one.
#[tokio::test]
async fn a_server_that_never_acknowledges_is_replaced() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (mut events, gateway_tx, shutdown, run) = start(&listener, "keepalive_secs = 1");
    let (mut first, mut buf) = accept_login(&listener).await;
    gateway_tx.send(chat(7, "seven")).await.unwrap();
    read_until(&mut first, &mut buf, "seven</body>").await;
    let started = std::time::Instant::now();
    // Reads everything (pings included) and answers none, but keeps
    // the link busy (so read timeouts never fire): only the missing
    // acknowledgement can make the process give up on it.
    let hold = tokio::spawn(async move {
        let (mut r, mut w) = first.into_split();
        tokio::spawn(async move {
            let mut sink = [0u8; 4096];
            while let Ok(n) = r.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        });
        loop {
            let busy = b"<message type='headline' from='news@example.com' to='sms.example.com'/>";
            if w.write_all(busy).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let (mut second, mut buf) =
        tokio::time::timeout(Duration::from_secs(10), accept_login(&listener))
            .await
            .expect("the link is replaced");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "replaced after {waited:?}"
    );
    read_until(&mut second, &mut buf, "seven</body>").await;
    assert!(events.try_recv().is_err(), "nothing was acknowledged");
    shutdown.cancel();
    second.write_all(b"</stream:stream>").await.unwrap();
    run.await.unwrap().unwrap();
    hold.abort();
}

/// A user and a sandbox account, for tests that need one.
const ALICE: &str = "\n[providers.main]\ntype = \"sandbox\"\ntoken = \"sandbox-test-token\"\n\
    [[users]]\njid = \"alice@example.com\"\nnumber = \"+15550001111\"\nprovider = \"main\"\n";

/// #26, the cycle of waits, under tokio's paused clock. The Gateway takes
/// nothing (its input channel is full and nobody reads it) while it has
/// more to write than [`MAX_UNACKED`], and a stranger and a user flood the
/// link. Before, the link stopped being read (waiting for the Gateway),
/// so the server's acknowledgements were never read, so nothing more was
/// taken from the Gateway: everything stopped for good. Now the link is
/// read whatever the Gateway does: every stanza the Gateway had is
/// written and acknowledged, the stranger is answered without the
/// Gateway, the user's burst past its share is refused with
/// `resource-constraint`, the stall fails readiness, and once the Gateway
/// reads again it gets every acknowledgement and every chat it was not
/// refused.
#[tokio::test(start_paused = true)]
async fn a_gateway_that_takes_nothing_does_not_stop_the_link() {
    const FROM_GATEWAY: usize = 6_000;
    const STRANGER: usize = 10_000;
    const USER: usize = 1_000;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (mut events, gateway_tx, shutdown, run, metrics) = start_with(&listener, ALICE);
    let (s, _) = accept_login(&listener).await;
    let (mut rd, mut wr) = s.into_split();
    let (echo_tx, mut echo_rx) = mpsc::unbounded_channel::<String>();

    // The server's reading side: counts what the gateway wrote and routes
    // each ping back.
    #[derive(Default, Debug, Clone)]
    struct Seen {
        chats: usize,
        not_a_user: usize,
        stranger_answers: usize,
        user_refusals: usize,
    }
    let shared = std::sync::Arc::new(std::sync::Mutex::new(Seen::default()));
    let seen_by_server = shared.clone();
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    let mut seen_tx = Some(seen_tx);
    let _reader = tokio::spawn(async move {
        let mut seen = Seen::default();
        let mut pending = String::new();
        let mut chunk = vec![0u8; 65536];
        loop {
            let n = match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            pending.push_str(std::str::from_utf8(&chunk[..n]).unwrap());
            let Some(cut) = pending.rfind('>') else {
                continue;
            };
            let done: String = pending.drain(..=cut).collect();
            seen.chats += done.matches(">g</body>").count();
            seen.not_a_user += done.matches("registration-required").count();
            seen.stranger_answers += done.matches("mallory@evil.example/x").count();
            seen.user_refusals += done.matches("alice@example.com/phone").count();
            *seen_by_server.lock().unwrap() = seen.clone();
            for piece in done.split("<iq").skip(1) {
                if piece.contains("urn:xmpp:ping") {
                    let id = piece
                        .split("id=")
                        .nth(1)
                        .and_then(|r| r.get(1..))
                        .and_then(|r| r.split(['\'', '"']).next())
                        .unwrap()
                        .to_owned();
                    let _ = echo_tx.send(format!("<iq type='get' id='{id}' from='sms.example.com' to='sms.example.com'><ping xmlns='urn:xmpp:ping'/></iq>"));
                }
            }
            // Told once; pings are routed back on.
            if seen.chats >= FROM_GATEWAY && seen.stranger_answers >= STRANGER {
                if let Some(tx) = seen_tx.take() {
                    let _ = tx.send(seen.clone());
                }
            }
        }
    });
    // The server's writing side: the floods, with the pings routed back
    // between them.
    let writer = tokio::spawn(async move {
        let mut flood = (0..STRANGER)
            .map(|i| format!("<message type='chat' id='s{i}' from='mallory@evil.example/x' to='+15557654321@sms.example.com'><body>spam {i}</body></message>"))
            .chain((0..USER).map(|i| format!("<message type='chat' id='a{i}' from='alice@example.com/phone' to='+15557654321@sms.example.com'><body>hi {i}</body></message>")))
            .collect::<Vec<_>>()
            .into_iter();
        loop {
            while let Ok(echo) = echo_rx.try_recv() {
                wr.write_all(echo.as_bytes()).await.unwrap();
            }
            let batch: String = flood.by_ref().take(100).collect();
            if batch.is_empty() {
                match echo_rx.recv().await {
                    Some(echo) => wr.write_all(echo.as_bytes()).await.unwrap(),
                    None => return wr,
                }
            } else {
                wr.write_all(batch.as_bytes()).await.unwrap();
            }
        }
    });
    for i in 0..FROM_GATEWAY {
        // With the old cycle, this stopped after MAX_UNACKED + 16.
        tokio::time::timeout(
            Duration::from_secs(60),
            gateway_tx.send(chat(i as u64 + 1, "g")),
        )
        .await
        .expect("the XMPP process takes from the Gateway")
        .unwrap();
    }
    let seen = tokio::time::timeout(Duration::from_secs(120), seen_rx)
        .await
        .expect("everything is written while the Gateway takes nothing")
        .unwrap();
    assert_eq!(seen.chats, FROM_GATEWAY, "{seen:?}");
    // Each of the stranger's chats answered, without the Gateway: a
    // sentence within the budget, a bare resource-constraint past it.
    assert_eq!(seen.stranger_answers, STRANGER, "{seen:?}");
    assert!(seen.not_a_user >= 200, "{seen:?}");
    // The Gateway has taken nothing for longer than the bound: not ready.
    tokio::time::sleep(STALL_AFTER * 2).await;
    let why = metrics.readiness().unwrap_err();
    assert!(why.contains("gateway_input channel is stalled"), "{why}");
    // The Gateway reads again: every acknowledgement and the user's chats
    // that were not refused; none of the stranger's.
    let (mut delivered, mut chats) = (0, 0);
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
        match ev {
            // (Acknowledgements go ahead of what waits when they come:
            // `inbox::tests`; the last ones come after the link is read.)
            XmppEvent::Delivered(_) => delivered += 1,
            XmppEvent::Chat(c) => {
                assert!(c.from.starts_with("alice@"), "{c:?}");
                chats += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(delivered, FROM_GATEWAY);
    let refused = shared.lock().unwrap().user_refusals;
    assert_eq!(
        chats + refused,
        USER,
        "every chat of the user taken or refused"
    );
    assert!(
        refused > 0 && chats >= crate::inbox::PER_USER,
        "{chats} {refused}"
    );
    // Moving again: only what is true remains (no carrier account here).
    assert_eq!(metrics.readiness(), Ok(()));
    shutdown.cancel();
    let _ = writer.await;
    let _ = run.await;
}

/// #30: a chat that finds nothing waiting goes straight into the channel
/// to the Gateway; once that is full the rest wait in the inbox. Either
/// way the Gateway gets them in the order they came.
#[tokio::test(start_paused = true)]
async fn chats_reach_the_gateway_in_order_straight_or_queued() {
    const CHATS: usize = 60; // the test's channel holds 16
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (mut events, _gateway_tx, shutdown, run) = start(&listener, ALICE);
    let (mut s, _) = accept_login(&listener).await;
    let flood: String = (0..CHATS)
        .map(|i| format!("<message type='chat' id='a{i}' from='alice@example.com/phone' to='+15557654321@sms.example.com'><body>hi {i}</body></message>"))
        .collect();
    s.write_all(flood.as_bytes()).await.unwrap();
    // Nothing is taken until all have been read from the link.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 0..CHATS {
        let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("every chat reaches the Gateway")
            .unwrap();
        match ev {
            XmppEvent::Chat(c) => assert_eq!(c.body, format!("hi {i}")),
            other => panic!("{other:?}"),
        }
    }
    shutdown.cancel();
    let _ = run.await;
}

/// #27: the answer to a query the gateway sent (an upload slot, a disco
/// walk, a roster push) is believed only from the address it was sent to,
/// never from another account of that domain, and its id cannot be
/// guessed.
#[test]
fn answers_are_believed_only_from_the_address_asked() {
    let config = Config::from_toml(&format!(
        "[xmpp]\nserver = \"127.0.0.1:1\"\ndomain = \"sms.example.com\"\nsecret = \"s\"\n{ALICE}\n\
         [http]\nlisten = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1/\"\n"
    ))
    .unwrap();
    let providers = sms_gateway_core::Providers {
        accounts: Default::default(),
        users: std::sync::Arc::new(sms_gateway_core::Directory::from_config(&config).unwrap()),
        activity: Default::default(),
        metrics: Default::default(),
        limits: Default::default(),
    };
    let process = XmppProcess::new(&config, &providers);
    // A disco walk of the user's server, as `media.store = "upload"` does.
    let asked = Jid::new("example.com").unwrap();
    let (reply, mut answer) = tokio::sync::oneshot::channel();
    let id = sms_gateway_core::random_id();
    assert_eq!(id.len(), 32);
    assert_ne!(id, sms_gateway_core::random_id());
    process
        .pending
        .lock()
        .unwrap()
        .insert(id.clone(), (asked.clone(), reply));
    let result = |from: &str| Iq::Result {
        from: Some(Jid::new(from).unwrap()),
        to: Some(Jid::new("sms.example.com").unwrap()),
        id: id.clone(),
        payload: None,
    };
    // Another account (or the server itself) on the domain: not believed.
    for forger in [
        "mallory@example.com/x",
        "mallory@example.com",
        "upload.example.com",
    ] {
        assert!(!process.answered(&result(forger)), "{forger}");
    }
    assert!(answer.try_recv().is_err());
    assert!(process.answered(&result("example.com")));
    assert!(matches!(answer.try_recv(), Ok(Ok(None))));
}
