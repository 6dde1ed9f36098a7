//! # sms-store-sqlite
//!
//! The embedded default [`Store`]: one SQLite file in WAL mode with
//! `synchronous = NORMAL`. Every write is committed before the call returns,
//! so it survives the process being killed (`kill -9`, a panic, the OOM
//! killer). A power cut or kernel crash may lose the last moments of writes
//! (what WAL had not yet checkpointed to disk): the carrier then retries its
//! webhooks and users may need to resend a chat or two. We do not fsync each
//! message, which would cost far more than the risk.

use rusqlite::{params, Connection, OptionalExtension};
use sms_gateway_core::store::{
    ChatRecord, ChatState, LastChat, PendingInbound, Store, StoreError, StoreErrorKind, Transaction,
};
use sms_gateway_core::InboundSms;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Schema migrations, applied in order; `PRAGMA user_version` counts them.
const MIGRATIONS: &[&str] = &[
    // 1: chats and inbound texts.
    "CREATE TABLE chats (
        ticket INTEGER PRIMARY KEY AUTOINCREMENT,
        created INTEGER NOT NULL,
        sent INTEGER NOT NULL,
        data TEXT NOT NULL
    );
    CREATE TABLE inbound (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        account TEXT NOT NULL,
        carrier_id TEXT NOT NULL,
        received INTEGER NOT NULL,
        delivered INTEGER NOT NULL DEFAULT 0,
        data TEXT NOT NULL,
        UNIQUE (account, carrier_id)
    );
    CREATE INDEX inbound_pending ON inbound (delivered, id);",
    // 2: the receipt map, so delivery reports find their chat in the store
    // (it used to be rebuilt in memory, which grew with every text sent).
    // Rows are deleted with their chat, by key (the chat knows its ids).
    "CREATE TABLE sent_ids (
        account TEXT NOT NULL,
        carrier_id TEXT NOT NULL,
        ticket INTEGER NOT NULL,
        PRIMARY KEY (account, carrier_id)
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO sent_ids (account, carrier_id, ticket)
        SELECT json_extract(chats.data, '$.account'), ids.value, chats.ticket
        FROM chats, json_each(chats.data, '$.state.Sent.ids') AS ids
        WHERE chats.sent = 1;",
    // 3: pending inbound texts are read only at start: a scan then is
    // cheaper than keeping an index up to date on every text.
    "DROP INDEX inbound_pending;",
    // 4: each user's last chat (told after an unclean stop), and a few numbers.
    "CREATE TABLE last_chat (
        user TEXT PRIMARY KEY,
        contact_jid TEXT NOT NULL,
        created INTEGER NOT NULL,
        preview TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;",
    // 5: a carrier repeating a webhook is caught in memory (a set rebuilt
    // from this table at start, see `Seen`), not by a unique index: the
    // index was a page written with every batch, for a check the one
    // gateway on the store can make itself. The id sequence carries over.
    "CREATE TABLE inbound5 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        account TEXT NOT NULL,
        carrier_id TEXT NOT NULL,
        received INTEGER NOT NULL,
        delivered INTEGER NOT NULL DEFAULT 0,
        data TEXT NOT NULL
    );
    INSERT INTO inbound5 (id, account, carrier_id, received, delivered, data)
        SELECT id, account, carrier_id, received, delivered, data FROM inbound;
    DELETE FROM sqlite_sequence WHERE name = 'inbound5';
    UPDATE sqlite_sequence SET name = 'inbound5' WHERE name = 'inbound';
    DROP TABLE inbound;
    ALTER TABLE inbound5 RENAME TO inbound;",
    // 6: the carrier ids of expired inbound texts, kept for
    // `store.seen_days` so a webhook replayed after its text has gone is
    // still a repeat (Twilio's and SignalWire's signatures carry no time).
    // Read only when the in-memory set misses; written at expiry.
    "CREATE TABLE seen_expired (
        account TEXT NOT NULL,
        carrier_id TEXT NOT NULL,
        received INTEGER NOT NULL,
        PRIMARY KEY (account, carrier_id)
    ) WITHOUT ROWID;
    CREATE INDEX seen_expired_received ON seen_expired (received);",
];

