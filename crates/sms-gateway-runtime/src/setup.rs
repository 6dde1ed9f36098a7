//! Setting carrier accounts up from the command line: `check --online`
//! (are the credentials right, does the account hold each number, where do
//! the numbers' inbound texts go) and `configure-carrier` (point them at
//! this gateway), through each carrier's own API
//! ([`PstnProvider::whoami`], [`PstnProvider::find_number`],
//! [`PstnProvider::point_number`]).
//!
//! The numbers looked at are the configured users' and each account's
//! `registration_numbers`; users who registered from their client have one
//! of the latter.

use crate::config::Config;
pub use crate::provider::NumberSetup;
use crate::provider::PstnProvider;
use crate::PhoneNumber;
use crate::Providers;
use crate::{ProviderError, ProviderErrorKind};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

/// What one line of a report says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Right as it is.
    Ok,
    /// Changed just now (`configure-carrier`).
    Changed,
    /// Would be changed (`configure-carrier --dry-run`).
    WouldChange,
    /// Wrong, and the detail says what to do.
    Fix,
    /// Could not be checked or changed (credentials refused, carrier down).
    Failed,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Ok => "ok",
            Verdict::Changed => "changed",
            Verdict::WouldChange => "would change",
            Verdict::Fix => "FIX",
            Verdict::Failed => "FAILED",
        })
    }
}

/// One line of a report: what was looked at, the verdict, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// `xmpp sms.example.com`, `account tw (twilio)`, `+15550001111 (tw)`.
    pub subject: String,
    /// The verdict.
    pub verdict: Verdict,
    /// What was found, and what to do when it is wrong.
    pub detail: String,
}

/// What `check --online` or `configure-carrier` found, line by line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The lines, in the order they were checked.
    pub rows: Vec<Row>,
}

impl Report {
    /// Adds a line.
    pub fn push(
        &mut self,
        subject: impl Into<String>,
        verdict: Verdict,
        detail: impl Into<String>,
    ) {
        self.rows.push(Row {
            subject: subject.into(),
            verdict,
            detail: detail.into(),
        });
    }

    /// Whether nothing needs fixing (changes made or planned are fine).
    pub fn all_ok(&self) -> bool {
        self.rows
            .iter()
            .all(|r| !matches!(r.verdict, Verdict::Fix | Verdict::Failed))
    }

    /// The report as an aligned table, one line a row, with a header.
    pub fn table(&self) -> String {
        let wide = |f: &dyn Fn(&Row) -> usize, head: &str| {
            self.rows.iter().map(f).max().unwrap_or(0).max(head.len())
        };
        let v = wide(&|r| r.verdict.to_string().len(), "RESULT");
        let s = wide(&|r| r.subject.chars().count(), "WHAT");
        let mut out = format!("{:v$}  {:s$}  DETAIL\n", "RESULT", "WHAT");
        for r in &self.rows {
            out.push_str(&format!(
                "{:v$}  {:s$}  {}\n",
                r.verdict.to_string(),
                r.subject,
                r.detail
            ));
        }
        out
    }
}

/// One account's part: its numbers and the URL their texts should reach.
struct Account<'a> {
    name: &'a str,
    kind: &'a str,
    provider: &'a Arc<dyn PstnProvider>,
    /// `{public_url}/{account}/message`.
    url: String,
    numbers: Vec<PhoneNumber>,
}

/// Each account with the numbers it should hold: the configured users'
/// and its `registration_numbers`, each once.
fn accounts<'a>(
    config: &'a Config,
    running: &'a BTreeMap<String, crate::accounts::Account>,
) -> Vec<Account<'a>> {
    running
        .iter()
        .map(|(name, account)| {
            let p = &config.providers[name.as_str()];
            let numbers: BTreeSet<PhoneNumber> = config
                .users
                .iter()
                .filter(|u| &u.provider == name)
                .map(|u| u.number.as_str())
                .chain(p.registration_numbers.iter().map(String::as_str))
                .filter_map(|n| PhoneNumber::parse(n, None).ok())
                .collect();
            Account {
                name,
                kind: &p.kind,
                provider: &account.provider,
                url: account
                    .provider
                    .inbound_url(&format!("{}/{name}/message", config.http.public_base())),
                numbers: numbers.into_iter().collect(),
            }
        })
        .collect()
}

