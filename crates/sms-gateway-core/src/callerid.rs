//! Caller ID: names for phone numbers, from the config's `[caller_id]` table
//! and, for the rest, from an optional `lookup` command.
//!
//! The command runs with `FROM` (the contact's number) and `TO` (the user's
//! number) in an otherwise empty environment (but for a plain `PATH`: the
//! gateway's own environment may hold its secrets), no arguments and no
//! standard input; the first line of its standard output is the name (empty:
//! no name), of which at most [`MAX_OUTPUT`] bytes are read. It gets
//! [`LOOKUP_TIMEOUT`] and is killed after that. Results, names and
//! non-names alike, are cached per (contact, user) pair, since the command
//! may answer differently for different users; a pair is looked up once.
//!
//! [`CallerId::name_now`] never waits for the command: the XMPP process
//! asks it on its read and write paths, where a 3 s lookup would stall every
//! user. It answers from the table or the cache, or starts the lookup in the
//! background (at most [`MAX_LOOKUPS`] at once) and answers "not yet".

use crate::phone::PhoneNumber;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// How long the lookup command may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);
/// How many lookups run at once.
pub const MAX_LOOKUPS: usize = 4;
/// How much of the command's output is read.
pub const MAX_OUTPUT: usize = 4096;
/// How many found names may wait for the Gateway ([`CallerId::learned`]).
const LEARNED_QUEUE: usize = 256;
/// How many looked-up results are remembered.
const CACHE_SIZE: usize = 10_000;
/// How many lookups may wait for their turn; past that, none is started.
const MAX_WAITING: usize = 1_000;
/// Lookups started in the background per user and minute, after a burst
/// of [`LOOKUP_BURST`]: a user asking for the vCards of a range of numbers
/// (or joining rooms of many) cannot make the command run without limit
/// (#26). Past it the contact has no name for now; a later chat asks again.
pub const LOOKUPS_PER_MINUTE: u32 = 6;
/// The burst of those lookups.
pub const LOOKUP_BURST: u32 = 30;

/// (contact, user)
type Pair = (PhoneNumber, PhoneNumber);

/// The config's `[caller_id]`: names, and the lookup command.
#[derive(Debug, Default)]
struct Names {
    names: HashMap<PhoneNumber, String>,
    lookup: Option<PathBuf>,
}

impl Names {
    /// Keys that do not parse are skipped: `Config::validate` refuses them.
    fn read(table: &BTreeMap<String, String>) -> Self {
        let mut names = HashMap::new();
        let mut lookup = None;
        for (k, v) in table {
            if k == "lookup" {
                lookup = Some(PathBuf::from(v));
            } else if let Ok(n) = PhoneNumber::parse(k, None) {
                names.insert(n, v.clone());
            }
        }
        Names { names, lookup }
    }
}

/// Names for numbers.
#[derive(Debug)]
pub struct CallerId {
    /// The `[caller_id]` table and command; replaced by a reload.
    table: std::sync::RwLock<Names>,
    cache: Mutex<lru::LruCache<Pair, Option<String>>>,
    /// Pairs whose lookup has been started and has not finished.
    pending: Mutex<HashSet<Pair>>,
    running: Arc<tokio::sync::Semaphore>,
    /// Told of each name a background lookup finds ([`CallerId::learned`]).
    learned: Mutex<Option<tokio::sync::mpsc::Sender<Pair>>>,
    /// Each user's allowance of background lookups (keyed by the user's
    /// number: users only, so bounded by the directory).
    budget: Mutex<crate::rate::Buckets>,
    /// Lookups not started because their user's allowance was spent.
    refused: std::sync::atomic::AtomicU64,
}

impl Default for CallerId {
    fn default() -> Self {
        CallerId::from_table(&BTreeMap::new())
    }
}

