//! Real XMPP servers for the suites: Prosody and ejabberd on loopback, with
//! throwaway configs.

use super::*;

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
        Self::start_configured(false, false).await
    }

    /// [`Prosody::start`] with `mod_privilege` (Debian's prosody-modules)
    /// granting the component roster access (XEP-0356): the lines the
    /// README gives operators.
    pub async fn start_with_privilege() -> Prosody {
        Self::start_configured(false, true).await
    }

    /// [`Prosody::start`] with `mod_http_file_share` as `upload.localhost`
    /// (XEP-0363), its HTTP server on loopback, and the component allowed to
    /// upload: the line the README tells operators to add.
    pub async fn start_with_upload() -> Prosody {
        Self::start_configured(true, false).await
    }

    async fn start_configured(upload: bool, privilege: bool) -> Prosody {
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
        let (privilege_module, privileged, component_modules) = if privilege {
            (
                " \"privilege\";",
                format!(
                    "  privileged_entities = {{ [\"{DOMAIN}\"] = {{ roster = \"both\"; }} }}\n"
                ),
                "  modules_enabled = { \"privilege\" }\n",
            )
        } else {
            ("", String::new(), "")
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
modules_enabled = {{ "roster"; "saslauth"; "disco"; "ping"; "presence"; "message"; "iq"; "posix"; "offline";{privilege_module} }}
modules_disabled = {{ "s2s" }}
authentication = "internal_plain"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
log = {{ info = "{d}/prosody.log" }}
VirtualHost "localhost"
{privileged}Component "{DOMAIN}"
  component_secret = "{SECRET}"
{component_modules}{upload_component}"#,
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
        Self::start_configured(false, false, "").await
    }

    /// [`Ejabberd::start`] with `mod_privilege` granting the component
    /// roster access (XEP-0356): the lines the README gives operators.
    pub async fn start_with_privilege() -> Ejabberd {
        Self::start_configured(false, true, "").await
    }

    /// [`Ejabberd::start`] with `mod_http_upload` as `upload.localhost`
    /// (XEP-0363) on an HTTP listener on loopback, and the access rule the
    /// README gives operators, letting the component upload.
    pub async fn start_with_upload() -> Ejabberd {
        Self::start_configured(true, false, "").await
    }

    /// [`Ejabberd::start`] with `yml` added to its config (top-level
    /// options such as `domain_balancing`).
    pub async fn start_with(yml: &str) -> Ejabberd {
        Self::start_configured(false, false, yml).await
    }

    async fn start_configured(upload: bool, privilege: bool, extra: &str) -> Ejabberd {
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
        let (upload_rules, privilege_module) = if privilege {
            (
                format!("acl: {{local: {{user_regexp: \"\"}}, sms_gateway: {{server: \"{DOMAIN}\"}}}}\naccess_rules: {{local: {{allow: local}}, c2s: {{allow: all}}, sms_gateway_roster: {{allow: sms_gateway}}}}\n"),
                ", mod_privilege: {roster: {both: sms_gateway_roster}}",
            )
        } else {
            (upload_rules, "")
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
modules: {{mod_disco: {{}}, mod_ping: {{}}, mod_roster: {{}}, mod_offline: {{}}, mod_stream_mgmt: {{}}, mod_vcard: {{}}{upload_module}{privilege_module}}}
{extra}
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
