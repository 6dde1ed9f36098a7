//! The `sms-over-xmpp` command: argument parsing, logging, and the one place
//! that knows every provider crate ([`registry`]).

use clap::{Parser, Subcommand};
use sms_gateway_core::config::LogFormat;
use sms_gateway_core::{CancellationToken, Config, ProviderRegistry};
use sms_gateway_runtime::setup::{self, Report, Verdict};
use sms_gateway_runtime::Component;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// An SMS/MMS gateway for XMPP: chat with phone numbers from any XMPP client.
///
/// sms-over-xmpp runs as an XMPP component (XEP-0114) beside your XMPP
/// server (Prosody, ejabberd) and sends and receives SMS and MMS through
/// carrier APIs (Twilio, Telnyx, SignalWire; `sandbox` for trying it). A
/// chat to +15557654321@sms.example.com becomes a text from the user's
/// number; replies come back as chats; group texts are group chats.
#[derive(Debug, Parser)]
#[command(
    name = "sms-over-xmpp",
    version,
    about = "An SMS/MMS gateway for XMPP: chat with phone numbers from any XMPP client",
    long_about
)]
pub struct Cli {
    /// The config file (TOML).
    #[arg(
        long,
        short,
        global = true,
        env = "SMS_OVER_XMPP_CONFIG",
        default_value = "sms-over-xmpp.toml"
    )]
    pub config: PathBuf,
    /// How the log is written: `text` (for people) or `json` (one object a
    /// line, for log shippers); wins over `[log] format`.
    #[arg(long, global = true, value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway until SIGTERM or SIGINT; SIGHUP re-reads the config
    /// (carrier accounts, users, caller ID, limits).
    Run,
    /// Validate the config; exit 2 naming the bad key. With `--online`,
    /// also log in to the XMPP server as the component (and leave), check
    /// each carrier account's credentials, that it holds each number, and
    /// where each number's inbound texts go; print a table of what is
    /// right and what to fix, and exit 1 if anything needs fixing.
    Check {
        /// Also check the XMPP server and the carriers, by connecting.
        #[arg(long)]
        online: bool,
    },
    /// Point each configured number's inbound texts at this gateway
    /// (`{public_url}/{account}/message`) through the carrier's API:
    /// Twilio's and SignalWire's `SmsUrl`, Telnyx's messaging profile
    /// `webhook_url`. Changes only what is wrong; exit 1 if anything could
    /// not be set.
    ConfigureCarrier {
        /// Say what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the manual page (roff) on stdout: `sms-over-xmpp man | man -l -`.
    Man,
    /// Copy a SQLite store into an empty PostgreSQL database, ids kept, in
    /// one transaction; then set `[store] url` and remove `path`. Stop the
    /// gateway first.
    MigrateStore {
        /// The SQLite store file (`[store] path`).
        #[arg(long)]
        from: PathBuf,
        /// The PostgreSQL database: `postgres://user:password@host/db`.
        #[arg(long, env = "SMS_OVER_XMPP_MIGRATE_TO", hide_env_values = true)]
        to: String,
    },
}

/// Every provider type this build knows: `sandbox` always, the others by
/// cargo feature.
pub fn registry() -> ProviderRegistry {
    let mut r = ProviderRegistry::new();
    r.register("sandbox", sms_gateway_runtime::SandboxProvider::from_config);
    #[cfg(feature = "twilio")]
    r.register("twilio", sms_pstn_twilio::TwilioProvider::from_config);
    #[cfg(feature = "telnyx")]
    r.register("telnyx", sms_pstn_telnyx::TelnyxProvider::from_config);
    #[cfg(feature = "signalwire")]
    r.register(
        "signalwire",
        sms_pstn_signalwire::SignalWireProvider::from_config,
    );
    r
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => log.json().init(),
        _ => log.init(),
    }
}