impl CallerId {
    /// From the config's `[caller_id]` table (keys that do not parse are
    /// skipped: `Config::validate` refuses them).
    pub fn from_table(table: &BTreeMap<String, String>) -> Self {
        CallerId {
            table: std::sync::RwLock::new(Names::read(table)),
            cache: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(CACHE_SIZE).expect("not zero"),
            )),
            pending: Mutex::default(),
            running: Arc::new(tokio::sync::Semaphore::new(MAX_LOOKUPS)),
            learned: Mutex::default(),
            budget: Mutex::new(crate::rate::Buckets::new(LOOKUPS_PER_MINUTE, LOOKUP_BURST)),
            refused: Default::default(),
        }
    }

    /// How many background lookups were not started because their user's
    /// allowance ([`LOOKUPS_PER_MINUTE`]) was spent.
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Replaces the table and the command (a reload of the config); what
    /// earlier lookups found is forgotten.
    pub fn replace_table(&self, table: &BTreeMap<String, String>) {
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Names::read(table);
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn names(&self) -> std::sync::RwLockReadGuard<'_, Names> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    /// What is known now without running anything: `Some(name or no
    /// name)` from the table or the cache, `None` when only the command
    /// can tell.
    fn known(&self, contact: &PhoneNumber, user: &PhoneNumber) -> Option<Option<String>> {
        {
            let t = self.names();
            if let Some(n) = t.names.get(contact) {
                return Some(Some(n.clone()));
            }
            if t.lookup.is_none() {
                return Some(None);
            }
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(&(contact.clone(), user.clone())).cloned()
    }

    fn remember(&self, pair: Pair, found: Option<String>) {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(pair, found);
    }

    /// The name for `contact`, as seen by the user whose number is `user`,
    /// waiting for the lookup command if it must run (in turn with the
    /// other lookups).
    pub async fn name(&self, contact: &PhoneNumber, user: &PhoneNumber) -> Option<String> {
        if let Some(known) = self.known(contact, user) {
            return known;
        }
        let program = self.names().lookup.clone()?;
        let program = &program;
        let _turn = self.running.acquire().await.expect("never closed");
        let found = run_lookup(program, contact, user).await;
        self.remember((contact.clone(), user.clone()), found.clone());
        found
    }

    /// The name if it is known now (`Some(None)`: known to have none).
    /// Otherwise `None`, and the lookup runs in the background, once per
    /// pair, so a later call knows. Never waits; needs a tokio runtime.
    pub fn name_now(
        self: &Arc<Self>,
        contact: &PhoneNumber,
        user: &PhoneNumber,
    ) -> Option<Option<String>> {
        if let Some(known) = self.known(contact, user) {
            return Some(known);
        }
        let pair = (contact.clone(), user.clone());
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.contains(&pair) || pending.len() >= MAX_WAITING {
                return None;
            }
            let allowed = self
                .budget
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(user.as_str(), 1, std::time::Instant::now())
                .is_ok();
            if !allowed {
                self.refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return None;
            }
            pending.insert(pair.clone());
        }
        let me = self.clone();
        tokio::spawn(async move {
            let found = me.name(&pair.0, &pair.1).await;
            let named = found.is_some();
            me.remember(pair.clone(), found);
            me.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&pair);
            if named {
                let tell = me.learned.lock().unwrap_or_else(|p| p.into_inner()).clone();
                if let Some(tell) = tell {
                    // Full: the name comes with the pair's next text instead.
                    let _ = tell.try_send(pair);
                }
            }
        });
        None
    }

    /// (contact, user) pairs whose name a background lookup has just found
    /// (the Gateway renames the contact in the user's roster). One
    /// receiver: a second call replaces the first.
    pub fn learned(&self) -> tokio::sync::mpsc::Receiver<(PhoneNumber, PhoneNumber)> {
        let (tx, rx) = tokio::sync::mpsc::channel(LEARNED_QUEUE);
        *self.learned.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        rx
    }
}

