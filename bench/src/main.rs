//! `sms-bench`: the load benchmark of sms-over-xmpp.
//!
//! In one run, on loopback, it starts a throwaway Prosody and measures:
//! 1. the **ceiling**: a bare XEP-0114 echo component (a few lines, below)
//!    answering chats through that Prosody;
//! 2. **the gateway**: the real `sms-over-xmpp` binary with a Twilio account
//!    pointed at a fast carrier mock (a second process) that answers
//!    `Messages.json` like Twilio and posts a signed inbound webhook with the
//!    same body back, so each message goes client → Prosody → gateway →
//!    carrier API → webhook → gateway → Prosody → client.
//!
//! Both get the same load from raw c2s clients (several sessions, a window of
//! messages in flight each, a warm-up, measured runs, median reported). It
//! prints round trips per second and their ratio, latency loaded and
//! unloaded, CPU per 1,000 round trips (the kernel's run time of each
//! process, `/proc/PID/task/*/schedstat`, in nanoseconds) for the
//! gateway, Prosody and the mock, the gateway's peak RSS, errors and losses.

use base64::Engine;
use clap::{Parser, Subcommand};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SID: &str = "AC00000000000000000000000000bench";
const TOKEN: &str = "bench-token";
const SECRET: &str = "bench-secret";
const PUBLIC: &str = "https://sms.example.com/hooks";

#[derive(Parser)]
#[command(
    name = "sms-bench",
    about = "Load benchmark of sms-over-xmpp against a bare echo component"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Measure the ceiling and the gateway in one run.
    Run(RunArgs),
    /// (internal) The fast carrier mock.
    Mock {
        #[arg(long)]
        listen: String,
        #[arg(long)]
        gateway: String,
    },
    /// (internal) The bare echo component.
    Echo {
        #[arg(long)]
        server: String,
        #[arg(long)]
        domain: String,
    },
}

#[derive(Parser, Clone)]
struct RunArgs {
    /// Round trips per measured run.
    #[arg(long, default_value_t = 4000)]
    messages: usize,
    /// c2s sessions.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Messages in flight per session.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Measured runs (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Round trips of the warm-up (not measured).
    #[arg(long, default_value_t = 500)]
    warmup: usize,
    /// Round trips of the unloaded latency run (one session, one in flight).
    #[arg(long, default_value_t = 300)]
    unloaded: usize,
    /// The gateway binary; default: `sms-over-xmpp` beside this one.
    #[arg(long)]
    gateway: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// A short check for CI: few messages, fail if any is lost.
    #[arg(long)]
    smoke: bool,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_port(port: u16) {
    for _ in 0..400 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {port}");
}

/// CPU time (user + system) of a process: the sum of its threads' run
/// time in nanoseconds (`/proc/PID/task/*/schedstat`), the same kernel
/// counter `/proc/PID/stat` reports in 10 ms ticks (±2.5 ms per 1,000
/// round trips over a 4,000-round-trip run, too coarse here). Falls back to
/// `/proc/PID/stat` where schedstat is missing.
fn cpu_time(pid: u32) -> Duration {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .collect::<Vec<_>>();
    if !threads.is_empty() {
        return Duration::from_nanos(threads.iter().sum());
    }
    stat_cpu_time(pid)
}

/// CPU time (user + system) of a process, from `/proc/PID/stat`, in ticks.
fn stat_cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 1000 / 100) // USER_HZ is 100 on Linux
}

/// Peak resident memory of a process, KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Prosody {
    _dir: tempfile::TempDir,
    child: Killed,
    c2s: u16,
    component: u16,
}

