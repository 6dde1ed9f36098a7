//! Shared pieces of the end-to-end suites: a real Prosody on loopback with a
//! throwaway config, the gateway run in-process exactly as `sms-over-xmpp
//! run` runs it, real XMPP client sessions, and signed carrier webhooks.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio_xmpp::minidom::Element;

pub use sms_gateway_core::CancellationToken;

/// The component domain every suite uses.
pub const DOMAIN: &str = "sms.localhost";
/// The component secret every suite uses.
pub const SECRET: &str = "component-secret";
/// The webhook base URL the gateway is configured with (carriers sign it).
pub const PUBLIC: &str = "https://sms.example.com/hooks";
/// The contact every suite writes to.
pub const CONTACT: &str = "+15557654321@sms.localhost";
/// The Twilio account SID of the suites' Twilio accounts.
pub const TWILIO_SID: &str = "AC0123456789abcdef0123456789abcdef";
/// The `Authorization` header for the sandbox account of [`sandbox_alice`].
pub const SANDBOX_AUTH: &str = "Bearer quickstart-sandbox-token";

/// The path of the Twilio account's Messages resource.
pub fn twilio_messages_path() -> String {
    format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages.json")
}

/// Config TOML: Twilio account `main` at `api_base` (with `more` of its
/// keys) and alice@localhost on it as +15550001111.
pub fn twilio_alice(api_base: &str, auth_token: &str, more: &str) -> String {
    format!(
        r#"
[providers.main]
type = "twilio"
account_sid = "{TWILIO_SID}"
auth_token = "{auth_token}"
api_base = "{api_base}"
{more}

[[users]]
jid = "alice@localhost"
number = "+15550001111"
provider = "main"
"#
    )
}

/// Config TOML: sandbox account `sandbox` (token of [`SANDBOX_AUTH`]) and
/// alice@localhost on it as +15550001111.
pub const SANDBOX_ALICE: &str = r#"
[providers.sandbox]
type = "sandbox"
token = "quickstart-sandbox-token"

