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

/// The XMPP process against a fake server on `listener`, with `extra`
/// lines in `[xmpp]`: its events, the Gateway's sender, and its stop.
fn start(listener: &TcpListener, extra: &str) -> Started {
    let config = Config::from_toml(&format!(
        "[xmpp]\nserver = \"{}\"\ndomain = \"sms.example.com\"\nsecret = \"s\"\n{extra}\n\
         [http]\nlisten = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1/\"\n",
        listener.local_addr().unwrap()
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
    let (to_gateway, events) = mpsc::channel(16);
    let (gateway_tx, from_gateway) = mpsc::channel(16);
    let channels = XmppChannels {
        to_gateway,
        from_gateway: std::sync::Arc::new(tokio::sync::Mutex::new(from_gateway)),
    };
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let run = tokio::spawn(async move { process.run(channels, stop).await });
    (events, gateway_tx, shutdown, run)
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
