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

mod client;
mod procfs;
mod servers;

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

use client::*;
use procfs::*;
use servers::*;

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
    /// Round trips per measured run (enough that memory which grows with
    /// traffic shows).
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// c2s sessions.
    #[arg(long, default_value_t = 2)]
    clients: usize,
    /// Messages in flight per session.
    #[arg(long, default_value_t = 32)]
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
    /// Users in the config besides the benchmark's own (which text): the
    /// per-message cost with a big directory.
    #[arg(long, default_value_t = 0)]
    extra_users: usize,
    /// A soak (not for CI): this many round trips through one gateway
    /// process, in runs of 50,000, without the ceiling; prints peak RSS,
    /// RSS, open descriptors and CPU per 1,000 after each run.
    #[arg(long)]
    soak: Option<usize>,
    /// The gateway's store: `sqlite` (a file in the run's directory) or
    /// `postgres` (a database made afresh for each gateway on
    /// `$DATABASE_URL`'s server, default 127.0.0.1:5432, and dropped
    /// after).
    #[arg(long, default_value = "sqlite", value_parser = ["sqlite", "postgres"])]
    store: String,
    /// Compare with the build before (#30): this gateway binary ("old")
    /// and `--gateway` ("new") are measured in turn in one invocation,
    /// old, new, new, old, old, new, each a gateway process of `--runs`
    /// runs, and each figure is printed as new/old with its spread. The
    /// machines differ by 2x from day to day: only figures from one
    /// invocation compare.
    #[arg(long)]
    baseline: Option<PathBuf>,
}

/// A PostgreSQL database made for one gateway run, dropped with it.
struct Database {
    admin: String,
    name: String,
}

