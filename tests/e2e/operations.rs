//! What an operator watches: `/metrics` moving as texts flow (scraped over
//! real HTTP), `/healthz`, and `/readyz` turning 503 while Prosody is down
//! and 200 once the link is back; and the binary's JSON logs.

use sms_over_xmpp_tests::*;
use std::time::Duration;

const EXE: &str = env!("CARGO_BIN_EXE_sms-over-xmpp-under-test");

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url)
        .await
        .expect("the metrics listener answers");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

/// The value of the sample line starting with `series` (`name{labels}`).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls `url` until it answers `status`, within `within`.
async fn wait_status(url: &str, status: u16, within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (s, body) = get(url).await;
        if s == status {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} answered {s} ({body:?}), not {status}, for {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_texts_flow_and_readiness_follows_the_link() {
    let mut prosody = Prosody::start().await;
    let metrics_port = free_port();
    let cfg = gateway_config(
        &prosody,
        free_port(),
        &format!("{SANDBOX_ALICE}\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n"),
    );
    let gateway = Gateway::start(&cfg).await;
    let base = format!("http://127.0.0.1:{metrics_port}");
    let mut alice = User::login(&prosody, "alice").await;
    wait_for_component(&mut alice).await;

    assert_eq!(get(&format!("{base}/healthz")).await, (200, "ok\n".into()));
    wait_status(&format!("{base}/readyz"), 200, Duration::from_secs(10)).await;

    // A text out, a reply in, a repeat of the reply, a forged webhook.
    alice.send_chat(CONTACT, "m1", "hello").await;
    let hooks = format!("{}/hooks/sandbox", gateway.http_base);
    sandbox_outbox(&hooks, SANDBOX_AUTH).await;
    let http = reqwest::Client::new();
    for _ in 0..2 {
        let r = http
            .post(format!("{hooks}/message"))
            .header("authorization", SANDBOX_AUTH)
            .body(r#"{"id":"in-1","from":"+15557654321","to":"+15550001111","body":"hi"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = http
        .post(format!("{hooks}/message"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let m = alice.expect_message().await;
    assert_eq!(m.body().as_deref(), Some("hi"));

    let (status, text) = get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    for (series, want) in [
        (
            r#"sms_texts_sent_total{account="sandbox",outcome="accepted"}"#,
            1.0,
        ),
        (
            r#"sms_texts_received_total{account="sandbox",outcome="new"}"#,
            1.0,
        ),
        (
            r#"sms_texts_received_total{account="sandbox",outcome="repeat"}"#,
            1.0,
        ),
        (
            r#"sms_webhooks_total{account="sandbox",hook="message",status="200"}"#,
            2.0,
        ),
        (
            r#"sms_webhooks_total{account="sandbox",hook="message",status="403"}"#,
            1.0,
        ),
        (r#"sms_carrier_up{account="sandbox"}"#, 1.0),
        ("sms_xmpp_link_up", 1.0),
        ("sms_store_ok", 1.0),
        (
            r#"sms_carrier_request_seconds_count{account="sandbox"}"#,
            1.0,
        ),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series} in:\n{text}");
    }
    assert!(sample(&text, "sms_store_commit_seconds_count").unwrap() >= 2.0);
    assert!(
        text.contains(r#"sms_queue_depth{queue="to_pstn"}"#),
        "{text}"
    );
    // Every series the example dashboard draws exists.
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/grafana-dashboard.json"
    ))
    .unwrap();
    for name in dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("sms_"))
    {
        let family = ["_total", "_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "the dashboard draws {name}, which /metrics does not have"
        );
    }
    // No phone number or JID is a label.
    assert!(
        !text.contains("+1555") && !text.contains("alice@"),
        "{text}"
    );

    // Prosody stops: not ready, saying why; back: ready again.
    prosody.stop();
    let why = wait_status(&format!("{base}/readyz"), 503, Duration::from_secs(30)).await;
    assert!(why.contains("XMPP link"), "{why}");
    prosody.start_again().await;
    wait_status(&format!("{base}/readyz"), 200, Duration::from_secs(60)).await;
    let (_, text) = get(&format!("{base}/metrics")).await;
    assert!(
        sample(&text, "sms_xmpp_reconnects_total").unwrap() >= 1.0,
        "{text}"
    );
    gateway.stop().await;
}

/// `--log-format json`: every line the binary logs is a JSON object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[xmpp]\nserver = \"127.0.0.1:{}\"\ndomain = \"sms.localhost\"\nsecret = \"s\"\n[http]\nlisten = \"127.0.0.1:{}\"\npublic_url = \"https://sms.example.com/hooks\"\n{SANDBOX_ALICE}\n[store]\npath = \"{}\"\n",
            free_port(),
            free_port(),
            dir.path().join("s.db").display()
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(EXE)
        .args(["run", "--log-format", "json", "--config"])
        .arg(&cfg)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Nothing listens on the XMPP port: it logs its attempts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = child.start_kill();
    let out = child.wait_with_output().await.unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "{log}");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
}

/// SIGHUP re-reads the config: a user added can text at once; a config
/// that does not validate is refused, naming the key, and the running one
/// keeps serving; a carrier account added sends and takes webhooks at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_a_user_and_a_broken_config_is_refused() {
    let prosody = Prosody::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg_path, log) = (dir.path().join("c.toml"), dir.path().join("log"));
    let http = free_port();
    let base = format!(
        "{}\n[store]\npath = \"{}\"\n",
        gateway_config(&prosody, http, SANDBOX_ALICE),
        dir.path().join("s.db").display()
    );
    std::fs::write(&cfg_path, &base).unwrap();
    let gateway = Binary::start(EXE, &cfg_path, &log);
    let hooks = format!("http://127.0.0.1:{http}/hooks/sandbox");
    let mut bob = User::login(&prosody, "bob").await;
    wait_for_component(&mut bob).await;
    bob.send_chat(CONTACT, "b1", "before").await;
    assert_eq!(
        bob.expect_message().await.error().map(|e| e.0).as_deref(),
        Some("registration-required")
    );
    let hangup = |times: usize| {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &gateway.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let log = log.clone();
        async move {
            for _ in 0..100 {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.matches("SIGHUP: config").count() >= times {
                    return text;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("no reload logged");
        }
    };

    // Bob added: he texts at once; a changed [groups] waits for a restart.
    std::fs::write(
        &cfg_path,
        format!("{base}\n[[users]]\njid = \"bob@localhost\"\nnumber = \"+15550002222\"\nprovider = \"sandbox\"\n[groups]\nfan_out = true\n"),
    )
    .unwrap();
    let text = hangup(1).await;
    assert!(text.contains("config reloaded"), "{text}");
    assert!(text.contains("[groups] changed"), "{text}");
    bob.send_chat(CONTACT, "b2", "after").await;
    assert!(
        sandbox_sent(&hooks, SANDBOX_AUTH, &["after", "+15550002222"]).await,
        "bob's text did not reach the carrier after the reload"
    );

    // A broken config: refused, naming the key; both users still text.
    std::fs::write(
        &cfg_path,
        format!("{base}\n[[users]]\njid = \"bob@localhost\"\nnumber = \"555-0002\"\nprovider = \"sandbox\"\n"),
    )
    .unwrap();
    let text = hangup(2).await;
    assert!(
        text.contains("reload refused") && text.contains("users[1].number"),
        "{text}"
    );
    bob.send_chat(CONTACT, "b3", "still here").await;
    assert!(
        sandbox_sent(&hooks, SANDBOX_AUTH, &["still here"]).await,
        "the running config stopped serving bob"
    );

    // A carrier account added, with Carol on it: her texts go out through
    // it and its webhooks are taken, without a restart.
    std::fs::write(
        &cfg_path,
        format!("{base}\n[providers.second]\ntype = \"sandbox\"\ntoken = \"second-sandbox-token\"\n[[users]]\njid = \"carol@localhost\"\nnumber = \"+15550003333\"\nprovider = \"second\"\n"),
    )
    .unwrap();
    let text = hangup(3).await;
    assert!(text.contains("[\"second\"]"), "{text}");
    let mut carol = User::login(&prosody, "carol").await;
    carol
        .send_chat(CONTACT, "c1", "through the new account")
        .await;
    let second = format!("http://127.0.0.1:{http}/hooks/second");
    assert!(
        sandbox_sent(
            &second,
            "Bearer second-sandbox-token",
            &["through the new account", "+15550003333"]
        )
        .await,
        "carol's text did not go through the added account"
    );
    let r = reqwest::Client::new()
        .post(format!("{second}/message"))
        .header("authorization", "Bearer second-sandbox-token")
        .body(r#"{"id":"second-1","from":"+15557654321","to":"+15550003333","body":"reply to carol"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m = carol.expect_message().await;
    assert_eq!(m.body().as_deref(), Some("reply to carol"), "{m:?}");
}
