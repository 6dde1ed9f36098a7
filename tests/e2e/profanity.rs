//! A real terminal client: Profanity (Debian's package) driven in tmux
//! (`send-keys`, `capture-pane`) against Prosody and the gateway with the
//! sandbox carrier. It logs in, adds a contact, sees it online with its
//! name, sends a text (which reaches the carrier), and sees the reply in
//! the same window; then it is invited to a group text's room, joins it,
//! reads the text that waited and answers the group. The assertions are
//! on what the screen shows.

use sms_over_xmpp_tests::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmux server of its own (its own socket), with Profanity in it; the
/// server is killed when dropped.
struct Screen {
    socket: String,
    _home: tempfile::TempDir,
}

impl Screen {
    fn start() -> Screen {
        let home = tempfile::tempdir().unwrap();
        let socket = format!("sox-profanity-{}", std::process::id());
        let ok = Command::new("tmux")
            .args([
                "-L",
                &socket,
                "new-session",
                "-d",
                "-s",
                "prof",
                "-x",
                "200",
                "-y",
                "50",
            ])
            .arg(format!(
                "env HOME={} TERM=xterm-256color LANG=C.UTF-8 profanity",
                home.path().display()
            ))
            .status()
            .expect("tmux runs (apt-get install tmux; the README's test command does)");
        assert!(ok.success(), "tmux new-session");
        Screen {
            socket,
            _home: home,
        }
    }