impl Database {
    /// Runs `sql` on the server as its admin, on a thread of its own (the
    /// blocking client must not run inside the benchmark's runtime).
    fn admin(admin: &str, sql: String) -> Result<(), String> {
        let admin = admin.to_owned();
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&admin, postgres::NoTls)
                .map_err(|e| format!("no PostgreSQL at {admin}: {e} (set DATABASE_URL)"))?;
            c.batch_execute(&sql).map_err(|e| format!("{sql}: {e}"))
        })
        .join()
        .expect("the admin thread")
    }

    /// A fresh database; its URL.
    fn new() -> (Database, String) {
        let admin = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("sox_bench_{}", std::process::id());
        Self::admin(
            &admin,
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )
        .and_then(|()| Self::admin(&admin, format!("CREATE DATABASE {name}")))
        .unwrap_or_else(|e| panic!("{e}"));
        let server = admin
            .split('?')
            .next()
            .and_then(|b| b.rsplit_once('/'))
            .map_or(admin.as_str(), |(s, _)| s)
            .to_owned();
        let url = format!("{server}/{name}");
        (Database { admin, name }, url)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Self::admin(
            &self.admin,
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
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
    if let Some(total) = args.soak {
        (args.messages, args.runs) = (50_000, total.div_ceil(50_000).max(1));
    }
    let prosody = start_prosody(args.clients);
    wait_port(prosody.c2s).await;
    wait_port(prosody.component).await;
    let me = std::env::current_exe().unwrap();
    if args.soak.is_some() {
        return soak(&args, &prosody, &me).await;
    }

    // The ceiling.
    let echo = Killed(
        tied(&mut Command::new(&me))
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

    if let Some(baseline) = args.baseline.clone() {
        return compare(&args, &prosody, &me, ceiling.rate, &baseline).await;
    }

    // The gateway, with the carrier mock.
    // `_database` first: bindings drop in reverse, so it goes after the
    // gateway has stopped.
    let GatewayRun {
        _database,
        gateway,
        mock,
        _dir,
    } = start_gateway(&args, &prosody, &me).await;
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

/// A figure [`compare`] prints: its name, and how to read it from a slot.
type Figure = (&'static str, fn(&Slot) -> f64);

/// One gateway process's figures, for [`compare`].
#[derive(Clone, Copy)]
struct Slot {
    cpu_ms_per_1000: f64,
    peak_rss_mib: f64,
    share: f64,
    lost: usize,
}

/// `--baseline`: the old and the new gateway, interleaved (old, new, new,
/// old, old, new), each a process of `args.runs` measured runs; every
/// figure as new/old with the spread of each side.
async fn compare(
    args: &RunArgs,
    prosody: &Prosody,
    me: &std::path::Path,
    ceiling: f64,
    baseline: &std::path::Path,
) -> bool {
    let new = gateway_binary(&args.gateway);
    let (mut old_slots, mut new_slots) = (vec![], vec![]);
    for is_new in [false, true, true, false, false, true] {
        let mut a = args.clone();
        a.gateway = Some(if is_new {
            new.clone()
        } else {
            baseline.to_path_buf()
        });
        let GatewayRun {
            _database,
            gateway,
            mock,
            _dir,
        } = start_gateway(&a, prosody, me).await;
        let pid = gateway.0.id();
        let m = measure(
            if is_new { "new" } else { "old" },
            "sms.localhost",
            &a,
            prosody,
            &[
                ("gateway", pid),
                ("prosody", prosody.child.0.id()),
                ("mock", mock.0.id()),
                ("client", std::process::id()),
            ],
        )
        .await;
        let slot = Slot {
            cpu_ms_per_1000: m.cpu_ms_per_1000.get("gateway").copied().unwrap_or(0.0),
            peak_rss_mib: peak_rss_kib(pid) as f64 / 1024.0,
            share: m.rate / ceiling,
            lost: m.lost + m.errors,
        };
        eprintln!(
            "{}: {:.1} ms CPU / 1000, peak RSS {:.1} MiB, {:.2} of the ceiling, lost {}",
            if is_new { "new" } else { "old" },
            slot.cpu_ms_per_1000,
            slot.peak_rss_mib,
            slot.share,
            slot.lost
        );
        drop(gateway);
        drop(mock);
        if is_new {
            new_slots.push(slot)
        } else {
            old_slots.push(slot)
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let figures: [Figure; 3] = [
        ("gateway CPU ms per 1,000 round trips", |s| {
            s.cpu_ms_per_1000
        }),
        ("peak RSS MiB", |s| s.peak_rss_mib),
        ("rate as a share of the ceiling", |s| s.share),
    ];
    let mut report = serde_json::Map::new();
    if !args.json {
        println!(
            "{:<38} {:>22} {:>22} {:>8}",
            "", "old median (min-max)", "new median (min-max)", "new/old"
        );
    }
    for (name, get) in figures {
        let mut old: Vec<f64> = old_slots.iter().map(get).collect();
        let mut new: Vec<f64> = new_slots.iter().map(get).collect();
        let (om, nm) = (median(&mut old), median(&mut new));
        let spread = |v: &[f64]| (v[0], v[v.len() - 1]);
        let ((olo, ohi), (nlo, nhi)) = (spread(&old), spread(&new));
        if args.json {
            report.insert(
                name.to_owned(),
                serde_json::json!({"old": old, "new": new, "ratio": nm / om}),
            );
        } else {
            println!(
                "{name:<38} {om:>8.2} ({olo:.2}-{ohi:.2}) {nm:>8.2} ({nlo:.2}-{nhi:.2}) {:>8.2}",
                nm / om
            );
        }
    }
    let lost: usize = old_slots.iter().chain(&new_slots).map(|s| s.lost).sum();
    if args.json {
        report.insert("lost".into(), lost.into());
        println!("{}", serde_json::to_string_pretty(&report).unwrap());
    } else {
        println!("lost or failed: {lost}");
    }
    lost == 0
}

/// The gateway under test, its carrier mock, and its directory.
struct GatewayRun {
    gateway: Killed,
    mock: Killed,
    _dir: tempfile::TempDir,
    /// Dropped after the gateway (fields drop in declaration order).
    _database: Option<Database>,
}

/// Starts the gateway binary with a Twilio account pointed at the carrier
/// mock (this binary's `mock`), one user per session, and waits for both.
async fn start_gateway(args: &RunArgs, prosody: &Prosody, me: &std::path::Path) -> GatewayRun {
    let dir = tempfile::tempdir().unwrap();
    let (http_port, mock_port) = (free_port(), free_port());
    let users: String = (0..args.clients)
        .map(|i| format!("[[users]]\njid = \"bench{i}@localhost\"\nnumber = \"+1555800{i:04}\"\nprovider = \"main\"\n"))
        .chain((0..args.extra_users).map(|i| {
            format!("[[users]]\njid = \"idle{i}@localhost\"\nnumber = \"+1555{:07}\"\nprovider = \"main\"\n", 9_000_000 + i)
        }))
        .collect();
    let (database, store) = match args.store.as_str() {
        "postgres" => {
            let (db, url) = Database::new();
            (Some(db), format!("url = \"{url}\""))
        }
        _ => (None, "path = \"bench.db\"".to_owned()),
    };
    let cfg = format!(
        "[xmpp]\nserver = \"127.0.0.1:{}\"\ndomain = \"sms.localhost\"\nsecret = \"{SECRET}\"\n\
         [http]\nlisten = \"127.0.0.1:{http_port}\"\npublic_url = \"{PUBLIC}\"\n\
         [store]\n{store}\n\
         [limits]\ntexts_per_minute = 100000000\ntexts_burst = 100000000\n\
         [providers.main]\ntype = \"twilio\"\naccount_sid = \"{SID}\"\nauth_token = \"{TOKEN}\"\napi_base = \"http://127.0.0.1:{mock_port}\"\n{users}",
        prosody.component
    );
    let cfg_path = dir.path().join("gateway.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let mock = Killed(
        tied(&mut Command::new(me))
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
        tied(&mut Command::new(&bin))
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
    GatewayRun {
        gateway,
        mock,
        _dir: dir,
        _database: database,
    }
}

/// `--soak`: one gateway process through `args.runs` runs of 50,000 round
/// trips, its figures after each; the JSON series on stdout.
async fn soak(args: &RunArgs, prosody: &Prosody, me: &std::path::Path) -> bool {
    let run = start_gateway(args, prosody, me).await;
    let pid = run.gateway.0.id();
    let measured = measure(
        "gateway",
        "sms.localhost",
        args,
        prosody,
        &[
            ("gateway", pid),
            ("prosody", prosody.child.0.id()),
            ("mock", run.mock.0.id()),
            ("client", std::process::id()),
        ],
    )
    .await;
    let report = serde_json::json!({
        "soak_round_trips": measured.per_run.last().map(|r| r.round_trips),
        "runs": measured.per_run.iter().map(|r| r.json()).collect::<Vec<_>>(),
        "errors": measured.errors,
        "lost": measured.lost,
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    measured.lost == 0 && measured.errors == 0
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