/// A store in a SQLite file.
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// The carrier ids of the inbound texts in the store.
    seen: Mutex<Seen>,
    /// The writes, as the checkpointer sees them.
    activity: Arc<Activity>,
    /// Whether a transaction is open (at most one is).
    open: std::sync::atomic::AtomicBool,
    /// The checkpointer: dropping the sender stops it.
    checkpointer: Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl Drop for SqliteStore {
    /// Stops the checkpointer (after its last checkpoint), so the file is
    /// closed, and its lock released, when this returns.
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.checkpointer.take() {
            drop(stop);
            let _ = thread.join();
        }
    }
}

/// How often the checkpointer looks at the store.
const CHECKPOINT_POLL: Duration = Duration::from_millis(100);
/// A pause in writes this long lets the checkpointer run.
const CHECKPOINT_IDLE: Duration = Duration::from_millis(250);
/// A WAL this large is checkpointed even while writes go on; the WAL file
/// is cut back to this size when it is reused.
const WAL_CAP: u64 = 64 << 20;

/// The inbound texts' (account, carrier id) pairs, so a webhook the
/// carrier repeats is recognised without an index on disk. Each pair is
/// kept as 128 bits of two independently keyed hashes (the set is rebuilt
/// at every start, so the keys need not last): about 20 bytes a text, for
/// as long as the store keeps it (`keep_days`). A pair added in a batch
/// that is then not committed is taken out again, so the carrier's retry of
/// that webhook is stored, not dropped as a repeat.
struct Seen {
    keys: std::collections::HashSet<u128>,
    /// Added since the batch began.
    batch: Vec<u128>,
    hashers: (std::hash::RandomState, std::hash::RandomState),
}

impl Seen {
    fn new() -> Self {
        Seen {
            keys: Default::default(),
            batch: vec![],
            hashers: (Default::default(), Default::default()),
        }
    }

    fn key(&self, account: &str, carrier_id: &str) -> u128 {
        use std::hash::BuildHasher;
        let pair = (account, carrier_id);
        (u128::from(self.hashers.0.hash_one(pair)) << 64)
            | u128::from(self.hashers.1.hash_one(pair))
    }

    /// The key of a row whose first two columns are account and carrier id.
    fn key_of_row(&self, r: &rusqlite::Row<'_>) -> Result<u128, StoreError> {
        let text = |i| r.get_ref(i).and_then(|v| Ok(v.as_str()?)).map_err(err);
        Ok(self.key(text(0)?, text(1)?))
    }

    /// The batch is durable: its pairs stay.
    fn committed(&mut self) {
        self.batch.clear();
    }

    /// The batch is gone: so are its pairs.
    fn rolled_back(&mut self) {
        for k in self.batch.drain(..) {
            self.keys.remove(&k);
        }
    }
}