/// Runs the command line; the exit code is 0 on success, 2 for a bad config,
/// 1 for any other failure.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::MigrateStore { from, to } = &cli.command {
        return migrate_store(from, to);
    }
    if let Command::Man = cli.command {
        let mut out = std::io::stdout().lock();
        return match manual(&mut out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: cannot write the manual: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(match cli.log_format.as_deref() {
        Some("json") => LogFormat::Json,
        Some(_) => LogFormat::Text,
        None => config.log.format,
    });
    let providers = match config.validate(&registry()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    for warning in config.warnings() {
        match cli.command {
            Command::Run => tracing::warn!("{warning}"),
            _ => eprintln!("warning: {warning}"),
        }
    }
    match cli.command {
        Command::Man | Command::MigrateStore { .. } => {
            unreachable!("answered before the config is read")
        }
        Command::Check { online: true } => {
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            let report = runtime.block_on(async {
                let mut report = Report::default();
                let subject = format!("xmpp {} at {}", config.xmpp.domain, config.xmpp.server);
                match sms_xmpp::probe(&config.xmpp).await {
                    Ok(0) => report.push(subject, Verdict::Ok, "logged in as the component"),
                    Ok(n) => report.push(
                        subject,
                        Verdict::Ok,
                        format!("logged in as the component; {n} message(s) arrived meanwhile and were not taken"),
                    ),
                    Err(e) => {
                        let hint = if e.to_string().contains("conflict") {
                            " (is the gateway already running? Prosody takes one connection per component)"
                        } else {
                            " (check [xmpp] server, domain and secret against the server's component config)"
                        };
                        report.push(subject, Verdict::Failed, format!("{e}{hint}"))
                    }
                }
                setup::check(&config, &providers, &mut report).await;
                report
            });
            finish(&report)
        }
        Command::ConfigureCarrier { dry_run } => {
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            let report = runtime.block_on(async {
                let mut report = Report::default();
                setup::configure(&config, &providers, dry_run, &mut report).await;
                report
            });
            finish(&report)
        }
        Command::Check { online: false } => {
            println!(
                "{}: OK ({} user(s); accounts: {})",
                cli.config.display(),
                config.users.len(),
                config
                    .providers
                    .iter()
                    .map(|(name, p)| format!("{name} ({})", p.kind))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            ExitCode::SUCCESS
        }
        Command::Run => {
            // One thread: a gateway's work is small and I/O-bound, and a
            // single-threaded runtime saves the cross-thread wake-ups (about
            // a fifth of the CPU per message) and the per-thread malloc
            // arenas (memory) of a multi-threaded one. Embedders may run the
            // Component on any runtime.
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            runtime.block_on(async move {
                let shutdown = CancellationToken::new();
                tokio::spawn(stop_on_signal(shutdown.clone()));
                let path = config.store.resolve(&cli.config);
                let store = match open_store(&config, &path) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                let xmpp = Arc::new(sms_xmpp::XmppProcess::new(&config, &providers));
                let media_dir = config.media.resolve_dir(&path);
                let component = Component::new(config, providers)
                    .with_store(store)
                    .with_media_dir(media_dir);
                tokio::spawn(reload_on_hangup(cli.config.clone(), component.reloader()));
                match component.run(xmpp, shutdown).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::FAILURE
                    }
                }
            })
        }
    }
}

/// The store `[store]` names: PostgreSQL at `url`, or the SQLite file at
/// `path` (resolved next to the config). The error names the key.
fn open_store(
    config: &Config,
    path: &std::path::Path,
) -> Result<Arc<dyn sms_gateway_core::store::Store>, String> {
    if let Some(url) = &config.store.url {
        #[cfg(feature = "postgres")]
        {
            let mut store = sms_store_postgres::PostgresStore::connect(url.expose())
                .map_err(|e| format!("cannot open the store (store.url): {e}"))?;
            match &config.cluster {
                Some(cluster) => {
                    let member = cluster.member();
                    store
                        .claim_name(&member)
                        .map_err(|e| format!("cannot join the cluster: {e}"))?;
                    tracing::info!(instance = %member.instance, lease = ?member.lease, "store opened: PostgreSQL, shared by several instances");
                    store = store.in_cluster(member);
                }
                None => tracing::info!("store opened: PostgreSQL"),
            }
            return Ok(Arc::new(store));
        }
        #[cfg(not(feature = "postgres"))]
        {
            let _ = url;
            return Err(
                "store.url names a PostgreSQL database, and this build has no PostgreSQL store (cargo feature `postgres`)"
                    .into(),
            );
        }
    }
    let store = sms_store_sqlite::SqliteStore::open(path)
        .map_err(|e| format!("cannot open the store (store.path): {e}"))?;
    tracing::info!(path = %path.display(), "store opened");
    Ok(Arc::new(store))
}

/// Whether a PostgreSQL URL (`postgres://user:password@host/db`) or
/// key-value string (`password=…`) carries a password.
fn url_has_password(url: &str) -> bool {
    if url.split_whitespace().any(|kv| kv.starts_with("password=")) || url.contains("password=") {
        return true;
    }
    url.split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// `migrate-store`: the SQLite store at `from` into the empty PostgreSQL
/// database at `to`.
fn migrate_store(from: &std::path::Path, to: &str) -> ExitCode {
    // A password on the command line is in `ps` for every local user and
    // in shell histories (#27): it must come from the environment.
    let from_env = std::env::var("SMS_OVER_XMPP_MIGRATE_TO").is_ok_and(|v| v == to);
    if !from_env && url_has_password(to) {
        eprintln!("error: --to: the database URL holds a password, which anyone on this machine could read in the process list; set SMS_OVER_XMPP_MIGRATE_TO to the URL instead and leave --to out");
        return ExitCode::from(2);
    }
    #[cfg(feature = "postgres")]
    {
        if !from.is_file() {
            eprintln!("error: --from {}: no such store file", from.display());
            return ExitCode::from(2);
        }
        let dump = match sms_store_sqlite::SqliteStore::open(from).and_then(|s| s.dump()) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", from.display());
                return ExitCode::FAILURE;
            }
        };
        println!("read {}: {}", from.display(), dump.summary());
        let copied = sms_store_postgres::PostgresStore::connect(to).and_then(|pg| {
            pg.import(dump.clone())?;
            pg.dump()
        });
        match copied {
            Ok(check) if check == dump => {
                println!("copied into PostgreSQL, and read back the same. Now set [store] url and remove [store] path.");
                ExitCode::SUCCESS
            }
            Ok(check) => {
                eprintln!(
                    "error: the copy reads back different: {} (the source: {})",
                    check.summary(),
                    dump.summary()
                );
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    }
    #[cfg(not(feature = "postgres"))]
    {
        let _ = (from, to);
        eprintln!("error: this build has no PostgreSQL store (cargo feature `postgres`)");
        ExitCode::from(2)
    }
}

/// The manual's sections after the options, in roff.
const MANUAL_MORE: &str = r#".SH COMMANDS
.TP
\fBrun\fR
Run the gateway until SIGTERM or SIGINT. It logs in to the XMPP server as
the component named in \fB[xmpp]\fR, serves the carriers' webhooks on
\fB[http] listen\fR, and keeps its state in \fB[store] path\fR.
.TP
\fBcheck\fR [\fB\-\-online\fR]
Validate the config and exit; a bad key is named with its value. With
\fB\-\-online\fR, also log in to the XMPP server (and leave), ask each
carrier account who it is, whether it holds each number and where the
number's inbound texts go, and print a table of what is right (ok) and what
to fix (FIX, FAILED).
.TP
\fBconfigure\-carrier\fR [\fB\-\-dry\-run\fR]
Point each number whose inbound texts go elsewhere at
\fI{public_url}/{account}/message\fR through the carrier's API (Twilio and
SignalWire: the number's SmsUrl; Telnyx: its messaging profile's
webhook_url), and print what changed. With \fB\-\-dry\-run\fR, change
nothing.
.TP
\fBmigrate\-store\fR \fB\-\-from\fR \fIstore.db\fR \fB\-\-to\fR \fIpostgres://...\fR
Copy a SQLite store into an empty PostgreSQL database, ids kept, in one
transaction, and read it back to compare. Stop the gateway first; then set
\fB[store] url\fR and remove \fB[store] path\fR.
.TP
\fBman\fR
Print this page.
.SH SIGNALS
.TP
\fBSIGHUP\fR
Re\-read the config: carrier accounts, users, caller ID and limits change
at once, with nothing in flight dropped; a config that does not validate is
refused and logged, and the running one stays. Other sections take effect at
the next start, and the log says which changed.
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Stop: webhooks are answered 503 so carriers retry, what is in flight is
finished or kept in the store, and the XMPP stream is closed.
.SH EXIT STATUS
0 on success; 2 when the config cannot be read or does not validate; 1 for
any other failure, and for \fBcheck \-\-online\fR or
\fBconfigure\-carrier\fR when something needs fixing.
.SH ENVIRONMENT
.TP
\fBSMS_OVER_XMPP_CONFIG\fR
The config file, when \fB\-\-config\fR is not given.
.TP
\fBRUST_LOG\fR
What is logged (default \fBinfo\fR; \fBdebug\fR shows more). Message
bodies and credentials are never logged.
.SH FILES
.TP
\fI/etc/sms\-over\-xmpp/sms\-over\-xmpp.toml\fR
The config the Debian package installs (the sandbox carrier).
.TP
\fI/var/lib/sms\-over\-xmpp/\fR
The store (SQLite) and media files, under the packaged systemd unit.
.TP
\fI/usr/share/doc/sms\-over\-xmpp/\fR
configuration.md (the configuration reference), users.md, security.md,
reliability.md, operations.md (metrics, alerts, reload, backups, upgrades)
and example configs.
.SH SEE ALSO
\fBprosody\fR(1), \fBejabberdctl\fR(8), \fBsystemctl\fR(1)
"#;

/// Writes the manual page (roff): clap's name, synopsis, description and
/// options, then the commands, signals, exit status, environment and files.
pub fn manual(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    use clap::CommandFactory;
    let man = clap_mangen::Man::new(Cli::command()).manual("sms-over-xmpp manual");
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    out.write_all(MANUAL_MORE.as_bytes())?;
    man.render_version_section(out)
}

/// The single-threaded runtime every command runs on, or `None` (said on
/// stderr) when it cannot start.
fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            None
        }
    }
}