fn start_prosody(users: usize) -> Prosody {
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
    let child = Command::new("prosody")
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

/// Reads until `needle` has arrived; returns everything read.
async fn read_until(s: &mut TcpStream, buf: &mut String, needle: &str) {
    let mut chunk = [0u8; 4096];
    while !buf.contains(needle) {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("server answers")
            .unwrap();
        assert!(n > 0, "server closed while waiting for {needle}: {buf}");
        buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
}

/// Attribute `name` of the first tag in `el`.
fn attr<'a>(el: &'a str, name: &str) -> Option<&'a str> {
    let head = &el[..el.find('>')?];
    for q in ['\'', '"'] {
        let pat = format!(" {name}={q}");
        if let Some(i) = head.find(&pat) {
            let rest = &head[i + pat.len()..];
            return rest.find(q).map(|j| &rest[..j]);
        }
    }
    None
}

fn body(el: &str) -> Option<&str> {
    let start = el.find("<body")?;
    let open_end = start + el[start..].find('>')? + 1;
    let end = open_end + el[open_end..].find("</body>")?;
    Some(&el[open_end..end])
}

/// Cuts complete `<message …>…</message>` elements off the front of `buf`.
fn take_messages(buf: &mut String) -> Vec<String> {
    let mut out = vec![];
    loop {
        let Some(start) = buf.find("<message") else {
            // Keep only a possible partial tag.
            if let Some(lt) = buf.rfind('<') {
                buf.drain(..lt);
            } else {
                buf.clear();
            }
            return out;
        };
        let Some(end_rel) = buf[start..].find("</message>") else {
            buf.drain(..start);
            return out;
        };
        let end = start + end_rel + "</message>".len();
        out.push(buf[start..end].to_owned());
        buf.drain(..end);
    }
}

