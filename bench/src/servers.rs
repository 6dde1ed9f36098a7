//! What the benchmark runs against: Prosody, the bare echo component, and
//! the carrier mock.

use super::*;

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) async fn wait_port(port: u16) {
    for _ in 0..400 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {port}");
}

pub(crate) struct Prosody {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) child: Killed,
    pub(crate) c2s: u16,
    pub(crate) component: u16,
}

pub(crate) fn start_prosody(users: usize) -> Prosody {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let (c2s, component) = (free_port(), free_port());
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let cfg = format!(
        "run_as_root = true\npidfile = \"{d}/prosody.pid\"\ndata_path = \"{d}/data\"\ninterfaces = {{ \"127.0.0.1\" }}\n\
         c2s_ports = {{ {c2s} }}\ncomponent_ports = {{ {component} }}\ncomponent_interfaces = {{ \"127.0.0.1\" }}\n\
         s2s_ports = {{ }}\nhttp_ports = {{ }}\nhttps_ports = {{ }}\n\
         modules_enabled = {{ \"roster\"; \"saslauth\"; \"disco\"; \"ping\"; \"presence\"; \"message\"; \"iq\"; \"posix\" }}\n\
         modules_disabled = {{ \"s2s\"; \"offline\" }}\nauthentication = \"internal_plain\"\nc2s_require_encryption = false\n\
         allow_unencrypted_plain_auth = true\n\
         log = {{ warn = \"{d}/prosody.log\" }}\nVirtualHost \"localhost\"\n\
         Component \"sms.localhost\"\n  component_secret = \"{SECRET}\"\nComponent \"echo.localhost\"\n  component_secret = \"{SECRET}\"\n"
    );
    let path = dir.path().join("prosody.cfg.lua");
    std::fs::write(&path, cfg).unwrap();
    for i in 0..users {
        let ok = Command::new("prosodyctl")
            .arg("--config")
            .arg(&path)
            .args(["register", &format!("bench{i}"), "localhost", "benchpw"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("prosodyctl (apt-get install -y prosody)");
        assert!(ok.success(), "prosodyctl register");
    }
    let child = tied(&mut Command::new("prosody"))
        .arg("--config")
        .arg(&path)
        .arg("-F")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prosody");
    Prosody {
        _dir: dir,
        child: Killed(child),
        c2s,
        component,
    }
}

/// The bare XEP-0114 echo component: the ceiling. It is built like the
/// gateway's XMPP side (tokio-xmpp's stream, xmpp-parsers' stanzas), so the
/// comparison is of the gateway's work, not of XML libraries.
pub(crate) async fn echo(server: &str, domain: &str) {
    use sms_xmpp::link::{self, Incoming};
    use tokio_xmpp::parsers::message::{Lang, Message};
    use tokio_xmpp::Stanza;
    let mut l = link::login(server, domain, SECRET, Default::default())
        .await
        .unwrap();
    loop {
        match link::read(&mut l).await {
            Incoming::Stanza(st) => {
                let Stanza::Message(m) = *st else { continue };
                let (Some(from), Some(to), Some((_, body))) =
                    (m.from, m.to, m.bodies.into_iter().next())
                else {
                    continue;
                };
                let mut reply = Message::chat(from).with_body(Lang::new(), body);
                reply.from = Some(to);
                if link::write(&mut l, Stanza::Message(reply)).await.is_err() {
                    return;
                }
            }
            Incoming::Closed(_) => return,
            _ => {}
        }
    }
}

/// A message SID as Twilio makes them: `SM` and 32 hex digits that look
/// random, so nothing stored by them is written in order (the `n`th of a
/// fixed scattered sequence, splitmix64, so runs compare).
fn twilio_sid(n: u64) -> String {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    format!("SM{:016x}{:016x}", mix(2 * n), mix(2 * n + 1))
}

/// The fast carrier mock: answers like Twilio, then posts the same text back
/// as a signed inbound webhook.
pub(crate) async fn mock(listen: &str, gateway: &str) {
    use axum::extract::State;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let state = Arc::new((http, gateway.to_owned(), AtomicU64::new(0)));
    let app = axum::Router::new()
        .fallback(
            |State(st): State<Arc<(reqwest::Client, String, AtomicU64)>>,
             body: axum::body::Bytes| async move {
                let form: HashMap<String, String> =
                    form_urlencoded::parse(&body).into_owned().collect();
                let n = st.2.fetch_add(1, Ordering::Relaxed);
                let sid = twilio_sid(2 * n);
                let (from, to, text) = (
                    form.get("To").cloned().unwrap_or_default(),
                    form.get("From").cloned().unwrap_or_default(),
                    form.get("Body").cloned().unwrap_or_default(),
                );
                let st2 = st.clone();
                tokio::spawn(async move {
                    let params = vec![
                        ("MessageSid".to_owned(), twilio_sid(2 * n + 1)),
                        ("AccountSid".to_owned(), SID.to_owned()),
                        ("From".to_owned(), from),
                        ("To".to_owned(), to),
                        ("Body".to_owned(), text),
                        ("NumMedia".to_owned(), "0".to_owned()),
                    ];
                    let sig = sms_pstn_laml::signature::twilio_signature(
                        TOKEN,
                        &format!("{PUBLIC}/main/message"),
                        &params,
                    );
                    let body = form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(&params)
                        .finish();
                    for _ in 0..50 {
                        let r = st2
                            .0
                            .post(&st2.1)
                            .header("content-type", "application/x-www-form-urlencoded")
                            .header("x-twilio-signature", &sig)
                            .body(body.clone())
                            .send()
                            .await;
                        if matches!(&r, Ok(r) if r.status().is_success()) {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                });
                (
                    axum::http::StatusCode::CREATED,
                    [("content-type", "application/json")],
                    format!("{{\"sid\":\"{sid}\",\"status\":\"queued\",\"num_segments\":\"1\"}}"),
                )
            },
        )
        .with_state(state);
    use axum::serve::ListenerExt;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .unwrap()
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    axum::serve(listener, app).await.unwrap();
}
