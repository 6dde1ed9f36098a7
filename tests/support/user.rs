//! A logged-in XMPP user: slixmpp (`xmpp_user.py`), a client that is not ours.

use super::*;

/// A logged-in XMPP client session of a Prosody user, available: slixmpp
/// (`xmpp_user.py`), a client that is not ours, driven over pipes.
pub struct User {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    /// The client's output, one line an event, read as it comes by a task
    /// of its own: a client whose output is not read stops reading its
    /// input (a full pipe blocks slixmpp's event loop), and a test sending
    /// thousands of stanzas would wait on it for ever.
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
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
        let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
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
        let line = self.lines.recv().await?;
        Some(
            serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("xmpp_user.py printed {line:?}, not JSON: {e}")),
        )
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
            let Some((k, el)) = stanza_of(&ev) else {
                continue;
            };
            if k == kind {
                return Some(el);
            }
            self.pending.push_back((k, el));
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

    /// Joins group chat `room` as `nick` with slixmpp's XEP-0045 plugin,
    /// which waits for the room's presence for the user (status 110); the
    /// stanzas of the join (presence, history, subject) stay readable.
    pub async fn join(&mut self, room: &str, nick: &str) {
        let cmd = serde_json::json!({"op": "join", "room": room, "nick": nick}).to_string() + "\n";
        self.stdin.write_all(cmd.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let ev = self
                    .event()
                    .await
                    .expect("xmpp_user.py exited while joining");
                match ev["event"].as_str() {
                    Some("joined") => return Ok(()),
                    Some("join_failed") => return Err(ev["error"].to_string()),
                    _ => self.pending.extend(stanza_of(&ev)),
                }
            }
        })
        .await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("joining {room} failed: {e}"),
            Err(_) => panic!("joining {room} took more than 20 s"),
        }
    }

    /// Logs out.
    pub async fn quit(mut self) {
        let _ = self.stdin.write_all(b"{\"op\": \"quit\"}\n").await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

/// The stanza an event of xmpp_user.py carries, with its kind.
fn stanza_of(ev: &serde_json::Value) -> Option<(String, Element)> {
    let k = ev["event"]
        .as_str()
        .filter(|k| matches!(*k, "message" | "iq" | "presence"))?;
    // slixmpp leaves out the stream's default namespace.
    let xml = format!("<wrap xmlns='jabber:client'>{}</wrap>", ev["xml"].as_str()?);
    let wrap: Element = xml.parse().expect("well-formed stanza");
    let el = wrap.children().next().expect("a stanza").clone();
    Some((k.to_owned(), el))
}

/// The child `name` of `el` in namespace `ns`.
pub fn child<'a>(el: &'a Element, name: &str, ns: &str) -> Option<&'a Element> {
    el.children().find(|c| c.is(name, ns))
}

/// The defined condition of an error stanza (`bad-request`, …).
pub fn condition(stanza: &Element) -> Option<String> {
    let err = stanza.children().find(|c| c.name() == "error")?;
    err.children()
        .find(|c| c.ns() == STANZAS_NS && c.name() != "text")
        .map(|c| c.name().to_owned())
}

/// The text of an error stanza, or nothing.
pub fn error_text(stanza: &Element) -> String {
    stanza
        .children()
        .find(|c| c.name() == "error")
        .and_then(|e| e.children().find(|c| c.name() == "text"))
        .map(|t| t.text())
        .unwrap_or_default()
}

/// Waits until the component answers disco on its domain (it has logged in).
pub async fn wait_for_component(user: &mut User) {
    for i in 0..100 {
        let iq = user
            .iq(
                "get",
                DOMAIN,
                &format!("wait{i}"),
                "<query xmlns='http://jabber.org/protocol/disco#info'/>",
            )
            .await;
        if iq.attr("type") == Some("result") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the component never answered disco");
}

/// Presences whose sender's bare JID is `from`, arriving within `within`.
pub async fn presences_from(user: &mut User, from: &str, within: Duration) -> Vec<Element> {
    let deadline = tokio::time::Instant::now() + within;
    let mut got = vec![];
    while let Some(p) = user
        .next_presence(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        if p.attr("from").and_then(|f| f.split('/').next()) == Some(from) {
            got.push(p);
        }
    }
    got
}
