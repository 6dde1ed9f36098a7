//! The load client: raw XMPP sessions, in-flight windows, and the
//! measurements.

use super::*;

/// Reads until `needle` has arrived; returns everything read.
pub(crate) async fn read_until(s: &mut TcpStream, buf: &mut String, needle: &str) {
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
pub(crate) fn attr<'a>(el: &'a str, name: &str) -> Option<&'a str> {
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

pub(crate) fn body(el: &str) -> Option<&str> {
    let start = el.find("<body")?;
    let open_end = start + el[start..].find('>')? + 1;
    let end = open_end + el[open_end..].find("</body>")?;
    Some(&el[open_end..end])
}

/// Cuts complete `<message …>…</message>` elements off the front of `buf`.
pub(crate) fn take_messages(buf: &mut String) -> Vec<String> {
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

/// A c2s session speaking just enough XMPP: SASL PLAIN, bind, presence, chats.
pub(crate) struct Session {
    pub(crate) r: tokio::net::tcp::OwnedReadHalf,
    pub(crate) w: tokio::net::tcp::OwnedWriteHalf,
    pub(crate) buf: String,
}

pub(crate) async fn login(port: u16, user: &str) -> Session {
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
pub(crate) struct Load {
    pub(crate) round_trips: usize,
    pub(crate) elapsed: Duration,
    pub(crate) latencies: Vec<Duration>,
    pub(crate) errors: usize,
    pub(crate) lost: usize,
}

impl Load {
    pub(crate) fn rate(&self) -> f64 {
        self.round_trips as f64 / self.elapsed.as_secs_f64()
    }
    pub(crate) fn pct(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        if l.is_empty() {
            return Duration::ZERO;
        }
        l[((l.len() - 1) as f64 * p).round() as usize]
    }
}

/// One session's share: `count` chats to `to`, `window` in flight.
pub(crate) async fn drive_session(
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
pub(crate) async fn drive(
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

/// What one measured run left the gateway at (the soak's series).
#[derive(Clone)]
pub(crate) struct RunFigures {
    /// Round trips since the gateway started (warm-up included).
    pub(crate) round_trips: usize,
    pub(crate) round_trips_per_sec: f64,
    pub(crate) cpu_ms_per_1000: f64,
    /// `VmHWM` and `VmRSS` after the run, MiB.
    pub(crate) peak_rss_mib: f64,
    pub(crate) rss_mib: f64,
    /// Open file descriptors after the run.
    pub(crate) fds: usize,
}

impl RunFigures {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "round_trips": self.round_trips, "round_trips_per_sec": self.round_trips_per_sec,
            "cpu_ms_per_1000": self.cpu_ms_per_1000, "peak_rss_mib": self.peak_rss_mib,
            "rss_mib": self.rss_mib, "fds": self.fds,
        })
    }
}

pub(crate) struct Measured {
    /// Each run's figures for the process named `gateway`, if any.
    pub(crate) per_run: Vec<RunFigures>,
    pub(crate) rate: f64,
    pub(crate) loaded: Load,
    pub(crate) unloaded: Load,
    pub(crate) cpu_ms_per_1000: HashMap<&'static str, f64>,
    pub(crate) errors: usize,
    pub(crate) lost: usize,
}

pub(crate) async fn measure(
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
    let mut per_run = vec![];
    let mut total = warm.round_trips;
    let gateway = pids.iter().find(|(n, _)| *n == "gateway").map(|(_, p)| *p);
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
        total += load.round_trips;
        eprintln!(
            "{name}: run {run}: {:.0} round trips/s, {} errors, {} lost",
            load.rate(),
            load.errors,
            load.lost
        );
        if let Some(pid) = gateway {
            let f = RunFigures {
                round_trips: total,
                round_trips_per_sec: load.rate(),
                cpu_ms_per_1000: *cpu["gateway"].last().unwrap_or(&0.0),
                peak_rss_mib: peak_rss_kib(pid) as f64 / 1024.0,
                rss_mib: rss_kib(pid) as f64 / 1024.0,
                fds: open_fds(pid),
            };
            eprintln!(
                "{name}: after {} round trips: peak RSS {:.1} MiB, RSS {:.1} MiB, {} fds, {:.1} ms CPU / 1000",
                f.round_trips, f.peak_rss_mib, f.rss_mib, f.fds, f.cpu_ms_per_1000
            );
            per_run.push(f);
        }
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
        per_run,
        rate: loaded.rate(),
        loaded,
        unloaded,
        cpu_ms_per_1000: cpu.into_iter().map(|(k, v)| (k, median(v))).collect(),
        errors,
        lost,
    }
}