/// The bare XEP-0114 echo component: the ceiling. It is built like the
/// gateway's XMPP side (tokio-xmpp's stream, xmpp-parsers' stanzas), so the
/// comparison is of the gateway's work, not of XML libraries.
async fn echo(server: &str, domain: &str) {
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

/// The fast carrier mock: answers like Twilio, then posts the same text back
/// as a signed inbound webhook.
async fn mock(listen: &str, gateway: &str) {
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
                let sid = format!("SM{n:032}");
                let (from, to, text) = (
                    form.get("To").cloned().unwrap_or_default(),
                    form.get("From").cloned().unwrap_or_default(),
                    form.get("Body").cloned().unwrap_or_default(),
                );
                let st2 = st.clone();
                let sid2 = sid.clone();
                tokio::spawn(async move {
                    let params = vec![
                        ("MessageSid".to_owned(), format!("{sid2}in")),
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

/// A c2s session speaking just enough XMPP: SASL PLAIN, bind, presence, chats.
struct Session {
    r: tokio::net::tcp::OwnedReadHalf,
    w: tokio::net::tcp::OwnedWriteHalf,
    buf: String,
}

async fn login(port: u16, user: &str) -> Session {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.set_nodelay(true).unwrap();
    let header = "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";
    let mut buf = String::new();
    s.write_all(header.as_bytes()).await.unwrap();
    read_until(&mut s, &mut buf, "</stream:features>").await;
    let cred = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0benchpw"));
    s.write_all(
        format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{cred}</auth>")
            .as_bytes(),
    )
    .await
    .unwrap();
    read_until(&mut s, &mut buf, "<success").await;
    buf.clear();
    s.write_all(header.as_bytes()).await.unwrap();
    read_until(&mut s, &mut buf, "</stream:features>").await;
    s.write_all(b"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        .await
        .unwrap();
    read_until(&mut s, &mut buf, "</iq>").await;
    s.write_all(b"<presence/>").await.unwrap();
    buf.clear();
    let (r, w) = s.into_split();
    Session { r, w, buf }
}

#[derive(Default, Clone)]
struct Load {
    round_trips: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    errors: usize,
    lost: usize,
}

impl Load {
    fn rate(&self) -> f64 {
        self.round_trips as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        if l.is_empty() {
            return Duration::ZERO;
        }
        l[((l.len() - 1) as f64 * p).round() as usize]
    }
}

/// One session's share: `count` chats to `to`, `window` in flight.
async fn drive_session(
    mut s: Session,
    tag: String,
    to: String,
    count: usize,
    window: usize,
) -> (Session, Load) {
    let mut load = Load::default();
    let mut sent_at: HashMap<String, Instant> = HashMap::new();
    let mut next = 0;
    let mut chunk = vec![0u8; 65536];
    let start = Instant::now();
    let mut last_progress = Instant::now();
    while load.round_trips + load.errors < count {
        let mut out = String::new();
        while next < count && sent_at.len() < window {
            let id = format!("{tag}-{next}");
            out.push_str(&format!(
                "<message type='chat' to='{to}' id='{id}'><body>{id}</body></message>"
            ));
            sent_at.insert(id, Instant::now());
            next += 1;
        }
        if !out.is_empty() {
            s.w.write_all(out.as_bytes()).await.unwrap();
        }
        let n = match tokio::time::timeout(Duration::from_secs(10), s.r.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => break,
        };
        s.buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
        for m in take_messages(&mut s.buf) {
            let is_error = attr(&m, "type") == Some("error");
            let key = if is_error {
                attr(&m, "id").map(str::to_owned)
            } else {
                body(&m).map(str::to_owned)
            };
            if let Some(t0) = key.and_then(|k| sent_at.remove(&k)) {
                if is_error {
                    load.errors += 1;
                } else {
                    load.round_trips += 1;
                    load.latencies.push(t0.elapsed());
                }
                last_progress = Instant::now();
            }
        }
        if last_progress.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    load.elapsed = start.elapsed();
    load.lost = count - load.round_trips - load.errors;
    (s, load)
}

/// Drives `total` round trips through `sessions`, `window` in flight each.
async fn drive(
    sessions: Vec<Session>,
    domain: &str,
    total: usize,
    window: usize,
    run: usize,
) -> (Vec<Session>, Load) {
    let per = total / sessions.len();
    let start = Instant::now();
    let mut tasks = vec![];
    for (i, s) in sessions.into_iter().enumerate() {
        let to = format!("+1555700{i:04}@{domain}");
        tasks.push(tokio::spawn(drive_session(
            s,
            format!("r{run}s{i}"),
            to,
            per,
            window,
        )));
    }
    let mut all = Load::default();
    let mut back = vec![];
    for t in tasks {
        let (s, l) = t.await.unwrap();
        back.push(s);
        all.round_trips += l.round_trips;
        all.errors += l.errors;
        all.lost += l.lost;
        all.latencies.extend(l.latencies);
    }
    all.elapsed = start.elapsed();
    (back, all)
}

struct Measured {
    rate: f64,
    loaded: Load,
    unloaded: Load,
    cpu_ms_per_1000: HashMap<&'static str, f64>,
    errors: usize,
    lost: usize,
}

async fn measure(
    name: &'static str,
    domain: &str,
    args: &RunArgs,
    prosody: &Prosody,
    pids: &[(&'static str, u32)],
) -> Measured {
    let mut sessions = vec![];
    for i in 0..args.clients {
        sessions.push(login(prosody.c2s, &format!("bench{i}")).await);
    }
    let (s, warm) = drive(
        sessions,
        domain,
        args.warmup.max(args.clients),
        args.window,
        0,
    )
    .await;
    sessions = s;
    let mut runs = vec![];
    let mut cpu: HashMap<&'static str, Vec<f64>> = HashMap::new();
    let (mut errors, mut lost) = (warm.errors, warm.lost);
    for run in 1..=args.runs {
        let before: Vec<Duration> = pids.iter().map(|(_, p)| cpu_time(*p)).collect();
        let (s, load) = drive(sessions, domain, args.messages, args.window, run).await;
        sessions = s;
        for ((n, p), b) in pids.iter().zip(before) {
            let used = cpu_time(*p).saturating_sub(b).as_secs_f64() * 1000.0;
            cpu.entry(n)
                .or_default()
                .push(used * 1000.0 / load.round_trips.max(1) as f64);
        }
        errors += load.errors;
        lost += load.lost;
        eprintln!(
            "{name}: run {run}: {:.0} round trips/s, {} errors, {} lost",
            load.rate(),
            load.errors,
            load.lost
        );
        runs.push(load);
    }
    runs.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    let loaded = runs[runs.len() / 2].clone();
    let (s, unloaded) = drive(
        sessions.into_iter().take(1).collect(),
        domain,
        args.unloaded,
        1,
        99,
    )
    .await;
    drop(s);
    errors += unloaded.errors;
    lost += unloaded.lost;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Measured {
        rate: loaded.rate(),
        loaded,
        unloaded,
        cpu_ms_per_1000: cpu.into_iter().map(|(k, v)| (k, median(v))).collect(),
        errors,
        lost,
    }
}

fn gateway_binary(arg: &Option<PathBuf>) -> PathBuf {
    if let Some(p) = arg {
        return p.clone();
    }
    let me = std::env::current_exe().unwrap();
    me.parent().unwrap().join("sms-over-xmpp")
}

async fn run(args: RunArgs) -> bool {
    let mut args = args;
    if args.smoke {
        (
            args.messages,
            args.runs,
            args.warmup,
            args.unloaded,
            args.clients,
        ) = (300, 1, 50, 50, 2);
    }
    let prosody = start_prosody(args.clients);
    wait_port(prosody.c2s).await;
    wait_port(prosody.component).await;
    let me = std::env::current_exe().unwrap();

    // The ceiling.
    let echo = Killed(
        Command::new(&me)
            .args([
                "echo",
                "--server",
                &format!("127.0.0.1:{}", prosody.component),
                "--domain",
                "echo.localhost",
            ])
            .spawn()
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ceiling = measure(
        "echo component",
        "echo.localhost",
        &args,
        &prosody,
        &[
            ("echo", echo.0.id()),
            ("prosody", prosody.child.0.id()),
            ("client", std::process::id()),
        ],
    )
    .await;
    drop(echo);

    // The gateway, with the carrier mock.
    let dir = tempfile::tempdir().unwrap();
    let (http_port, mock_port) = (free_port(), free_port());
    let users: String = (0..args.clients)
        .map(|i| format!("[[users]]\njid = \"bench{i}@localhost\"\nnumber = \"+1555800{i:04}\"\nprovider = \"main\"\n"))
        .collect();
    let cfg = format!(
        "[xmpp]\nserver = \"127.0.0.1:{}\"\ndomain = \"sms.localhost\"\nsecret = \"{SECRET}\"\n\
         [http]\nlisten = \"127.0.0.1:{http_port}\"\npublic_url = \"{PUBLIC}\"\n\
         [store]\npath = \"bench.db\"\n\
         [limits]\ntexts_per_minute = 100000000\ntexts_burst = 100000000\n\
         [providers.main]\ntype = \"twilio\"\naccount_sid = \"{SID}\"\nauth_token = \"{TOKEN}\"\napi_base = \"http://127.0.0.1:{mock_port}\"\n{users}",
        prosody.component
    );
    let cfg_path = dir.path().join("gateway.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let mock = Killed(
        Command::new(&me)
            .args([
                "mock",
                "--listen",
                &format!("127.0.0.1:{mock_port}"),
                "--gateway",
                &format!("http://127.0.0.1:{http_port}/hooks/main/message"),
            ])
            .spawn()
            .unwrap(),
    );
    let bin = gateway_binary(&args.gateway);
    let gateway = Killed(
        Command::new(&bin)
            .args(["run", "--config"])
            .arg(&cfg_path)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (build it: cargo build --release -p sms-over-xmpp-bin)",
                    bin.display()
                )
            }),
    );
    wait_port(http_port).await;
    wait_port(mock_port).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gw_pid = gateway.0.id();
    let measured = measure(
        "gateway",
        "sms.localhost",
        &args,
        &prosody,
        &[
            ("gateway", gw_pid),
            ("prosody", prosody.child.0.id()),
            ("mock", mock.0.id()),
            ("client", std::process::id()),
        ],
    )
    .await;
    let rss = peak_rss_kib(gw_pid);
    let ratio = measured.rate / ceiling.rate;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let report = serde_json::json!({
        "messages_per_run": args.messages, "clients": args.clients, "window": args.window, "runs": args.runs,
        "ceiling": {"round_trips_per_sec": ceiling.rate,
            "latency_ms": {"p50": ms(ceiling.loaded.pct(0.5)), "p90": ms(ceiling.loaded.pct(0.9)), "p99": ms(ceiling.loaded.pct(0.99))},
            "unloaded_latency_ms": {"p50": ms(ceiling.unloaded.pct(0.5)), "p90": ms(ceiling.unloaded.pct(0.9)), "p99": ms(ceiling.unloaded.pct(0.99))},
            "cpu_ms_per_1000": ceiling.cpu_ms_per_1000, "errors": ceiling.errors, "lost": ceiling.lost},
        "gateway": {"round_trips_per_sec": measured.rate,
            "latency_ms": {"p50": ms(measured.loaded.pct(0.5)), "p90": ms(measured.loaded.pct(0.9)), "p99": ms(measured.loaded.pct(0.99))},
            "unloaded_latency_ms": {"p50": ms(measured.unloaded.pct(0.5)), "p90": ms(measured.unloaded.pct(0.9)), "p99": ms(measured.unloaded.pct(0.99))},
            "cpu_ms_per_1000": measured.cpu_ms_per_1000, "peak_rss_mib": rss as f64 / 1024.0,
            "errors": measured.errors, "lost": measured.lost},
        "ratio": ratio,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap());
    } else {
        let g = &report["gateway"];
        let c = &report["ceiling"];
        println!("                         echo component   gateway");
        println!(
            "round trips/s            {:>14.0}   {:>7.0}   ratio {:.2}",
            ceiling.rate, measured.rate, ratio
        );
        for (k, label) in [
            ("latency_ms", "loaded"),
            ("unloaded_latency_ms", "unloaded"),
        ] {
            for p in ["p50", "p90", "p99"] {
                println!(
                    "latency {label:<8} {p} ms     {:>14.2}   {:>7.2}",
                    c[k][p].as_f64().unwrap(),
                    g[k][p].as_f64().unwrap()
                );
            }
        }
        let ms = |m: &serde_json::Value, k: &str| m["cpu_ms_per_1000"][k].as_f64().unwrap_or(0.0);
        println!(
            "CPU ms / 1000 round trips: gateway {:.1}, prosody {:.1}, mock {:.1}, load client {:.1} (echo run: echo component {:.1}, prosody {:.1}, load client {:.1})",
            ms(g, "gateway"), ms(g, "prosody"), ms(g, "mock"), ms(g, "client"),
            ms(c, "echo"), ms(c, "prosody"), ms(c, "client")
        );
        println!("gateway peak RSS {:.1} MiB", rss as f64 / 1024.0);
        println!(
            "errors: echo {} gateway {}; lost: echo {} gateway {}",
            ceiling.errors, measured.errors, ceiling.lost, measured.lost
        );
    }
    drop(gateway);
    drop(mock);
    let ok = measured.lost == 0 && measured.errors == 0 && ceiling.lost == 0;
    if args.smoke {
        println!("smoke: {}", if ok { "OK, nothing lost" } else { "FAILED" });
    }
    ok
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The echo component and the mock run on one thread, like the gateway;
    // the load client gets both cores' worth of workers so it is never the
    // bottleneck (its CPU is reported).
    let rt = match cli.command {
        Cmd::Run(_) => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    }
    .enable_all()
    .build()
    .unwrap();
    match cli.command {
        Cmd::Mock { listen, gateway } => rt.block_on(mock(&listen, &gateway)),
        Cmd::Echo { server, domain } => rt.block_on(echo(&server, &domain)),
        Cmd::Run(args) => {
            if !rt.block_on(run(args)) {
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    std::process::ExitCode::SUCCESS
}