    /// Types `text` and presses Enter.
    fn line(&self, text: &str) {
        let ok = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "prof", "-l", text])
            .status()
            .unwrap();
        assert!(ok.success());
        std::thread::sleep(Duration::from_millis(100));
        Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "prof", "Enter"])
            .status()
            .unwrap();
    }

    /// What the screen shows now.
    fn text(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-t", "prof", "-p"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows all of `what`; the screen on failure.
    async fn wait_for(&self, what: &[&str], within: Duration) -> Result<String, String> {
        let deadline = Instant::now() + within;
        loop {
            let screen = self.text();
            if what.iter().all(|w| screen.contains(w)) {
                return Ok(screen);
            }
            if Instant::now() > deadline {
                return Err(screen);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profanity_texts_through_the_gateway() {
    if Command::new("profanity").arg("--version").output().is_err() {
        panic!("profanity is not installed: run scripts/install-test-deps.sh (the README's test command does)");
    }
    let prosody = Prosody::start_with_privilege().await;
    let cfg = gateway_config(
        &prosody,
        free_port(),
        &format!("{SANDBOX_ALICE}\n[caller_id]\n\"+15557654321\" = \"Jane Roe\"\n"),
    );
    let gateway = Gateway::start(&cfg).await;
    prosody
        .wait_component_logins(1, Duration::from_secs(10))
        .await;

    let screen = Screen::start();
    screen
        .wait_for(&["Profanity"], Duration::from_secs(10))
        .await
        .unwrap_or_else(|s| panic!("Profanity did not start:\n{s}"));
    screen.line(&format!(
        "/connect alice@localhost server 127.0.0.1 port {} tls disable",
        prosody.c2s_port
    ));
    screen
        .wait_for(&["password"], Duration::from_secs(10))
        .await
        .unwrap_or_else(|s| panic!("no password prompt:\n{s}"));
    screen.line("alicepw");
    screen
        .wait_for(&["logged in successfully"], Duration::from_secs(15))
        .await
        .unwrap_or_else(|s| panic!("not logged in:\n{s}"));

    // Add the contact the way Profanity's manual says: ask for its
    // presence. The gateway accepts, and asks back.
    let contact = "+15557654321@sms.localhost";
    screen.line(&format!("/roster add {contact}"));
    screen.line(&format!("/sub request {contact}"));
    screen.line(&format!("/sub allow {contact}"));
    // The contact shows online (its presence comes from `…/sms`).
    screen
        .wait_for(
            &[&format!("{contact} (sms) is online")],
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|s| {
            panic!("the contact's presence (from its /sms resource) is not shown:\n{s}")
        });
    screen.line("/who online");
    screen
        .wait_for(&[&format!("{contact} is online")], Duration::from_secs(10))
        .await
        .unwrap_or_else(|s| panic!("the contact is not listed online:\n{s}"));

    // The gateway's commands are listed (XEP-0050), as the README says.
    screen.line("/cmd list sms.localhost");
    screen
        .wait_for(&["new-chat"], Duration::from_secs(10))
        .await
        .unwrap_or_else(|s| panic!("the commands are not listed:\n{s}"));

    // Commands written in chat to the gateway's address (#31), as a user
    // of a client without the command UI would.
    screen.line("/msg sms.localhost status");
    screen
        .wait_for(
            &["your texts come from +15550001111"],
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|s| panic!("no answer to status in chat:\n{s}"));
    screen.line("/msg sms.localhost new +1 555 765 9999");
    screen
        .wait_for(&["+15557659999@sms.localhost"], Duration::from_secs(10))
        .await
        .unwrap_or_else(|s| panic!("no answer to new in chat:\n{s}"));

    // A text from the client reaches the carrier.
    screen.line(&format!("/msg {contact} hello from profanity"));
    let hooks = format!("{}/hooks/sandbox", gateway.http_base);
    let mut sent = false;
    for _ in 0..100 {
        let outbox = sandbox_outbox(&hooks, SANDBOX_AUTH).await;
        if outbox.to_string().contains("hello from profanity") {
            sent = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        sent,
        "the text did not reach the carrier:\n{}",
        screen.text()
    );

    // The reply shows in the same window.
    let r = reqwest::Client::new()
        .post(format!("{hooks}/message"))
        .header("authorization", SANDBOX_AUTH)
        .body(r#"{"from":"+15557654321","to":"+15550001111","body":"hi from the phone"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // In the window of the text, under the contact's caller-ID name (put
    // in the roster through XEP-0356), shown online.
    screen
        .wait_for(
            &[
                "me: hello from profanity",
                "Jane Roe: hi from the phone",
                "Jane Roe [online]",
            ],
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|s| panic!("the reply is not shown with the text:\n{s}"));

    // One person, one address (#28): written to as dialled, the contact
    // answers once, in that window, with its one address; the text goes.
    screen.line("/msg 5557654321@sms.localhost from the dialled form");
    screen
        .wait_for(
            &["address is +15557654321@sms.localhost"],
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|s| panic!("no word of the contact's one address:\n{s}"));
    assert!(
        sandbox_sent(&hooks, SANDBOX_AUTH, &["from the dialled form"]).await,
        "the text written to the dialled form did not go:\n{}",
        screen.text()
    );

    // A one-time code from a sender name (#28): it arrives, from an address
    // for the sender.
    let r = reqwest::Client::new()
        .post(format!("{hooks}/message"))
        .header("authorization", SANDBOX_AUTH)
        .body(r#"{"from":"Google","to":"+15550001111","body":"G-424242 is your code"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    screen.line("/msg google@sms.localhost");
    screen
        .wait_for(&["G-424242 is your code"], Duration::from_secs(10))
        .await
        .unwrap_or_else(|s| panic!("the code from a sender name is not shown:\n{s}"));

    // A group text: Profanity shows the invitation; joining the room shows
    // the text that waited, under the sender's name.
    let room = "+15551112222,+15557654321@sms.localhost";
    let r = reqwest::Client::new()
        .post(format!("{hooks}/message"))
        .header("authorization", SANDBOX_AUTH)
        .body(r#"{"from":"+15557654321","to":"+15550001111","cc":["+15551112222"],"body":"group hello"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Profanity shows invitations in its console window.
    screen.line("/win console");
    screen
        .wait_for(&[room, "invite"], Duration::from_secs(10))
        .await
        .unwrap_or_else(|s| panic!("the invitation is not shown:\n{s}"));
    screen.line(&format!("/join {room} nick alice"));
    screen
        .wait_for(&["Jane Roe: group hello"], Duration::from_secs(10))
        .await
        .unwrap_or_else(|s| panic!("the room's history is not shown:\n{s}"));
    // A line typed in the room goes to the group as one text, and shows as
    // the user's own.
    screen.line("dinner at 8?");
    let mut sent = None;
    for _ in 0..100 {
        let outbox = sandbox_outbox(&hooks, SANDBOX_AUTH).await;
        sent = outbox
            .as_array()
            .and_then(|a| a.iter().find(|t| t["body"] == "dinner at 8?"))
            .cloned();
        if sent.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent = sent.unwrap_or_else(|| {
        panic!(
            "the group text did not reach the carrier:\n{}",
            screen.text()
        )
    });
    assert_eq!(sent["to"], "+15551112222");
    assert_eq!(sent["cc"], serde_json::json!(["+15557654321"]));
    let shown = screen
        .wait_for(&["alice: dinner at 8?"], Duration::from_secs(10))
        .await
        .unwrap_or_else(|s| panic!("the user's own line is not shown in the room:\n{s}"));
    // Once: Profanity knows the reflection for its own message (by its id).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let shown = screen
        .text()
        .matches("alice: dinner at 8?")
        .count()
        .max(shown.matches("alice: dinner at 8?").count());
    assert_eq!(shown, 1, "{}", screen.text());

    screen.line("/quit");
    gateway.stop().await;
}