/// Prints a set-up report; success when nothing needs fixing.
fn finish(report: &Report) -> ExitCode {
    print!("{}", report.table());
    if report.all_ok() {
        ExitCode::SUCCESS
    } else {
        println!("\nSomething needs fixing: see the lines marked FIX or FAILED.");
        ExitCode::FAILURE
    }
}

/// On each SIGHUP: reads `path` again, validates it and applies what can
/// change live; a config that fails is refused (logged with the key) and
/// the running one stays.
async fn reload_on_hangup(path: PathBuf, mut reloader: sms_gateway_runtime::reload::Reloader) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot listen for SIGHUP: the config cannot be reloaded");
        return;
    };
    while hup.recv().await.is_some() {
        let applied = Config::load(&path).and_then(|c| {
            let fresh = c.validate(&registry())?;
            reloader.apply(c, &fresh)
        });
        match applied {
            Ok(r) => {
                tracing::info!(
                    path = %path.display(),
                    users = r.users,
                    removed = ?r.removed,
                    accounts_changed = ?r.accounts_changed,
                    accounts_removed = ?r.accounts_removed,
                    "SIGHUP: config reloaded (accounts, users, caller ID, limits)"
                );
                for section in r.need_restart {
                    tracing::warn!(
                        section,
                        "SIGHUP: [{section}] changed; it takes effect at the next restart"
                    );
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: config reload refused; the running config stays")
            }
        }
    }
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for signals");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}