/// What the checkpointer needs to know of the writes.
struct Activity {
    /// When the last write happened, in milliseconds since `start`.
    last_write_ms: AtomicU64,
    /// Bytes in the WAL waiting to be checkpointed (SQLite's WAL hook
    /// reports them after each commit); none when 0.
    wal_bytes: AtomicU64,
    start: std::time::Instant,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

/// Checkpoints the WAL from its own thread. A checkpoint copies the WAL
/// into the database file and fsyncs it, which takes tens of milliseconds
/// on a busy disk, and the store's one connection (exclusive mode) is
/// held meanwhile. So it waits for a pause in writes
/// ([`CHECKPOINT_IDLE`]), or for the WAL to reach [`WAL_CAP`] under
/// sustained traffic. SQLite would otherwise run it inside whichever
/// commit crossed 1,000 pages, in the middle of a message. Stops when the
/// returned sender is dropped, after a last checkpoint.
fn checkpointer(
    conn: Arc<Mutex<Connection>>,
    activity: Arc<Activity>,
) -> Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)> {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .stack_size(256 * 1024)
        .spawn(move || loop {
            let last = matches!(
                stopped.recv_timeout(CHECKPOINT_POLL),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
            );
            let idle = activity
                .now_ms()
                .saturating_sub(activity.last_write_ms.load(Ordering::Relaxed))
                >= CHECKPOINT_IDLE.as_millis() as u64;
            let waiting = activity.wal_bytes.load(Ordering::Relaxed);
            if (idle || waiting >= WAL_CAP || last) && waiting > 0 {
                let c = conn.lock().unwrap_or_else(|p| p.into_inner());
                // Not inside the Gateway's open batch: next time (the
                // bytes stay counted).
                // RESTART, not TRUNCATE: the next commit writes the WAL
                // again from its start, over file blocks the kernel already
                // has cached and allocated, which costs about half as much
                // as growing a new file (measured: docs/benchmarks.md).
                let done = c.is_autocommit()
                    && c.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))
                        .map_err(|e| tracing::warn!(error = %e, "WAL checkpoint failed; trying again later"))
                        .is_ok();
                if done {
                    activity.wal_bytes.store(0, Ordering::Relaxed);
                }
            }
            if last {
                return;
            }
        });
    match spawned {
        Ok(thread) => Some((stop, thread)),
        Err(e) => {
            tracing::warn!(error = %e, "no background checkpoints; SQLite will checkpoint inline");
            None
        }
    }
}

fn err(e: impl Into<Classified>) -> StoreError {
    let Classified(kind, message) = e.into();
    StoreError::new(kind, message)
}

/// An error with its [`StoreErrorKind`]: SQLite's codes say which.
struct Classified(StoreErrorKind, String);

impl From<rusqlite::Error> for Classified {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        let kind = match e.sqlite_error_code() {
            Some(C::DatabaseBusy | C::DatabaseLocked) => StoreErrorKind::Busy,
            Some(C::SystemIoFailure | C::DiskFull | C::CannotOpen | C::OutOfMemory) => {
                StoreErrorKind::Io
            }
            Some(C::DatabaseCorrupt | C::NotADatabase) => StoreErrorKind::Corrupt,
            _ => StoreErrorKind::Other,
        };
        Classified(kind, e.to_string())
    }
}

impl From<serde_json::Error> for Classified {
    fn from(e: serde_json::Error) -> Self {
        Classified(StoreErrorKind::Corrupt, e.to_string())
    }
}

