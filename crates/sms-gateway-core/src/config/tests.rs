//! Tests of `config.rs`.

use super::*;
use crate::Providers;

const GOOD: &str = r#"
[xmpp]
server = "127.0.0.1:5347"
domain = "sms.example.com"
secret = "s3cret"

[http]
listen = "127.0.0.1:9677"
public_url = "https://sms.example.com/hooks/"

[phone]
default_prefix = "+1"

[providers.main]
type = "sandbox"
token = "sandbox-test-token"

[[users]]
jid = "Alice@Example.com"
number = "+15550001111"
provider = "main"
"#;

fn check(text: &str) -> Result<Providers, ConfigError> {
    Config::from_toml(text)?.validate(&crate::test_provider::registry())
}

/// Environment overrides reach the key as the exact string given
/// (figment's own reading made "0123" the number 123 and refused
/// "true"); numbers given there are still read as numbers. The only
/// test in this crate that sets variables, and they name this test.
#[test]
fn environment_overrides_keep_strings_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, GOOD).unwrap();
    let vars = [
        ("SMS_OVER_XMPP_XMPP__SECRET", "0123"),
        ("SMS_OVER_XMPP_PROVIDERS__MAIN__TOKEN", "true"),
        ("SMS_OVER_XMPP_XMPP__KEEPALIVE_SECS", "45"),
        ("SMS_OVER_XMPP_PHONE__DEFAULT_PREFIX", "+44"),
    ];
    for (k, v) in vars {
        std::env::set_var(k, v);
    }
    let cfg = Config::load(&path);
    for (k, _) in vars {
        std::env::remove_var(k);
    }
    let cfg = cfg.unwrap();
    assert_eq!(cfg.xmpp.secret.expose(), "0123");
    assert_eq!(cfg.xmpp.keepalive_secs, 45);
    assert_eq!(cfg.phone.default_prefix.as_deref(), Some("+44"));
    assert_eq!(cfg.providers["main"].settings["token"], "true");
}