/// Tries a set-up call up to three times while the carrier asks us to slow
/// down (429: waiting what `Retry-After` says, at most 10 s, else 1 s) or
/// cannot be reached (the request never left, so trying again changes
/// nothing twice). Set-up calls are few and someone waits for them.
async fn patiently<T, F, Fut>(mut call: F) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ProviderError>>,
{
    let mut tries = 1;
    loop {
        match call().await {
            Err(e)
                if tries < 3
                    && matches!(
                        e.kind,
                        ProviderErrorKind::RateLimited | ProviderErrorKind::Network
                    ) =>
            {
                tries += 1;
                let wait = e
                    .retry_after
                    .unwrap_or(std::time::Duration::from_secs(1))
                    .min(std::time::Duration::from_secs(10));
                tracing::info!(error = %e, ?wait, "the carrier asks us to wait; trying again");
                tokio::time::sleep(wait).await;
            }
            r => return r,
        }
    }
}

/// A carrier's refusal in words, with what to do about credentials.
fn refusal(account: &str, e: &ProviderError) -> String {
    match e.kind {
        ProviderErrorKind::Unauthorized => {
            format!("credentials refused: {e}; check the credentials in [providers.{account}]")
        }
        _ => e.to_string(),
    }
}

/// Asks the account who it is; `false` (with a line saying why) when its
/// credentials do not work, so its numbers are not asked about.
async fn whoami(a: &Account<'_>, report: &mut Report) -> bool {
    let subject = format!("account {} ({})", a.name, a.kind);
    match patiently(|| a.provider.whoami()).await {
        Ok(who) => {
            report.push(subject, Verdict::Ok, format!("credentials accepted: {who}"));
            true
        }
        Err(e) => {
            report.push(subject, Verdict::Failed, refusal(a.name, &e));
            false
        }
    }
}

/// Looks `number` up; a line saying why when it cannot be used.
async fn find(a: &Account<'_>, number: &PhoneNumber, report: &mut Report) -> Option<NumberSetup> {
    let subject = format!("{number} ({})", a.name);
    match patiently(|| a.provider.find_number(number)).await {
        Ok(Some(setup)) => Some(setup),
        Ok(None) => {
            report.push(
                subject,
                Verdict::Fix,
                "not a number of this account: texts from it will be refused; \
                 buy or port it into the account, or fix the number in the config",
            );
            None
        }
        Err(e) => {
            report.push(subject, Verdict::Failed, refusal(a.name, &e));
            None
        }
    }
}

/// `check --online`'s carrier part: each account's credentials, then each
/// of its numbers: held by the account, and where its inbound texts go.
pub async fn check(config: &Config, providers: &Providers, report: &mut Report) {
    let running = providers.accounts.snapshot();
    for a in accounts(config, &running) {
        if !whoami(&a, report).await {
            continue;
        }
        for number in &a.numbers {
            let Some(setup) = find(&a, number, report).await else {
                continue;
            };
            let subject = format!("{number} ({})", a.name);
            if setup.points_at(&a.url) {
                report.push(
                    subject,
                    Verdict::Ok,
                    format!("inbound texts go to {}", a.url),
                );
            } else if let Some(why) = setup.blocked {
                report.push(subject, Verdict::Fix, why);
            } else {
                report.push(
                    subject,
                    Verdict::Fix,
                    format!(
                        "inbound texts go to {}, not {}: run `sms-over-xmpp configure-carrier`",
                        setup.now(),
                        a.url
                    ),
                );
            }
        }
    }
}

/// `configure-carrier`: points each number's inbound texts at its
/// account's message hook, changing only what is wrong (with `dry_run`,
/// only saying what it would change). What one change covers (a Telnyx
/// messaging profile) is changed once.
pub async fn configure(config: &Config, providers: &Providers, dry_run: bool, report: &mut Report) {
    let running = providers.accounts.snapshot();
    for a in accounts(config, &running) {
        if !whoami(&a, report).await {
            continue;
        }
        let mut done = BTreeSet::new();
        for number in &a.numbers {
            let Some(setup) = find(&a, number, report).await else {
                continue;
            };
            let subject = format!("{number} ({})", a.name);
            if setup.points_at(&a.url) {
                report.push(subject, Verdict::Ok, format!("already goes to {}", a.url));
                continue;
            }
            if let Some(why) = setup.blocked {
                report.push(subject, Verdict::Fix, why);
                continue;
            }
            if done.contains(&setup.handle) {
                report.push(
                    subject,
                    Verdict::from(dry_run),
                    format!("with its {} (above)", setup.handle_name),
                );
                continue;
            }
            let change = format!("{}: {} → {}", setup.handle_name, setup.now(), a.url);
            if dry_run {
                report.push(subject, Verdict::WouldChange, change);
                done.insert(setup.handle);
                continue;
            }
            match patiently(|| a.provider.point_number(&setup, &a.url)).await {
                Ok(()) => {
                    report.push(subject, Verdict::Changed, change);
                    done.insert(setup.handle);
                }
                Err(e) => report.push(subject, Verdict::Failed, refusal(a.name, &e)),
            }
        }
    }
}