fn in_use(path: &Path, e: rusqlite::Error) -> StoreError {
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) {
        StoreError::new(
            StoreErrorKind::Busy,
            format!(
                "{}: in use by another process (is another sms-over-xmpp running on this store?)",
                path.display()
            ),
        )
    } else {
        let Classified(kind, message) = e.into();
        StoreError::new(kind, format!("{}: {message}", path.display()))
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` and brings its schema
    /// up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // The store holds message texts and numbers: a new file is readable
        // by its owner only, whatever the umask (SQLite gives the WAL and
        // shared-memory files the same mode). An existing file is left as
        // its operator set it.
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path);
            match created {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(StoreError::new(
                        StoreErrorKind::Io,
                        format!("{}: {e}", path.display()),
                    ))
                }
            }
        }
        let mut conn = Connection::open(path).map_err(|e| in_use(path, e))?;
        // One gateway per store, and no file locks per transaction: the
        // lock is taken once, below, and held while the store is open (in
        // WAL mode this also keeps the WAL index in memory, not in a shared
        // file). Set before WAL mode, as SQLite requires for that.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| in_use(path, e))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.busy_timeout(Duration::from_secs(2)).map_err(err)?;
        conn.execute_batch("BEGIN EXCLUSIVE; COMMIT;")
            .map_err(|e| in_use(path, e))?;
        // The working set is small (pending texts, recent receipts): a
        // 512 KiB page cache instead of the default 2 MiB keeps the
        // gateway's memory small without costing reads.
        conn.pragma_update(None, "cache_size", -512).map_err(err)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        let version = usize::try_from(version).unwrap_or(0);
        if version > MIGRATIONS.len() {
            return Err(StoreError::new(
                StoreErrorKind::Corrupt,
                format!(
                    "{}: written by a newer sms-over-xmpp (schema {version}, this one knows {})",
                    path.display(),
                    MIGRATIONS.len()
                ),
            ));
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = conn.unchecked_transaction().map_err(err)?;
            tx.execute_batch(m).map_err(err)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(err)?;
            tx.commit().map_err(err)?;
        }
        // A checkpointed WAL is written again from its start and kept at
        // up to this size, instead of being emptied and grown anew.
        conn.pragma_update(None, "journal_size_limit", WAL_CAP as i64)
            .map_err(err)?;
        let page_size: u64 = conn
            .pragma_query_value(None, "page_size", |r| r.get::<_, i64>(0))
            .map_err(err)? as u64;
        let activity = Arc::new(Activity {
            last_write_ms: AtomicU64::new(0),
            // Unknown: what the migrations or an earlier run left in the
            // WAL is checkpointed at the first pause.
            wal_bytes: AtomicU64::new(1),
            start: std::time::Instant::now(),
        });
        // The hook replaces SQLite's own, which would run a checkpoint
        // inside whichever commit crossed 1,000 pages; it only counts.
        let seen = activity.clone();
        conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages| {
            seen.wal_bytes
                .store(pages as u64 * page_size, Ordering::Relaxed);
            Ok(())
        }))
        .map_err(err)?;
        let mut seen = Seen::new();
        {
            let mut q = conn
                .prepare("SELECT account, carrier_id FROM inbound")
                .map_err(err)?;
            let mut rows = q.query([]).map_err(err)?;
            while let Some(r) = rows.next().map_err(err)? {
                let key = seen.key_of_row(r)?;
                seen.keys.insert(key);
            }
        }
        let conn = Arc::new(Mutex::new(conn));
        let checkpointer = checkpointer(conn.clone(), activity.clone());
        if checkpointer.is_none() {
            // No thread to checkpoint: SQLite's own checkpoints, then.
            conn.lock()
                .unwrap_or_else(|p| p.into_inner())
                .pragma_update(None, "wal_autocheckpoint", 1000)
                .map_err(err)?;
        }
        Ok(SqliteStore {
            conn,
            seen: Mutex::new(seen),
            activity,
            open: Default::default(),
            checkpointer,
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The inbound pairs; taken after the connection, never before.
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection, for a write.
    fn writer(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.activity
            .last_write_ms
            .store(self.activity.now_ms(), Ordering::Relaxed);
        self.conn()
    }
}

/// The SQL deleting the receipt-map rows of the chats a `WHERE` on `chats c`
/// picks, by key (each chat lists its ids); built at compile time.
macro_rules! forget_sent_ids {
    ($where:literal) => {
        concat!(
            "DELETE FROM sent_ids WHERE (account, carrier_id) IN (
                SELECT json_extract(c.data, '$.account'), ids.value
                FROM chats AS c, json_each(c.data, '$.state.Sent.ids') AS ids ",
            $where,
            ")"
        )
    };
}

fn is_sent(chat: &ChatRecord) -> i64 {
    i64::from(matches!(chat.state, ChatState::Sent { .. }))
}

/// Adds a sent chat's carrier ids to the receipt map. Called only when a
/// chat becomes sent: its ids do not change after that, and ids dropped
/// since (parts reported delivered) must stay dropped.
fn index_sent(c: &Connection, ticket: u64, chat: &ChatRecord) -> Result<(), StoreError> {
    if let ChatState::Sent { ids, .. } = &chat.state {
        let mut q = c
            .prepare_cached(
                "INSERT OR IGNORE INTO sent_ids (account, carrier_id, ticket) VALUES (?1, ?2, ?3)",
            )
            .map_err(err)?;
        for id in ids {
            q.execute(params![chat.account, id, ticket as i64])
                .map_err(err)?;
        }
    }
    Ok(())
}

impl SqliteStore {
    fn insert_chat(&self, chat: &ChatRecord) -> Result<u64, StoreError> {
        let data = serde_json::to_string(chat).map_err(err)?;
        let c = self.writer();
        c.prepare_cached("INSERT INTO chats (created, sent, data) VALUES (?1, ?2, ?3)")
            .and_then(|mut q| q.execute(params![chat.created as i64, is_sent(chat), data]))
            .map_err(err)?;
        let ticket = c.last_insert_rowid() as u64;
        index_sent(&c, ticket, chat)?;
        let last = LastChat::of(chat);
        c.prepare_cached(
            "INSERT INTO last_chat (user, contact_jid, created, preview) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (user) DO UPDATE SET
                contact_jid = excluded.contact_jid, created = excluded.created, preview = excluded.preview",
        )
        .and_then(|mut q| {
            q.execute(params![
                last.user,
                last.contact_jid,
                last.created as i64,
                last.preview
            ])
        })
        .map_err(err)?;
        Ok(ticket)
    }
    fn update_chat(&self, ticket: u64, chat: &ChatRecord) -> Result<(), StoreError> {
        let data = serde_json::to_string(chat).map_err(err)?;
        let c = self.writer();
        let sent = is_sent(chat);
        // The usual update, a chat becoming sent, is one statement; its ids
        // join the receipt map then.
        let was_pending = c
            .prepare_cached("UPDATE chats SET sent = ?2, data = ?3 WHERE ticket = ?1 AND sent = 0")
            .and_then(|mut q| q.execute(params![ticket as i64, sent, data]))
            .map_err(err)?
            == 1;
        if was_pending {
            return index_sent(&c, ticket, chat);
        }
        c.prepare_cached("UPDATE chats SET sent = ?2, data = ?3 WHERE ticket = ?1")
            .and_then(|mut q| q.execute(params![ticket as i64, sent, data]))
            .map(drop)
            .map_err(err)
    }
    fn delete_chat(&self, ticket: u64) -> Result<(), StoreError> {
        let c = self.writer();
        c.prepare_cached(forget_sent_ids!("WHERE c.ticket = ?1"))
            .and_then(|mut q| q.execute(params![ticket as i64]))
            .map_err(err)?;
        c.prepare_cached("DELETE FROM chats WHERE ticket = ?1")
            .and_then(|mut q| q.execute(params![ticket as i64]))
            .map_err(err)?;
        Ok(())
    }
    fn find_sent(
        &self,
        account: &str,
        carrier_id: &str,
    ) -> Result<Option<(u64, ChatRecord)>, StoreError> {
        let c = self.conn();
        let mut q = c
            .prepare_cached(
                "SELECT chats.ticket, chats.data FROM sent_ids JOIN chats USING (ticket)
                 WHERE sent_ids.account = ?1 AND sent_ids.carrier_id = ?2",
            )
            .map_err(err)?;
        let row = q
            .query_row(params![account, carrier_id], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .optional()
            .map_err(err)?;
        let Some((ticket, data)) = row else {
            return Ok(None);
        };
        let chat = serde_json::from_str(&data).map_err(|e| {
            StoreError::new(
                StoreErrorKind::Corrupt,
                format!("chat {ticket} is unreadable: {e}"),
            )
        })?;
        Ok(Some((ticket as u64, chat)))
    }
    fn forget_sent_id(&self, account: &str, carrier_id: &str) -> Result<(), StoreError> {
        self.writer()
            .prepare_cached("DELETE FROM sent_ids WHERE account = ?1 AND carrier_id = ?2")
            .and_then(|mut q| q.execute(params![account, carrier_id]))
            .map(drop)
            .map_err(err)
    }
    fn insert_inbound(
        &self,
        account: &str,
        sms: &InboundSms,
        now: u64,
    ) -> Result<Option<u64>, StoreError> {
        let c = self.writer();
        let mut seen = self.seen();
        let key = seen.key(account, &sms.id);
        if seen.keys.contains(&key) {
            return Ok(None);
        }
        let replayed = c
            .prepare_cached("SELECT 1 FROM seen_expired WHERE account = ?1 AND carrier_id = ?2")
            .and_then(|mut q| q.exists(params![account, sms.id]))
            .map_err(err)?;
        if replayed {
            return Ok(None);
        }
        let data = serde_json::to_string(sms).map_err(err)?;
        c.prepare_cached(
            "INSERT INTO inbound (account, carrier_id, received, data) VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut q| q.execute(params![account, sms.id, now as i64, data]))
        .map_err(err)?;
        seen.keys.insert(key);
        if !c.is_autocommit() {
            seen.batch.push(key);
        }
        Ok(Some(c.last_insert_rowid() as u64))
    }
    fn update_inbound(&self, id: u64, sms: &InboundSms) -> Result<(), StoreError> {
        let data = serde_json::to_string(sms).map_err(err)?;
        self.writer()
            .prepare_cached("UPDATE inbound SET data = ?2 WHERE id = ?1 AND delivered = 0")
            .and_then(|mut q| q.execute(params![id as i64, data]))
            .map_err(err)?;
        Ok(())
    }
    fn inbound_delivered(&self, id: u64) -> Result<(), StoreError> {
        self.writer()
            .prepare_cached("UPDATE inbound SET delivered = 1, data = '' WHERE id = ?1")
            .and_then(|mut q| q.execute(params![id as i64]))
            .map_err(err)?;
        Ok(())
    }
    fn expire(&self, before: u64, seen_before: u64) -> Result<usize, StoreError> {
        let c = self.writer();
        c.execute(
            "DELETE FROM seen_expired WHERE received < ?1",
            params![seen_before as i64],
        )
        .map_err(err)?;
        c.execute(
            "INSERT OR IGNORE INTO seen_expired (account, carrier_id, received)
             SELECT account, carrier_id, received FROM inbound
             WHERE delivered = 1 AND received < ?1 AND received >= ?2",
            params![before as i64, seen_before as i64],
        )
        .map_err(err)?;
        c.execute(
            forget_sent_ids!("WHERE c.sent = 1 AND c.created < ?1"),
            params![before as i64],
        )
        .map_err(err)?;
        let chats = c
            .execute(
                "DELETE FROM chats WHERE sent = 1 AND created < ?1",
                params![before as i64],
            )
            .map_err(err)?;
        let mut q = c
            .prepare("DELETE FROM inbound WHERE delivered = 1 AND received < ?1 RETURNING account, carrier_id")
            .map_err(err)?;
        let mut rows = q.query(params![before as i64]).map_err(err)?;
        let mut seen = self.seen();
        let mut inbound = 0;
        while let Some(r) = rows.next().map_err(err)? {
            let key = seen.key_of_row(r)?;
            seen.keys.remove(&key);
            inbound += 1;
        }
        Ok(chats + inbound)
    }
    fn set_meta(&self, key: &str, value: u64) -> Result<(), StoreError> {
        self.writer()
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![key, value as i64],
            )
            .map(drop)
            .map_err(err)
    }
    fn begin_tx(&self) -> Result<(), StoreError> {
        let c = self.conn();
        if !c.is_autocommit() {
            // A Gateway that died mid-batch left it open; nothing of it was
            // let out, so it is dropped.
            tracing::warn!("rolling back a batch a previous Gateway left open");
            c.execute_batch("ROLLBACK").map_err(err)?;
        }
        self.seen().rolled_back();
        c.prepare_cached("BEGIN")
            .and_then(|mut q| q.execute([]))
            .map(drop)
            .map_err(err)
    }

    /// Rolls back the open transaction (dropped without a commit).
    fn rollback_tx(&self) {
        let c = self.conn();
        if !c.is_autocommit() {
            if let Err(e) = c.execute_batch("ROLLBACK") {
                tracing::error!(error = %e, "cannot roll back a transaction");
            }
        }
        self.seen().rolled_back();
    }

    fn commit_tx(&self) -> Result<(), StoreError> {
        let c = self.conn();
        let done = c
            .prepare_cached("COMMIT")
            .and_then(|mut q| q.execute([]))
            .map(drop)
            .map_err(err);
        // A failed COMMIT is taken as not done: the webhooks of the batch
        // are refused and their retries must not look like repeats (at
        // worst a text is then stored twice, never dropped).
        match done {
            Ok(()) => self.seen().committed(),
            Err(_) => self.seen().rolled_back(),
        }
        done
    }
}

impl Store for SqliteStore {
    fn begin(&self) -> Result<Box<dyn Transaction + '_>, StoreError> {
        if self.open.swap(true, Ordering::SeqCst) {
            return Err(StoreError::new(
                StoreErrorKind::Busy,
                "a transaction is already open (one gateway writes at a time)",
            ));
        }
        if let Err(e) = self.begin_tx() {
            self.open.store(false, Ordering::SeqCst);
            return Err(e);
        }
        Ok(Box::new(SqliteTx {
            store: self,
            done: false,
        }))
    }

    fn last_chats(&self) -> Result<Vec<LastChat>, StoreError> {
        let c = self.conn();
        let mut q = c
            .prepare("SELECT user, contact_jid, created, preview FROM last_chat ORDER BY user")
            .map_err(err)?;
        let rows = q
            .query_map([], |r| {
                Ok(LastChat {
                    user: r.get(0)?,
                    contact_jid: r.get(1)?,
                    created: r.get::<_, i64>(2)? as u64,
                    preview: r.get(3)?,
                })
            })
            .map_err(err)?;
        rows.collect::<Result<_, _>>().map_err(err)
    }

    fn meta(&self, key: &str) -> Result<Option<u64>, StoreError> {
        self.conn()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map(|v| v.map(|v| v as u64))
            .map_err(err)
    }

    fn chats(&self) -> Result<Vec<(u64, ChatRecord)>, StoreError> {
        let c = self.conn();
        let mut q = c
            .prepare("SELECT ticket, data FROM chats ORDER BY ticket")
            .map_err(err)?;
        let rows = q
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
            .map_err(err)?;
        let mut out = vec![];
        for row in rows {
            let (ticket, data) = row.map_err(err)?;
            match serde_json::from_str(&data) {
                Ok(chat) => out.push((ticket as u64, chat)),
                Err(e) => {
                    tracing::error!(ticket, error = %e, "skipping an unreadable chat in the store")
                }
            }
        }
        Ok(out)
    }

    fn pending_inbound(&self) -> Result<Vec<PendingInbound>, StoreError> {
        let c = self.conn();
        let mut q = c
            .prepare("SELECT id, account, data FROM inbound WHERE delivered = 0 ORDER BY id")
            .map_err(err)?;
        let rows = q
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(err)?;
        let mut out = vec![];
        for row in rows {
            let (id, account, data) = row.map_err(err)?;
            match serde_json::from_str(&data) {
                Ok(sms) => out.push(PendingInbound {
                    id: id as u64,
                    account,
                    sms,
                }),
                Err(e) => {
                    tracing::error!(id, error = %e, "skipping an unreadable inbound text in the store")
                }
            }
        }
        Ok(out)
    }
}

/// A transaction on a [`SqliteStore`]: `BEGIN` at its start, `COMMIT` at
/// its commit, `ROLLBACK` when dropped without one.
struct SqliteTx<'a> {
    store: &'a SqliteStore,
    done: bool,
}

impl Transaction for SqliteTx<'_> {
    sms_gateway_core::delegate_writes!();

    fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        self.done = true;
        self.store.commit_tx()
    }
}

impl Drop for SqliteTx<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.store.rollback_tx();
        }
        self.store.open.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests;