/// `Debug` of a whole config shows no credential, whichever provider
/// key holds it.
#[test]
fn debug_output_holds_no_secret() {
    let text = GOOD.replace(
        "token = \"sandbox-test-token\"",
        "token = \"sandbox-test-token\"\nanything = \"provider-specific-secret\"",
    );
    let cfg = Config::from_toml(&text).unwrap();
    let shown = format!("{cfg:?}");
    for secret in ["s3cret", "sandbox-test-token", "provider-specific-secret"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(shown.contains("anything"), "{shown}");
}

/// A value of the wrong type is named by its key, never quoted: it may
/// be a secret.
#[test]
fn type_errors_do_not_quote_values() {
    let text = GOOD.replace(
        "secret = \"s3cret\"",
        "secret = \"s\"\nkeepalive_secs = \"s3cret-pasted-here\"",
    );
    let err = Config::from_toml(&text).unwrap_err().to_string();
    assert!(!err.contains("s3cret"), "{err}");
    assert!(err.contains("xmpp.keepalive_secs"), "{err}");
}

/// Values that would overflow a clock at run time are refused here,
/// naming the key.
#[test]
fn absurdly_large_values_are_refused_naming_the_key() {
    for (section, line, key) in [
        (
            "[xmpp]",
            "keepalive_secs = 9223372036854775807",
            "xmpp.keepalive_secs",
        ),
        (
            "[http]",
            "header_timeout_secs = 99999999999",
            "http.header_timeout_secs",
        ),
        (
            "[http]",
            "max_connections = 99999999999",
            "http.max_connections",
        ),
    ] {
        let text = GOOD.replacen(section, &format!("{section}\n{line}"), 1);
        let err = check(&text).unwrap_err().to_string();
        assert!(err.contains(key), "{key}: {err}");
    }
}

#[test]
fn media_settings_are_checked_naming_the_key() {
    for (lines, key) in [
        ("store = \"s3\"", "media.store"),
        ("upload_service = \"not a jid\"", "media.upload_service"),
        ("max_bytes = 0", "media.max_bytes"),
        ("max_bytes = 99999999999999", "media.max_bytes"),
        ("timeout_secs = 0", "media.timeout_secs"),
        ("keep_days = 0", "media.keep_days"),
        ("colour = \"blue\"", "colour"),
    ] {
        let err = check(&format!("{GOOD}\n[media]\n{lines}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{key}: {err}");
    }
    assert!(check(&format!(
        "{GOOD}\n[media]\nstore = \"upload\"\nupload_service = \"upload.example.com\"\n"
    ))
    .is_ok());
    let err = check(&GOOD.replace("[providers.main]", "[providers.media]"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("providers.media"), "{err}");
    let link = Config::from_toml(&format!("{GOOD}\n[media]\nstore = \"link\"\n")).unwrap();
    assert!(link.warnings().join("\n").contains("media.store"));
    let dir = MediaConfig::default().resolve_dir(Path::new("/var/lib/sox/store.db"));
    assert_eq!(dir, Path::new("/var/lib/sox/media"));
}

#[test]
fn seen_ids_may_not_be_forgotten_before_their_texts() {
    let text = format!("{GOOD}\n[store]\nkeep_days = 30\nseen_days = 7\n");
    let err = check(&text).unwrap_err().to_string();
    assert!(err.contains("store.seen_days"), "{err}");
    let text = format!("{GOOD}\n[store]\nkeep_days = 30\nseen_days = 30\n");
    assert!(check(&text).is_ok());
}

#[test]
fn plain_links_off_this_machine_are_warned_about() {
    let cfg = Config::from_toml(GOOD).unwrap();
    assert!(cfg.warnings().is_empty(), "{:?}", cfg.warnings());
    let text = GOOD
        .replace(
            "https://sms.example.com/hooks/",
            "http://sms.example.com/hooks/",
        )
        .replace("127.0.0.1:5347", "xmpp.example.com:5347")
        .replace(
            "token = \"sandbox-test-token\"",
            "token = \"sandbox-test-token\"\napi_base = \"http://api.example.com\"",
        );
    let warnings = Config::from_toml(&text).unwrap().warnings();
    let all = warnings.join("\n");
    for key in ["http.public_url", "providers.main.api_base", "xmpp.server"] {
        assert!(all.contains(key), "{key} not in {all}");
    }
    let local = GOOD.replace(
        "https://sms.example.com/hooks/",
        "http://127.0.0.1:9677/hooks",
    );
    assert!(Config::from_toml(&local).unwrap().warnings().is_empty());
}

#[test]
fn good_config_validates() {
    let cfg = Config::from_toml(GOOD).unwrap();
    let p = cfg.validate(&crate::test_provider::registry()).unwrap();
    assert_eq!(p.accounts.names(), ["main"]);
    assert_eq!(cfg.http.public_base(), "https://sms.example.com/hooks");
    assert_eq!(cfg.http.base_path(), "/hooks");
    assert_eq!(cfg.xmpp.keepalive_secs, 30);
}

#[test]
fn secret_is_not_in_debug_output() {
    let cfg = Config::from_toml(GOOD).unwrap();
    assert!(!format!("{cfg:?}").contains("s3cret"));
}

#[test]
fn missing_key_is_named() {
    let text = GOOD.replace("secret = \"s3cret\"\n", "");
    let err = check(&text).unwrap_err().to_string();
    assert!(err.contains("secret"), "{err}");
    assert!(err.contains("missing"), "{err}");
}

#[test]
fn unknown_key_is_named() {
    let text = GOOD.replace("domain = ", "domian = \"x\"\ndomain = ");
    let err = check(&text).unwrap_err().to_string();
    assert!(err.contains("domian"), "{err}");
    // The keys it could be, each quoted once (#28: figment nested them).
    assert!(err.contains("`server`, `domain`, `secret`"), "{err}");
    assert!(!err.contains("`one of"), "{err}");
}

#[test]
fn bad_values_name_key_and_value() {
    let cases = [
        (
            "number = \"+15550001111\"",
            "number = \"555-0001\"",
            "users[0].number",
            "555-0001",
        ),
        (
            "number = \"+15550001111\"",
            "number = \"+1555\"",
            "users[0].number",
            "+1555",
        ),
        (
            "provider = \"main\"",
            "provider = \"other\"",
            "users[0].provider",
            "other",
        ),
        (
            "type = \"sandbox\"",
            "type = \"carrier-pigeon\"",
            "providers.main.type",
            "carrier-pigeon",
        ),
        (
            "public_url = \"https://sms.example.com/hooks/\"",
            "public_url = \"sms.example.com\"",
            "http.public_url",
            "sms.example.com",
        ),
        (
            "default_prefix = \"+1\"",
            "default_prefix = \"1\"",
            "phone.default_prefix",
            "1",
        ),
        (
            "jid = \"Alice@Example.com\"",
            "jid = \"alice\"",
            "users[0].jid",
            "alice",
        ),
        (
            "domain = \"sms.example.com\"",
            "domain = \"a b\"",
            "xmpp.domain",
            "a b",
        ),
        (
            "server = \"127.0.0.1:5347\"",
            "server = \"localhost\"",
            "xmpp.server",
            "localhost",
        ),
    ];
    for (from, to, key, value) in cases {
        let text = GOOD.replace(from, to);
        match check(&text) {
            Err(ConfigError::Invalid {
                key: k, value: v, ..
            }) => {
                assert_eq!((k.as_str(), v.as_str()), (key, value), "{to}");
            }
            other => panic!("{to}: expected Invalid, got {other:?}"),
        }
    }
}

#[test]
fn provider_settings_errors_name_the_key() {
    let text = GOOD.replace("token = \"sandbox-test-token\"\n", "");
    match check(&text) {
        Err(ConfigError::Invalid { key, reason, .. }) => {
            assert_eq!(key, "providers.main.token");
            assert!(reason.contains("missing"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn wrong_type_is_a_parse_error_naming_the_key() {
    let text = GOOD.replace("listen = \"127.0.0.1:9677\"", "listen = \"nowhere\"");
    let err = check(&text).unwrap_err().to_string();
    assert!(err.contains("http.listen"), "{err}");
}

#[test]
fn duplicate_user_is_refused() {
    let text = format!("{GOOD}\n[[users]]\njid = \"alice@example.com\"\nnumber = \"+15550002222\"\nprovider = \"main\"\n");
    let err = check(&text).unwrap_err().to_string();
    assert!(err.contains("users[1].jid"), "{err}");
}

#[test]
fn jid_normalisation() {
    assert_eq!(
        normalize_bare_jid("Alice@Example.COM").as_deref(),
        Some("alice@example.com")
    );
    assert_eq!(normalize_bare_jid("alice@example.com/res"), None);
    assert_eq!(normalize_bare_jid("example.com"), None);
}

#[test]
fn registration_and_admins_are_checked_naming_the_key() {
    let cases = [
        (
            "[registration]\nopen_to = [\"a@b\"]\n",
            "registration.open_to[0]",
            "a@b",
        ),
        ("[admins]\njids = [\"root\"]\n", "admins.jids[0]", "root"),
        (
            "[registration]\nopen_to = [\"example.com\"]\napproval = true\n",
            "registration.approval",
            "true",
        ),
    ];
    for (extra, key, value) in cases {
        match check(&format!("{GOOD}\n{extra}")) {
            Err(ConfigError::Invalid {
                key: k, value: v, ..
            }) => assert_eq!((k.as_str(), v.as_str()), (key, value), "{extra}"),
            other => panic!("{extra}: expected Invalid, got {other:?}"),
        }
    }
    let offered = GOOD.replace(
        "token = \"sandbox-test-token\"\n",
        "token = \"sandbox-test-token\"\nregistration_numbers = [\"+15550002222\", \"555\"]\n",
    );
    match check(&offered) {
        Err(ConfigError::Invalid { key, value, .. }) => assert_eq!(
            (key.as_str(), value.as_str()),
            ("providers.main.registration_numbers[1]", "555")
        ),
        other => panic!("{other:?}"),
    }
    let fine = format!(
        "{}\n[registration]\nopen_to = [\"example.com\"]\napproval = true\n[admins]\njids = [\"root@example.com\"]\n",
        offered.replace(", \"555\"", "")
    );
    check(&fine).expect("a good registration section");
}

/// `[cluster]` needs a PostgreSQL store, a usable instance name and a
/// lease the gateway can keep; each refusal names its key.
#[test]
fn cluster_settings_are_checked_naming_the_key() {
    let pg = "[store]\nurl = \"postgres://gw@127.0.0.1/sms\"\n";
    for (more, key) in [
        ("[cluster]\n", "cluster"),
        (
            &*format!("{pg}[cluster]\ninstance = \"a b\"\n"),
            "cluster.instance",
        ),
        (
            &*format!("{pg}[cluster]\nlease_secs = 1\n"),
            "cluster.lease_secs",
        ),
        (&*format!("{pg}[cluster]\nleases = 3\n"), "leases"),
    ] {
        let err = check(&format!("{GOOD}\n{more}")).unwrap_err().to_string();
        assert!(err.contains(key), "{key}: {err}");
    }
    let cfg = Config::from_toml(&format!("{GOOD}\n{pg}[cluster]\ninstance = \"gw-1\"\n")).unwrap();
    let member = cfg.cluster.as_ref().unwrap().member();
    assert_eq!(member.instance, "gw-1");
    assert_eq!(member.lease, std::time::Duration::from_secs(15));
    let default = Config::from_toml(&format!("{GOOD}\n{pg}[cluster]\n")).unwrap();
    let name = default.cluster.unwrap().member().instance;
    // The host name and a random part (see
    // `default_instance_names_are_the_host_s_and_never_repeat`).
    let (host, tag) = name.rsplit_once('-').expect("host-tag");
    assert!(!host.is_empty() && (1..=8).contains(&tag.len()), "{name}");
}

/// #27: an unquoted secret is a TOML syntax error, and TOML's message
/// quotes the line; `check` runs as the unit's `ExecStartPre`, so that
/// line went to the journal. The error names the line and the key, never
/// the value.
#[test]
fn a_parse_error_never_shows_a_value() {
    for (text, key) in [
        (
            "[xmpp]\nserver = \"127.0.0.1:5347\"\ndomain = \"sms.example.com\"\nsecret = Sup3rS3cret\n",
            "secret",
        ),
        (
            "[providers.main]\ntype = \"twilio\"\nauth_token = Sup3rS3cret\n",
            "auth_token",
        ),
        ("[xmpp]\nsecret = \"Sup3rS3cret\nx = 1\n", "secret"),
    ] {
        let err = Config::from_toml(text).unwrap_err().to_string();
        assert!(!err.contains("Sup3rS3cret"), "{err}");
        assert!(err.contains(key), "{err}");
        assert!(err.contains("line"), "{err}");
    }
}

/// #27: the default instance name comes from gethostname(2), which the
/// unit's `ProcSubset=pid` does not hide (it hid /proc/sys/kernel/hostname,
/// and every instance was `gateway-<pid>`), plus a random part: two starts,
/// or two machines of one name, never share it.
#[test]
fn default_instance_names_are_the_host_s_and_never_repeat() {
    let cluster: ClusterConfig = serde_json::from_value(serde_json::json!({})).unwrap();
    let (a, b) = (cluster.member().instance, cluster.member().instance);
    assert_ne!(a, b);
    let host = std::process::Command::new("hostname")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    if !host.is_empty() {
        assert!(a.starts_with(&format!("{host}-")), "{a} for host {host}");
    }
    assert!(!a.starts_with("gateway-"), "{a}");
}

/// #28: a user's number without a country code in the config, with
/// `phone.default_prefix` set, was refused with the hint "(or set
/// phone.default_prefix)", which was set and does not apply there.
#[test]
fn a_config_number_without_a_country_code_gets_the_right_hint() {
    let err = check(&GOOD.replace("number = \"+15550001111\"", "number = \"5550001111\""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("users[0].number"), "{err}");
    assert!(err.contains("international form"), "{err}");
    assert!(!err.contains("(or set phone.default_prefix)"), "{err}");
}
