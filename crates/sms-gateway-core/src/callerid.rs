//! Caller ID: names for phone numbers, from the config's `[caller_id]` table
//! and, for the rest, from an optional `lookup` command.
//!
//! The command runs with `FROM` (the contact's number) and `TO` (the user's
//! number) in its environment, no arguments and no standard input; the first
//! line of its standard output is the name (empty: no name). It gets
//! [`LOOKUP_TIMEOUT`] and is killed after that. Results, names and
//! non-names alike, are cached so a number is looked up once.

use crate::phone::PhoneNumber;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// How long the lookup command may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);
/// How many looked-up results are remembered.
const CACHE_SIZE: usize = 10_000;

/// Names for numbers.
#[derive(Debug, Default)]
pub struct CallerId {
    names: HashMap<PhoneNumber, String>,
    lookup: Option<PathBuf>,
    cache: Mutex<HashMap<PhoneNumber, Option<String>>>,
}

impl CallerId {
    /// From the config's `[caller_id]` table (keys that do not parse are
    /// skipped: `Config::validate` refuses them).
    pub fn from_table(table: &BTreeMap<String, String>) -> Self {
        let mut names = HashMap::new();
        let mut lookup = None;
        for (k, v) in table {
            if k == "lookup" {
                lookup = Some(PathBuf::from(v));
            } else if let Ok(n) = PhoneNumber::parse(k, None) {
                names.insert(n, v.clone());
            }
        }
        CallerId {
            names,
            lookup,
            cache: Mutex::default(),
        }
    }

    /// The name for `contact`, as seen by the user whose number is `user`.
    pub async fn name(&self, contact: &PhoneNumber, user: &PhoneNumber) -> Option<String> {
        if let Some(n) = self.names.get(contact) {
            return Some(n.clone());
        }
        let program = self.lookup.as_ref()?;
        if let Some(hit) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(contact)
        {
            return hit.clone();
        }
        let found = run_lookup(program, contact, user).await;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_SIZE {
            cache.clear();
        }
        cache.insert(contact.clone(), found.clone());
        found
    }
}

async fn run_lookup(
    program: &PathBuf,
    contact: &PhoneNumber,
    user: &PhoneNumber,
) -> Option<String> {
    let child = tokio::process::Command::new(program)
        .env("FROM", contact.as_str())
        .env("TO", user.as_str())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(program = %program.display(), error = %e, "caller ID lookup cannot start");
            return None;
        }
    };
    match tokio::time::timeout(LOOKUP_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let name = text.lines().next().unwrap_or("").trim();
            // A name is for display: keep it short and printable.
            let name: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
            (!name.is_empty()).then_some(name)
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "caller ID lookup failed");
            None
        }
        Err(_) => {
            tracing::warn!(program = %program.display(), "caller ID lookup timed out");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn n(s: &str) -> PhoneNumber {
        PhoneNumber::parse(s, None).unwrap()
    }

    fn script(dir: &tempfile::TempDir, body: &str) -> String {
        let p = dir.path().join("lookup.sh");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.display().to_string()
    }

    #[tokio::test]
    async fn names_from_config_then_from_the_command_with_from_and_to() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("calls");
        let program = script(
            &dir,
            &format!(
                "echo \"$FROM $TO\" >> {}\necho \"Caller $FROM\"\necho second line",
                log.display()
            ),
        );
        let mut table = BTreeMap::new();
        table.insert("+15557654321".to_owned(), "Jane Roe".to_owned());
        table.insert("lookup".to_owned(), program);
        let c = CallerId::from_table(&table);
        let user = n("+15550001111");
        assert_eq!(
            c.name(&n("+15557654321"), &user).await.as_deref(),
            Some("Jane Roe")
        );
        assert_eq!(
            c.name(&n("+15559998888"), &user).await.as_deref(),
            Some("Caller +15559998888")
        );
        assert_eq!(
            c.name(&n("+15559998888"), &user).await.as_deref(),
            Some("Caller +15559998888")
        );
        let calls = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            calls, "+15559998888 +15550001111\n",
            "run once with FROM and TO, then cached"
        );
    }

    #[tokio::test]
    async fn a_slow_or_silent_command_gives_no_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut table = BTreeMap::new();
        table.insert("lookup".to_owned(), script(&dir, "true"));
        assert_eq!(
            CallerId::from_table(&table)
                .name(&n("+15559998888"), &n("+15550001111"))
                .await,
            None
        );
        table.insert("lookup".to_owned(), "/nonexistent/lookup".to_owned());
        assert_eq!(
            CallerId::from_table(&table)
                .name(&n("+15559998888"), &n("+15550001111"))
                .await,
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_command_is_killed_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let mut table = BTreeMap::new();
        table.insert("lookup".to_owned(), script(&dir, "sleep 30; echo late"));
        let c = CallerId::from_table(&table);
        assert_eq!(c.name(&n("+15559998888"), &n("+15550001111")).await, None);
    }
}