[[users]]
jid = "alice@localhost"
number = "+15550001111"
provider = "sandbox"
"#;

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `port` accepts connections.
pub async fn wait_for_port(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nothing listens on port {port} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Prosody started for one test, killed when dropped.
pub struct Prosody {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Client-to-server port.
    pub c2s_port: u16,
    /// Component port.
    pub component_port: u16,
    /// The HTTP port of `upload.localhost` ([`Prosody::start_with_upload`]).
    pub http_port: Option<u16>,
}

/// The XEP-0363 upload service of [`Prosody::start_with_upload`].
pub const UPLOAD_SERVICE: &str = "upload.localhost";

impl Prosody {
    fn config_path(&self) -> PathBuf {
        self.dir.path().join("prosody.cfg.lua")
    }

    /// Starts Prosody with users `alice`, `bob`, `carol` and `mallory` (password
    /// `{name}pw`) on `localhost`, and the component `sms.localhost`.
    pub async fn start() -> Prosody {
        Self::start_configured(false).await
    }

    /// [`Prosody::start`] with `mod_http_file_share` as `upload.localhost`
    /// (XEP-0363), its HTTP server on loopback, and the component allowed to
    /// upload: the line the README tells operators to add.
    pub async fn start_with_upload() -> Prosody {
        Self::start_configured(true).await
    }

    async fn start_configured(upload: bool) -> Prosody {
        assert!(
            Command::new("prosody").arg("--help").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok(),
            "prosody is not installed: run `apt-get install -y prosody` (the README's test command does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let mut p = Prosody {
            dir,
            child: None,
            c2s_port: free_port(),
            component_port: free_port(),
            http_port: upload.then(free_port),
        };
        let (http_ports, upload_component) = match p.http_port {
            Some(port) => (
                format!("http_ports = {{ {port} }}\nhttp_interfaces = {{ \"127.0.0.1\" }}\nhttp_external_url = \"http://127.0.0.1:{port}/\"\nhttp_default_host = \"{UPLOAD_SERVICE}\"\n"),
                format!("Component \"{UPLOAD_SERVICE}\" \"http_file_share\"\n  http_file_share_access = {{ \"{DOMAIN}\" }}\n"),
            ),
            None => ("http_ports = { }\n".to_owned(), String::new()),
        };
        let d = p.dir.path().display().to_string();
        std::fs::create_dir_all(p.dir.path().join("data")).unwrap();
        let cfg = format!(
            r#"run_as_root = true
daemonize = false
pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s} }}
component_ports = {{ {comp} }}
component_interfaces = {{ "127.0.0.1" }}
s2s_ports = {{ }}
{http_ports}https_ports = {{ }}
modules_enabled = {{ "roster"; "saslauth"; "disco"; "ping"; "presence"; "message"; "iq"; "posix"; "offline" }}
modules_disabled = {{ "s2s" }}
authentication = "internal_plain"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
log = {{ info = "{d}/prosody.log" }}
VirtualHost "localhost"
Component "{DOMAIN}"
  component_secret = "{SECRET}"
{upload_component}"#,
            c2s = p.c2s_port,
            comp = p.component_port,
        );
        std::fs::write(p.config_path(), cfg).unwrap();
        for user in ["alice", "bob", "carol", "mallory"] {
            let out = Command::new("prosodyctl")
                .arg("--config")
                .arg(p.config_path())
                .args(["register", user, "localhost", &format!("{user}pw")])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "prosodyctl register {user}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        p.launch().await;
        p
    }

    async fn launch(&mut self) {
        let child = Command::new("prosody")
            .arg("--config")
            .arg(self.config_path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prosody");
        self.child = Some(child);
        wait_for_port(self.c2s_port, Duration::from_secs(20)).await;
        wait_for_port(self.component_port, Duration::from_secs(20)).await;
        if let Some(http) = self.http_port {
            wait_for_port(http, Duration::from_secs(20)).await;
        }
    }

    /// Stops Prosody (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes Prosody (SIGSTOP): it reads nothing more, and what is sent
    /// to it waits in its sockets' kernel buffers, as with a hung server.
    pub fn freeze(&self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-STOP", &child.id().to_string()])
                .status();
        }
    }

    /// Kills Prosody with SIGKILL (no chance to flush or close anything).
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts Prosody again (after [`Prosody::kill_9`] or
    /// [`Prosody::stop`]) on the same ports with the same data.
    pub async fn start_again(&mut self) {
        self.launch().await;
    }

    /// Starts Prosody again on the same ports with the same data.
    pub async fn restart(&mut self) {
        self.stop();
        self.launch().await;
    }

    /// Prosody's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prosody.log")).unwrap_or_default()
    }

    /// How many times a component has logged in.
    pub fn component_logins(&self) -> usize {
        self.log()
            .matches("External component successfully authenticated")
            .count()
    }

    /// Waits until the component has logged in `n` times in all.
    pub async fn wait_component_logins(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.component_logins() < n {
            assert!(
                Instant::now() < deadline,
                "component logged in {} times, expected {n}; log:\n{}",
                self.component_logins(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An ejabberd started for one test, on loopback with a throwaway config
/// (the recipe in `shared/TEST-SERVERS.md`), stopped when dropped.
pub struct Ejabberd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    node: String,
    /// Client-to-server port.
    pub c2s_port: u16,
    /// Component port.
    pub component_port: u16,
    /// The HTTP port of `upload.localhost` ([`Ejabberd::start_with_upload`]).
    pub http_port: Option<u16>,
}

impl Ejabberd {
    fn ctl(&self) -> Command {
        let d = self.dir.path();
        let mut c = Command::new("ejabberdctl");
        c.env("CONFIG_DIR", d.join("cfg"))
            .env("LOGS_DIR", d.join("logs"))
            .env("SPOOL_DIR", d.join("spool"))
            .env("EJABBERD_CONFIG_PATH", d.join("cfg/ejabberd.yml"))
            .env("ERLANG_NODE", &self.node)
            .stdin(Stdio::null());
        c
    }

    /// Starts ejabberd with users `alice`, `bob`, `carol` and `mallory`
    /// (password `{name}pw`) on `localhost`, and the component `sms.localhost`.
    pub async fn start() -> Ejabberd {
        Self::start_configured(false).await
    }

    /// [`Ejabberd::start`] with `mod_http_upload` as `upload.localhost`
    /// (XEP-0363) on an HTTP listener on loopback, and the access rule the
    /// README gives operators, letting the component upload.
    pub async fn start_with_upload() -> Ejabberd {
        Self::start_configured(true).await
    }

    async fn start_configured(upload: bool) -> Ejabberd {
        assert!(
            Command::new("ejabberdctl").arg("help").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok(),
            "ejabberd is not installed: run `apt-get install -y ejabberd` (the README's test command does)"
        );
        let dir = tempfile::Builder::new()
            .prefix("ejabberd-test")
            .tempdir()
            .unwrap();
        let c2s_port = free_port();
        let component_port = free_port();
        let http_port = upload.then(free_port);
        let node = format!("ejtest{c2s_port}@localhost");
        let d = dir.path();
        for sub in ["cfg", "logs", "spool"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::copy("/etc/ejabberd/inetrc", d.join("cfg/inetrc")).unwrap();
        let base = std::fs::read_to_string("/etc/ejabberd/ejabberdctl.cfg").unwrap();
        let mut ctl_cfg: String = base
            .lines()
            .filter(|l| {
                !(l.starts_with("EJABBERD_CONFIG_PATH=")
                    || l.starts_with("EJABBERD_PID_PATH=")
                    || l.starts_with("CONTRIB_MODULES_CONF_DIR="))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        ctl_cfg.push_str(&format!(
            "ERLANG_NODE={node}\nINET_DIST_INTERFACE=127.0.0.1\nERL_EPMD_ADDRESS=127.0.0.1\nEJABBERD_PID_PATH={}/ejabberd.pid\n",
            d.display()
        ));
        std::fs::write(d.join("cfg/ejabberdctl.cfg"), ctl_cfg).unwrap();
        let (http_listener, upload_rules, upload_module) = match http_port {
            Some(port) => (
                format!("  - {{port: {port}, ip: \"127.0.0.1\", module: ejabberd_http, request_handlers: {{/upload: mod_http_upload}}}}\n"),
                format!("acl: {{local: {{user_regexp: \"\"}}, sms_gateway: {{server: \"{DOMAIN}\"}}}}\naccess_rules: {{local: {{allow: local}}, c2s: {{allow: all}}, upload: [{{allow: local}}, {{allow: sms_gateway}}]}}\n"),
                format!(", mod_http_upload: {{put_url: \"http://127.0.0.1:{port}/upload\", docroot: \"{}/upload\", access: upload}}", d.display()),
            ),
            None => (
                String::new(),
                "acl: {local: {user_regexp: \"\"}}\naccess_rules: {local: {allow: local}, c2s: {allow: all}}\n".to_owned(),
                String::new(),
            ),
        };
        let yml = format!(
            r#"hosts: [localhost]
loglevel: info
listen:
  - {{port: {c2s_port}, ip: "127.0.0.1", module: ejabberd_c2s, starttls_required: false}}
  - port: {component_port}
    ip: "127.0.0.1"
    module: ejabberd_service
    hosts:
      "{DOMAIN}": {{password: "{SECRET}"}}
{http_listener}auth_method: internal
auth_password_format: plain
{upload_rules}shaper_rules: {{c2s_shaper: none}}
modules: {{mod_disco: {{}}, mod_ping: {{}}, mod_roster: {{}}, mod_offline: {{}}, mod_stream_mgmt: {{}}, mod_vcard: {{}}{upload_module}}}
"#
        );
        std::fs::write(d.join("cfg/ejabberd.yml"), yml).unwrap();
        let ok = Command::new("chown")
            .args(["-R", "ejabberd:ejabberd"])
            .arg(d)
            .status()
            .unwrap();
        assert!(ok.success(), "chown the ejabberd test directory");
        let mut e = Ejabberd {
            dir,
            child: None,
            node,
            c2s_port,
            component_port,
            http_port,
        };
        let child = e
            .ctl()
            .arg("foreground")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ejabberd");
        e.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !e.log().contains("is started in the node") {
            assert!(
                Instant::now() < deadline,
                "ejabberd did not start; log:\n{}",
                e.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        wait_for_port(c2s_port, Duration::from_secs(20)).await;
        wait_for_port(component_port, Duration::from_secs(20)).await;
        if let Some(http) = http_port {
            wait_for_port(http, Duration::from_secs(20)).await;
        }
        for user in ["alice", "bob", "carol", "mallory"] {
            let out = e
                .ctl()
                .args(["register", user, "localhost", &format!("{user}pw")])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "ejabberdctl register {user}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        e
    }

    /// ejabberd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("logs/ejabberd.log")).unwrap_or_default()
    }
}

impl Drop for Ejabberd {
    fn drop(&mut self) {
        let _ = self
            .ctl()
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // ejabberd leaves epmd behind as a daemon; end it when no node needs it.
        let _ = Command::new("epmd")
            .arg("-kill")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The XMPP server a suite runs against.
pub trait XmppServer {
    /// Client-to-server port.
    fn c2s_port(&self) -> u16;
    /// Component port.
    fn component_port(&self) -> u16;
    /// Its name, for messages.
    fn name(&self) -> &'static str;
    /// Its log so far, for failure messages.
    fn log(&self) -> String;
}

impl XmppServer for Prosody {
    fn c2s_port(&self) -> u16 {
        self.c2s_port
    }
    fn component_port(&self) -> u16 {
        self.component_port
    }
    fn name(&self) -> &'static str {
        "Prosody"
    }
    fn log(&self) -> String {
        Prosody::log(self)
    }
}

impl XmppServer for Ejabberd {
    fn c2s_port(&self) -> u16 {
        self.c2s_port
    }
    fn component_port(&self) -> u16 {
        self.component_port
    }
    fn name(&self) -> &'static str {
        "ejabberd"
    }
    fn log(&self) -> String {
        Ejabberd::log(self)
    }
}

/// The gateway, run in-process the way `sms-over-xmpp run` runs it: the
/// config parsed and validated with every provider this build has.
pub struct Gateway {
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Where webhooks go: `http://127.0.0.1:{port}`.
    pub http_base: String,
}

impl Gateway {
    /// Starts a gateway for `toml` and waits until its webhook port answers.
    pub async fn start(toml: &str) -> Gateway {
        // The gateway's logs go with the test's output (RUST_LOG to see more).
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
        let config = sms_gateway_core::Config::from_toml(toml).expect("config parses");
        let providers = config
            .validate(&sms_over_xmpp_bin::registry())
            .expect("config validates");
        let http_base = format!("http://{}", config.http.listen);
        let port = config.http.listen.port();
        let shutdown = CancellationToken::new();
        let xmpp = Arc::new(sms_xmpp::XmppProcess::new(&config, providers.users.clone()));
        // With `[store] path`, the SQLite store as the binary opens it;
        // without, the in-memory one.
        let store = config.store.path.as_ref().map(|p| {
            Arc::new(sms_store_sqlite::SqliteStore::open(p).expect("store opens"))
                as Arc<dyn sms_gateway_core::store::Store>
        });
        // Media files next to the store, as the binary keeps them; without
        // a store, in a directory of this gateway's own.
        let media_dir = match &config.store.path {
            Some(p) => config.media.resolve_dir(p),
            None => std::env::temp_dir().join(format!("sox-media-{}-{port}", std::process::id())),
        };
        let mut component =
            sms_gateway_core::Component::new(config, providers).with_media_dir(media_dir);
        if let Some(store) = store {
            component = component.with_store(store);
        }
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            component.run(xmpp, token).await.expect("component runs");
        });
        wait_for_port(port, Duration::from_secs(10)).await;
        Gateway {
            shutdown,
            task: Some(task),
            http_base,
        }
    }

    /// Stops the gateway and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("gateway stops in time")
                .unwrap();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A config for the gateway against `prosody`, with `providers` and `users`
/// TOML appended.
pub fn gateway_config(server: &dyn XmppServer, http_port: u16, extra: &str) -> String {
    format!(
        r#"
[xmpp]
server = "127.0.0.1:{comp}"
domain = "{DOMAIN}"
secret = "{SECRET}"

[http]
listen = "127.0.0.1:{http_port}"
public_url = "{PUBLIC}"

[phone]
default_prefix = "+1"

# The suites send hundreds of chats a minute: limits out of their way (the
# hostile suite puts them back, replacing these lines).
[limits]
texts_per_minute = 1000000
texts_burst = 1000000
{extra}
"#,
        comp = server.component_port(),
    )
}

/// A logged-in XMPP client session of a Prosody user, available: slixmpp
/// (`xmpp_user.py`), a client that is not ours, driven over pipes.
pub struct User {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    /// Stanzas read but not yet asked for: (kind, stanza).
    pending: std::collections::VecDeque<(String, Element)>,
    /// The full JID the server bound.
    pub jid: String,
}

/// A message stanza a [`User`] received.
#[derive(Debug, Clone)]
pub struct Msg(pub Element);

impl Msg {
    /// `from`.
    pub fn from(&self) -> Option<&str> {
        self.0.attr("from")
    }
    /// `id`.
    pub fn id(&self) -> Option<&str> {
        self.0.attr("id")
    }
    /// `type` (`normal` when absent).
    pub fn type_(&self) -> &str {
        self.0.attr("type").unwrap_or("normal")
    }
    /// The body, whatever its language.
    pub fn body(&self) -> Option<String> {
        self.0
            .children()
            .find(|c| c.name() == "body")
            .map(|b| b.text())
    }
    /// The first child element named `name` in namespace `ns`.
    pub fn child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.0.children().find(|c| c.is(name, ns))
    }
    /// For an error message: its condition element name and text.
    pub fn error(&self) -> Option<(String, String)> {
        if self.type_() != "error" {
            return None;
        }
        let err = self.0.children().find(|p| p.name() == "error")?;
        let condition = err
            .children()
            .find(|c| c.ns() == STANZAS_NS && c.name() != "text")
            .map(|c| c.name().to_owned())
            .unwrap_or_default();
        let text = err
            .children()
            .find(|c| c.name() == "text")
            .map(|t| t.text())
            .unwrap_or_default();
        Some((condition, text))
    }
}

const STANZAS_NS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// Escapes text for XML content and attributes.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

impl User {
    /// Logs `name@localhost` in (password `{name}pw`) and sends presence.
    pub async fn login(server: &(impl XmppServer + ?Sized), name: &str) -> User {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/xmpp_user.py");
        let mut child = tokio::process::Command::new("/usr/bin/python3")
            .arg(script)
            .arg(format!("{name}@localhost"))
            .arg(format!("{name}pw"))
            .arg(server.c2s_port().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start xmpp_user.py (needs python3-slixmpp)");
        let stdin = child.stdin.take().unwrap();
        let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut user = User {
            child,
            stdin,
            lines,
            pending: Default::default(),
            jid: String::new(),
        };
        let online = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                let ev = user
                    .event()
                    .await
                    .expect("xmpp_user.py exited before login");
                match ev["event"].as_str() {
                    Some("online") => return ev["jid"].as_str().unwrap().to_owned(),
                    Some("failed_auth") => panic!("{name}: authentication failed"),
                    _ => {}
                }
            }
        })
        .await;
        user.jid = online
            .unwrap_or_else(|_| panic!("{name} did not log in to {} within 15 s", server.name()));
        user
    }

    async fn event(&mut self) -> Option<serde_json::Value> {
        let line = self.lines.next_line().await.ok()??;
        Some(serde_json::from_str(&line).expect("xmpp_user.py prints JSON"))
    }

    /// Sends raw XML on the user's stream.
    pub async fn send_raw(&mut self, xml: &str) {
        let cmd = serde_json::json!({"op": "raw", "xml": xml}).to_string() + "\n";
        self.stdin.write_all(cmd.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Sends a chat with `body` (tagged `xml:lang='en'`, as clients do) to
    /// `to`, with stanza id `id`, asking for a receipt.
    pub async fn send_chat(&mut self, to: &str, id: &str, body: &str) {
        self.send_raw(&format!(
            "<message type='chat' to='{}' id='{}'><body xml:lang='en'>{}</body><request xmlns='urn:xmpp:receipts'/></message>",
            esc(to),
            esc(id),
            esc(body)
        ))
        .await;
    }

    /// The next stanza of `kind` (`message`, `iq`, `presence`) within
    /// `within`; stanzas of other kinds wait for their turn.
    pub async fn next_of(&mut self, kind: &str, within: Duration) -> Option<Element> {
        if let Some(i) = self.pending.iter().position(|(k, _)| k == kind) {
            return self.pending.remove(i).map(|(_, e)| e);
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.event())
                .await
                .ok()??;
            let Some(k) = ev["event"]
                .as_str()
                .filter(|k| matches!(*k, "message" | "iq" | "presence"))
            else {
                continue;
            };
            // slixmpp leaves out the stream's default namespace.
            let xml = format!(
                "<wrap xmlns='jabber:client'>{}</wrap>",
                ev["xml"].as_str().unwrap()
            );
            let wrap: Element = xml.parse().expect("well-formed stanza");
            let el = wrap.children().next().expect("a stanza").clone();
            if k == kind {
                return Some(el);
            }
            self.pending.push_back((k.to_owned(), el));
        }
    }

    /// The next message within `within`.
    pub async fn next_message(&mut self, within: Duration) -> Option<Msg> {
        self.next_of("message", within).await.map(Msg)
    }

    /// Sends an IQ and returns its answer (result or error), which must come within 10 s.
    pub async fn iq(&mut self, type_: &str, to: &str, id: &str, payload: &str) -> Element {
        self.send_raw(&format!(
            "<iq type='{type_}' to='{}' id='{}'>{payload}</iq>",
            esc(to),
            esc(id)
        ))
        .await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let iq = self
                .next_of("iq", left)
                .await
                .unwrap_or_else(|| panic!("no answer to IQ {id}"));
            if iq.attr("id") == Some(id) {
                return iq;
            }
        }
    }

    /// The next presence within `within`.
    pub async fn next_presence(&mut self, within: Duration) -> Option<Element> {
        self.next_of("presence", within).await
    }

    /// The next message, which must come within 10 s.
    pub async fn expect_message(&mut self) -> Msg {
        self.next_message(Duration::from_secs(10))
            .await
            .expect("a message within 10 s")
    }

    /// Logs out.
    pub async fn quit(mut self) {
        let _ = self.stdin.write_all(b"{\"op\": \"quit\"}\n").await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

/// Twilio's Media resource as Twilio serves it, on the `api` mock: `GET
/// /2010-04-01/Accounts/{sid}/Messages/{mm}/Media/{me}` answers 401 (Twilio's
/// error 20003) without HTTP basic auth `{sid}:{token}`, and with it a 307
/// to a short-lived CDN URL on `cdn`. The CDN serves `bytes` as `content_type`
/// and, as presigned storage URLs do, answers 400 to a request that carries
/// an `Authorization` header of its own. Returns the `MediaUrl{N}` value.
pub async fn mount_twilio_media(
    api: &wiremock::MockServer,
    cdn: &wiremock::MockServer,
    token: &str,
    me: &str,
    bytes: &[u8],
    content_type: &str,
) -> String {
    use base64::Engine;
    use wiremock::matchers::{header, header_exists, method, path};
    use wiremock::{Mock, ResponseTemplate};
    let media_path = format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages/MM{me}/Media/{me}");
    let cdn_path = format!("/v3/media/{me}");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{TWILIO_SID}:{token}"));
    Mock::given(method("GET"))
        .and(path(media_path.clone()))
        .and(header("authorization", format!("Basic {basic}").as_str()))
        .respond_with(
            ResponseTemplate::new(307).insert_header(
                "location",
                format!(
                    "{}{cdn_path}?Expires=1798761600&Signature=c2lnbmVk",
                    cdn.uri()
                )
                .as_str(),
            ),
        )
        .with_priority(1)
        .mount(api)
        .await;
    Mock::given(method("GET"))
        .and(path(media_path.clone()))
        .respond_with(ResponseTemplate::new(401).set_body_json(serde_json::json!({
            "code": 20003, "message": "Authenticate",
            "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401})))
        .with_priority(2)
        .mount(api)
        .await;
    Mock::given(method("GET"))
        .and(path(cdn_path.clone()))
        .and(header_exists("authorization"))
        .respond_with(ResponseTemplate::new(400).set_body_string(
            "<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed</Message></Error>",
        ))
        .with_priority(1)
        .mount(cdn)
        .await;
    Mock::given(method("GET"))
        .and(path(cdn_path))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", content_type)
                .set_body_bytes(bytes.to_vec()),
        )
        .with_priority(2)
        .mount(cdn)
        .await;
    format!("{}{media_path}", api.uri())
}

/// A Telnyx inbound media link on `cdn`: it works once, then answers 404,
/// as Telnyx's short-lived links do once used or expired. Returns the URL.
pub async fn mount_telnyx_media(
    cdn: &wiremock::MockServer,
    name: &str,
    bytes: &[u8],
    content_type: &str,
) -> String {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, ResponseTemplate};
    let p = format!("/messaging/media/{name}");
    Mock::given(method("GET"))
        .and(path(p.clone()))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", content_type)
                .set_body_bytes(bytes.to_vec()),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(cdn)
        .await;
    Mock::given(method("GET"))
        .and(path(p.clone()))
        .respond_with(ResponseTemplate::new(404))
        .with_priority(2)
        .mount(cdn)
        .await;
    format!("{}{p}", cdn.uri())
}

/// A SignalWire media URL with "Protect Message Media URLs" on, on the
/// `api` mock: 401 without basic auth `{project}:{token}`. Returns the URL.
pub async fn mount_signalwire_media(
    api: &wiremock::MockServer,
    project: &str,
    token: &str,
    name: &str,
    bytes: &[u8],
    content_type: &str,
) -> String {
    use base64::Engine;
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, ResponseTemplate};
    let p = format!("/api/laml/2010-04-01/Accounts/{project}/Messages/{name}/Media/ME{name}");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{project}:{token}"));
    Mock::given(method("GET"))
        .and(path(p.clone()))
        .and(header("authorization", format!("Basic {basic}").as_str()))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", content_type)
                .set_body_bytes(bytes.to_vec()),
        )
        .with_priority(1)
        .mount(api)
        .await;
    Mock::given(method("GET"))
        .and(path(p.clone()))
        .respond_with(ResponseTemplate::new(401))
        .with_priority(2)
        .mount(api)
        .await;
    format!("{}{p}", api.uri())
}

/// Downloads a URL the gateway gave a user, as the user's client would:
/// no credentials. The gateway's `{PUBLIC}` is served by `http_base` (in
/// production a reverse proxy maps one to the other).
pub async fn download(gateway: &Gateway, url: &str) -> reqwest::Response {
    let local = match url.strip_prefix(PUBLIC) {
        Some(rest) => format!("{}/hooks{rest}", gateway.http_base),
        None => url.to_owned(),
    };
    reqwest::Client::new()
        .get(local)
        .send()
        .await
        .expect("download")
}

/// Some bytes that are a PNG picture (its signature and header), `n` long.
pub fn picture(n: usize) -> Vec<u8> {
    let mut p = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    p.extend((0..n.saturating_sub(p.len())).map(|i| (i * 7 % 251) as u8));
    p.truncate(n);
    p
}

/// Twilio's signature, for webhooks the tests post.
pub fn twilio_sign(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let owned: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    sms_pstn_laml::signature::twilio_signature(token, url, &owned)
}

/// Posts a form webhook with an optional `X-Twilio-Signature`.
pub async fn post_form(
    url: &str,
    params: &[(&str, &str)],
    signature: Option<&str>,
) -> reqwest::Response {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(s) = signature {
        req = req.header("x-twilio-signature", s);
    }
    req.send().await.expect("webhook request")
}

/// The Ed25519 key the tests sign Telnyx webhooks with; its public key is
/// [`telnyx_public_key`].
pub fn telnyx_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[42u8; 32])
}

/// Base64 of [`telnyx_key`]'s public key, for `public_key` in the config.
pub fn telnyx_public_key() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(telnyx_key().verifying_key().as_bytes())
}

/// Posts a Telnyx JSON event signed the way Telnyx signs, timestamped now.
pub async fn post_telnyx(url: &str, event: &serde_json::Value) -> reqwest::Response {
    use base64::Engine;
    use ed25519_dalek::Signer;
    let body = event.to_string();
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let sig = telnyx_key().sign(format!("{ts}|{body}").as_bytes());
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("telnyx-timestamp", ts)
        .header(
            "telnyx-signature-ed25519",
            base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()),
        )
        .body(body)
        .send()
        .await
        .expect("webhook request")
}

/// Posts a SignalWire form webhook signed with `signing_key` (Twilio's
/// algorithm, header `X-SignalWire-Signature`) for public URL `public`.
pub async fn post_signalwire(
    url: &str,
    public: &str,
    signing_key: &str,
    params: &[(&str, &str)],
) -> reqwest::Response {
    let sig = twilio_sign(signing_key, public, params);
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-signalwire-signature", sig)
        .body(body)
        .send()
        .await
        .expect("webhook request")
}

/// The requests `server` has received on `path`, waiting until there are `n`.
pub async fn wait_requests(
    server: &wiremock::MockServer,
    path: &str,
    n: usize,
) -> Vec<wiremock::Request> {
    for _ in 0..200 {
        let got: Vec<wiremock::Request> = server
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path() == path)
            .collect();
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path}: fewer than {n} requests arrived");
}

/// The texts a sandbox account has sent (`hooks` is
/// `{http_base}/hooks/{account}`), once there is at least one (within 5 s).
pub async fn sandbox_outbox(hooks: &str, auth: &str) -> serde_json::Value {
    let http = reqwest::Client::new();
    let mut outbox = serde_json::Value::Null;
    for _ in 0..100 {
        outbox = http
            .get(format!("{hooks}/outbox"))
            .header("authorization", auth)
            .send()
            .await
            .expect("outbox request")
            .json()
            .await
            .expect("outbox JSON");
        if outbox.as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    outbox
}

/// The real binary (`sms-over-xmpp-under-test`, the same `main`) as a child
/// process, killed with SIGKILL when dropped.
pub struct Binary {
    child: std::process::Child,
}

impl Binary {
    /// Runs `exe run --config config`, its log (at `info`) appended to
    /// `log`. `exe` is `env!("CARGO_BIN_EXE_sms-over-xmpp-under-test")`,
    /// which only a test target can name.
    pub fn start(exe: &str, config: &std::path::Path, log: &std::path::Path) -> Binary {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = std::process::Command::new(exe)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the gateway binary");
        Binary { child }
    }

    /// Kills it with SIGKILL and reaps it.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// A `VmRSS`/`VmHWM`-style line of `/proc/PID/status`, in KiB.
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the gateway is running");
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix(field)?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status"))
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        self.kill_9();
    }
}