impl From<bool> for Verdict {
    /// The verdict for a change: planned (`dry_run`) or made.
    fn from(dry_run: bool) -> Self {
        if dry_run {
            Verdict::WouldChange
        } else {
            Verdict::Changed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[xmpp]
server = "127.0.0.1:5347"
domain = "sms.example.com"
secret = "s"
[http]
listen = "127.0.0.1:8080"
public_url = "https://sms.example.com/hooks/"
[providers.sb]
type = "sandbox"
token = "sandbox-test-token"
registration_numbers = ["+15550002222", "+15550001111"]
[[users]]
jid = "alice@example.com"
number = "+15550001111"
provider = "sb"
"#;

    #[tokio::test]
    async fn the_sandbox_checks_out_and_needs_no_change() {
        let config = Config::from_toml(CONFIG).unwrap();
        let providers = config.validate(&crate::sandbox::registry()).unwrap();
        let mut r = Report::default();
        check(&config, &providers, &mut r).await;
        assert!(r.all_ok(), "{}", r.table());
        // The user's number and the second registration number, each once.
        let subjects: Vec<&str> = r.rows.iter().map(|r| r.subject.as_str()).collect();
        assert_eq!(
            subjects,
            [
                "account sb (sandbox)",
                "+15550001111 (sb)",
                "+15550002222 (sb)"
            ]
        );
        assert_eq!(
            r.rows[1].detail,
            "inbound texts go to https://sms.example.com/hooks/sb/message"
        );
        let mut r = Report::default();
        configure(&config, &providers, false, &mut r).await;
        assert!(
            r.rows.iter().all(|r| r.verdict == Verdict::Ok),
            "{}",
            r.table()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_down_is_waited_out_three_times_at_most() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = AtomicUsize::new(0);
        let slow = || {
            calls.fetch_add(1, Ordering::Relaxed);
            let mut e = ProviderError::new(ProviderErrorKind::RateLimited, "slow down");
            e.retry_after = Some(std::time::Duration::from_secs(60));
            std::future::ready(Err::<(), _>(e))
        };
        let started = tokio::time::Instant::now();
        assert!(patiently(slow).await.is_err());
        assert_eq!(calls.load(Ordering::Relaxed), 3);
        // Retry-After is capped at 10 s a wait.
        assert_eq!(started.elapsed(), std::time::Duration::from_secs(20));
        calls.store(0, Ordering::Relaxed);
        let refused = || {
            calls.fetch_add(1, Ordering::Relaxed);
            std::future::ready(Err::<(), _>(ProviderError::new(
                ProviderErrorKind::Unauthorized,
                "no",
            )))
        };
        assert!(patiently(refused).await.is_err());
        assert_eq!(calls.load(Ordering::Relaxed), 1, "a refusal is not retried");
    }

    #[test]
    fn points_at_wants_the_url_by_post() {
        let mut s = NumberSetup {
            handle: "PN1".into(),
            handle_name: "number PN1".into(),
            inbound_url: Some("https://x/tw/message".into()),
            method: Some("POST".into()),
            blocked: None,
        };
        assert!(s.points_at("https://x/tw/message"));
        assert!(!s.points_at("https://x/tw/message/"));
        s.method = Some("GET".into());
        assert!(!s.points_at("https://x/tw/message"));
        assert_eq!(s.now(), "https://x/tw/message by GET");
        s.method = None;
        assert!(s.points_at("https://x/tw/message"));
        s.inbound_url = Some(String::new());
        assert_eq!(s.now(), "nowhere");
    }

    #[test]
    fn the_table_is_aligned_and_fixes_fail_it() {
        let mut r = Report::default();
        r.push("xmpp sms.example.com", Verdict::Ok, "logged in");
        r.push(
            "+15550001111 (tw)",
            Verdict::WouldChange,
            "number PN1: nowhere → u",
        );
        assert!(r.all_ok());
        assert_eq!(
            r.table(),
            "RESULT        WHAT                  DETAIL\n\
             ok            xmpp sms.example.com  logged in\n\
             would change  +15550001111 (tw)     number PN1: nowhere → u\n"
        );
        r.push(
            "account tw (twilio)",
            Verdict::Failed,
            "credentials refused",
        );
        assert!(!r.all_ok());
    }
}
