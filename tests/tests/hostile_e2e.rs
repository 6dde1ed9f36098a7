//! The gateway as a hostile stranger tries it (issue #11): the real binary
//! against a real Prosody, with texts, stanzas and connections made to hurt.
//! Each test prints what it measured.

use sms_over_xmpp_tests::*;
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_sms-over-xmpp-under-test");

/// The binary with `extra` TOML (providers, users, limits), its config and
/// log in `dir`, logged in to `prosody`.
async fn binary(prosody: &Prosody, dir: &std::path::Path, http_port: u16, extra: &str) -> Binary {
    let config = dir.join("gateway.toml");
    let text = format!(
        "{}\n[store]\npath = \"{}\"\n",
        gateway_config(prosody, http_port, extra),
        dir.join("store.db").display()
    );
    std::fs::write(&config, text).unwrap();
    let gateway = Binary::start(EXE, &config, &dir.join("gateway.log"));
    wait_for_port(http_port, Duration::from_secs(10)).await;
    prosody
        .wait_component_logins(1, Duration::from_secs(10))
        .await;
    gateway
}

/// A chat nested many elements deep. Before the bound, 10,000 levels (70 KB,
/// inside Prosody's stanza limit) overflowed the gateway's stack and
/// aborted it: any XMPP user on any server could stop it. Now what is
/// deeper than 32 levels is left out, the body is texted, and the link and
/// the process stay up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_chat_costs_little_and_relaying_goes_on() {
    let prosody = Prosody::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut gateway = binary(&prosody, dir.path(), port, SANDBOX_ALICE).await;
    let mut alice = User::login(&prosody, "alice").await;
    // Seven bytes a level: 30,000 levels stay under Prosody's 256 KiB
    // stanza limit, which closes the client's stream past it.
    for depth in [1_000usize, 10_000, 30_000] {
        let open = format!("<a xmlns='urn:example:deep'>{}", "<a>".repeat(depth - 1));
        let close = "</a>".repeat(depth);
        let cpu_before = cpu_ms(gateway.pid());
        let started = Instant::now();
        alice
            .send_raw(&format!(
                "<message type='chat' to='{CONTACT}' id='deep-{depth}'><body>deep</body>{open}{close}</message>"
            ))
            .await;
        let after = format!("after the one {depth} deep");
        alice
            .send_chat(CONTACT, &format!("after-{depth}"), &after)
            .await;
        let hooks = format!("http://127.0.0.1:{port}/hooks/sandbox");
        let mut outbox = serde_json::Value::Null;
        while started.elapsed() < Duration::from_secs(20) {
            outbox = sandbox_outbox(&hooks, SANDBOX_AUTH).await;
            if outbox
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["body"] == after.as_str())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "depth {depth}: {} bytes, gateway CPU {} ms, next chat relayed after {:?}, gateway RSS {} KiB (peak {} KiB), component logins {}, outbox {}",
            open.len() + close.len(),
            cpu_ms(gateway.pid()) - cpu_before,
            started.elapsed(),
            gateway.status_kib("VmRSS:"),
            gateway.status_kib("VmHWM:"),
            prosody.component_logins(),
            outbox.as_array().map_or(0, |a| a.len()),
        );
        let bodies: Vec<&str> = outbox
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["body"].as_str())
            .collect();
        assert!(
            bodies.contains(&after.as_str()),
            "depth {depth}: {bodies:?}"
        );
        assert_eq!(
            bodies.iter().filter(|b| **b == "deep").count(),
            bodies.len() / 2,
            "depth {depth}: the deep chat's body is texted too: {bodies:?}"
        );
        assert!(
            gateway.try_wait().is_none(),
            "depth {depth}: the gateway died"
        );
        assert_eq!(prosody.component_logins(), 1, "depth {depth}");
        while alice
            .next_message(Duration::from_millis(300))
            .await
            .is_some()
        {}
    }
}

/// The process's user + system CPU time in milliseconds.
fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks * 1000 / 100
}
