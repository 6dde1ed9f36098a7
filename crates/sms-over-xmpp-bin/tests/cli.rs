//! The command line as a user meets it: `--help`, `--version`, `check` on
//! every example config, and config errors that name the key and value.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sms-over-xmpp"));
    // Start from a clean environment of our own variables.
    for (k, _) in std::env::vars() {
        if k.starts_with("SMS_OVER_XMPP_") {
            c.env_remove(k);
        }
    }
    c
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn help_and_version() {
    let o = bin().arg("--help").output().unwrap();
    assert!(o.status.success());
    let t = text(&o);
    assert!(
        t.contains("run") && t.contains("check") && t.contains("--config"),
        "{t}"
    );
    let o = bin().arg("--version").output().unwrap();
    assert!(o.status.success());
    assert_eq!(
        text(&o).trim(),
        format!("sms-over-xmpp {}", env!("CARGO_PKG_VERSION"))
    );
}

/// `man` needs no config, and the page has every command and the
/// sections a manual page is read for.
#[test]
fn the_manual_page() {
    let o = bin()
        .args(["--config", "/nonexistent.toml", "man"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let page = String::from_utf8(o.stdout).unwrap();
    for needle in [
        ".TH sms-over-xmpp 1",
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH OPTIONS",
        ".SH COMMANDS",
        "configure\\-carrier",
        "\\-\\-online",
        ".SH SIGNALS",
        ".SH EXIT STATUS",
        ".SH FILES",
        "SMS_OVER_XMPP_CONFIG",
    ] {
        assert!(page.contains(needle), "the page lacks {needle:?}:\n{page}");
    }
}

#[test]
fn every_example_config_checks() {
    for name in [
        "sandbox.toml",
        "twilio.toml",
        "telnyx.toml",
        "signalwire.toml",
        "all-carriers.toml",
        "postgres.toml",
        "cluster.toml",
    ] {
        let path = examples().join(name);
        let o = bin()
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(o.status.success(), "{name}: {}", text(&o));
        assert!(text(&o).contains(": OK"), "{name}: {}", text(&o));
        // Credentials never reach the output.
        assert!(!text(&o).contains("change me"), "{name}: {}", text(&o));
    }
}

#[test]
fn the_embedding_example_needs_its_own_provider_type() {
    let o = bin()
        .args(["check", "--config"])
        .arg(examples().join("embed.toml"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let t = text(&o);
    assert!(
        t.contains("providers.echo.type") && t.contains("\"echo\""),
        "{t}"
    );
}

fn write(dir: &tempfile::TempDir, body: &str) -> PathBuf {
    let p = dir.path().join("c.toml");
    std::fs::write(&p, body).unwrap();
    p
}

fn sandbox() -> String {
    std::fs::read_to_string(examples().join("sandbox.toml")).unwrap()
}

#[test]
fn a_bad_value_is_named_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        &dir,
        &sandbox().replace("number = \"+15550001111\"", "number = \"555-0001\""),
    );
    let o = bin().args(["check", "--config"]).arg(&p).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let t = text(&o);
    assert!(
        t.contains("users[0].number") && t.contains("555-0001"),
        "{t}"
    );

    let p = write(&dir, &sandbox().replace("[http]", "[htpp]"));
    let o = bin().args(["check", "--config"]).arg(&p).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("htpp"), "{}", text(&o));
}

#[test]
fn environment_overrides_any_key() {
    let dir = tempfile::tempdir().unwrap();
    // The file has no secret: the environment supplies it.
    let p = write(
        &dir,
        &sandbox().replace("secret = \"quickstart-secret\"", ""),
    );
    let o = bin().args(["check", "--config"]).arg(&p).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("secret"), "{}", text(&o));
    let o = bin()
        .args(["check", "--config"])
        .arg(&p)
        .env("SMS_OVER_XMPP_XMPP__SECRET", "from-env")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // And a value from the environment is checked like one from the file.
    let o = bin()
        .args(["check", "--config"])
        .arg(examples().join("sandbox.toml"))
        .env("SMS_OVER_XMPP_HTTP__PUBLIC_URL", "not a url")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("http.public_url"), "{}", text(&o));
}

#[test]
fn config_path_falls_back_to_the_environment_then_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, &sandbox());
    let o = bin()
        .arg("check")
        .env("SMS_OVER_XMPP_CONFIG", &p)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    std::fs::copy(&p, dir.path().join("sms-over-xmpp.toml")).unwrap();
    let o = bin().arg("check").current_dir(dir.path()).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = bin().arg("check").current_dir(examples()).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("sms-over-xmpp.toml"), "{}", text(&o));
}

#[test]
fn run_refuses_a_bad_config_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        &dir,
        &sandbox().replace("type = \"sandbox\"", "type = \"nope\""),
    );
    let o = bin().args(["run", "--config"]).arg(&p).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("providers.sandbox.type"), "{}", text(&o));
}

/// #27: a database password given on `migrate-store`'s command line would
/// be in `ps` for every local user: refused, pointing at the variable; the
/// same URL from `SMS_OVER_XMPP_MIGRATE_TO` is taken (and then fails here
/// only for want of the store file).
#[test]
fn migrate_store_takes_no_password_on_the_command_line() {
    let url = "postgres://sms:Sup3rS3cret@127.0.0.1:1/sms";
    let o = bin()
        .args(["migrate-store", "--from", "/nonexistent.db", "--to", url])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let t = text(&o);
    assert!(t.contains("SMS_OVER_XMPP_MIGRATE_TO"), "{t}");
    assert!(!t.contains("Sup3rS3cret"), "{t}");
    let o = bin()
        .args(["migrate-store", "--from", "/nonexistent.db"])
        .env("SMS_OVER_XMPP_MIGRATE_TO", url)
        .output()
        .unwrap();
    let t = text(&o);
    assert!(t.contains("no such store file"), "{t}");
    assert!(!t.contains("Sup3rS3cret"), "{t}");
}

/// #27: an unquoted secret is a TOML syntax error whose message quotes the
/// line; `check` (the unit's `ExecStartPre`) names the key, never the value.
#[test]
fn check_never_prints_a_secret_from_a_syntax_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        &dir,
        &sandbox().replace("secret = \"quickstart-secret\"", "secret = Sup3rS3cret"),
    );
    let o = bin()
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let t = text(&o);
    assert!(!t.contains("Sup3rS3cret"), "{t}");
    assert!(t.contains("secret"), "{t}");
}