async fn run_lookup(
    program: &PathBuf,
    contact: &PhoneNumber,
    user: &PhoneNumber,
) -> Option<String> {
    let child = tokio::process::Command::new(program)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("FROM", contact.as_str())
        .env("TO", user.as_str())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(program = %program.display(), error = %e, "caller ID lookup cannot start");
            return None;
        }
    };
    let stdout = child.stdout.take()?;
    let read = async move {
        let mut out = Vec::with_capacity(256);
        stdout
            .take(MAX_OUTPUT as u64)
            .read_to_end(&mut out)
            .await
            .map(|_| out)
    };
    let out = match tokio::time::timeout(LOOKUP_TIMEOUT, read).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "caller ID lookup failed");
            return None;
        }
        Err(_) => {
            tracing::warn!(program = %program.display(), "caller ID lookup timed out");
            return None;
        }
    };
    // Whatever it still has to say is not read; it is done.
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
    let text = String::from_utf8_lossy(&out);
    let name = text.lines().next().unwrap_or("").trim();
    // A name is for display: keep it short and printable.
    let name: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
    (!name.is_empty()).then_some(name)
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

    /// The lookup sees only FROM, TO and PATH (the gateway's environment
    /// may hold its secrets); its output is read up to 4 KiB; names are
    /// per (contact, user) pair.
    #[tokio::test]
    async fn the_command_sees_no_secrets_its_output_is_bounded_and_names_are_per_user() {
        std::env::set_var("SOX_CALLERID_TEST_SECRET", "leaked");
        let dir = tempfile::tempdir().unwrap();
        let program = script(
            &dir,
            "if env | grep -q leaked; then echo leaked; exit; fi\n\
             if [ \"$TO\" = +15550002222 ]; then head -c 1000000 /dev/zero | tr '\\0' x; exit; fi\n\
             echo \"For $TO\"",
        );
        let mut table = BTreeMap::new();
        table.insert("lookup".to_owned(), program);
        let c = CallerId::from_table(&table);
        let contact = n("+15559998888");
        assert_eq!(
            c.name(&contact, &n("+15550001111")).await.as_deref(),
            Some("For +15550001111")
        );
        // A megabyte on one line: read 4 KiB of it, keep 64 characters.
        let long = c.name(&contact, &n("+15550002222")).await.unwrap();
        assert_eq!(long, "x".repeat(64));
        assert_eq!(
            c.name(&contact, &n("+15550001111")).await.as_deref(),
            Some("For +15550001111"),
            "user B's answer is not user A's"
        );
    }

    /// `name_now` never waits: the first call starts the lookup and says
    /// "not yet"; once it has run, the name is known.
    #[tokio::test]
    async fn name_now_answers_at_once_and_looks_up_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let mut table = BTreeMap::new();
        table.insert("lookup".to_owned(), script(&dir, "sleep 0.2; echo Later"));
        table.insert("+15557654321".to_owned(), "Jane".to_owned());
        let c = Arc::new(CallerId::from_table(&table));
        let (contact, user) = (n("+15559998888"), n("+15550001111"));
        assert_eq!(
            c.name_now(&n("+15557654321"), &user),
            Some(Some("Jane".into()))
        );
        let started = std::time::Instant::now();
        assert_eq!(c.name_now(&contact, &user), None);
        assert_eq!(c.name_now(&contact, &user), None, "one lookup per pair");
        assert!(started.elapsed() < Duration::from_millis(100));
        for _ in 0..50 {
            if let Some(found) = c.name_now(&contact, &user) {
                assert_eq!(found.as_deref(), Some("Later"));
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the background lookup never finished");
    }

    /// A user asking for the names of many numbers (vCards for a range,
    /// rooms of many) runs the command at most [`LOOKUP_BURST`] times at
    /// once, then [`LOOKUPS_PER_MINUTE`]; another user is not held back.
    #[tokio::test]
    async fn each_user_has_a_lookup_allowance() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("calls");
        let mut table = BTreeMap::new();
        table.insert(
            "lookup".to_owned(),
            script(&dir, &format!("echo \"$FROM\" >> {}", log.display())),
        );
        let c = Arc::new(CallerId::from_table(&table));
        let greedy = n("+15550001111");
        for i in 0..1000 {
            let contact = n(&format!("+1555200{i:04}"));
            assert_eq!(c.name_now(&contact, &greedy), None);
        }
        assert_eq!(c.refused(), 1000 - u64::from(LOOKUP_BURST));
        // Someone else still gets a lookup.
        assert_eq!(c.name_now(&n("+15559998888"), &n("+15550002222")), None);
        assert_eq!(c.refused(), 1000 - u64::from(LOOKUP_BURST));
        for _ in 0..100 {
            let runs = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .count();
            if runs == LOOKUP_BURST as usize + 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "expected {} runs, saw {:?}",
            LOOKUP_BURST + 1,
            std::fs::read_to_string(&log)
        );
    }
}
