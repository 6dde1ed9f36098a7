//! # sms-store-sqlite
//!
//! The embedded default [`Store`]: one SQLite file in WAL mode with
//! `synchronous = NORMAL`. Every write is committed before the call returns,
//! so it survives the process being killed (`kill -9`, a panic, the OOM
//! killer). A power cut or kernel crash may lose the last moments of writes
//! (what WAL had not yet checkpointed to disk): the carrier then retries its
//! webhooks and users may need to resend a chat or two. We do not fsync each
//! message, which would cost far more than the risk.

use rusqlite::{Connection, OptionalExtension};
use sms_gateway_core::store::{
    ChatRecord, LastChat, PendingInbound, Store, StoreError, StoreErrorKind, Transaction,
};
use sms_gateway_core::InboundSms;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A store in a SQLite file.
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// The carrier ids of the inbound texts in the store.
    seen: Mutex<Seen>,
    /// The writes, as the checkpointer sees them.
    activity: Arc<Activity>,
    /// Whether a transaction is open (at most one is).
    open: std::sync::atomic::AtomicBool,
    /// Each user's last chat of the open transaction, written once at its
    /// commit instead of once per chat (#30).
    last_chats: Mutex<std::collections::HashMap<String, sms_gateway_core::store::LastChat>>,
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

/// `seen_key(account, carrier_id)` in SQL: the pair's
/// [`sms_gateway_core::store::seen_key`], so pairs are keyed as they are
/// copied into `seen_expired` (and by migration 8).
fn add_seen_key(conn: &Connection) -> Result<(), StoreError> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        "seen_key",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let text = |i| ctx.get_raw(i).as_str().map_err(rusqlite::Error::from);
            Ok(sms_gateway_core::store::seen_key(text(0)?, text(1)?))
        },
    )
    .map_err(err)
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
        // The platform's VFS with each commit's WAL frames written in one
        // call instead of two a page (`wal`, #30).
        wal::register().map_err(|rc| {
            StoreError::new(
                StoreErrorKind::Io,
                format!("cannot register the store's SQLite VFS (SQLite error {rc})"),
            )
        })?;
        let mut conn = Connection::open_with_flags_and_vfs(
            path,
            rusqlite::OpenFlags::default(),
            wal::VFS_NAME,
        )
        .map_err(|e| in_use(path, e))?;
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
        add_seen_key(&conn)?;
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
        // The pairs not yet in `seen_expired`, from the last start or
        // before; past the bound, the oldest go there now.
        let moved: u64 = conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [seen::MOVED],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map_err(err)?
            .unwrap_or(0)
            .max(0) as u64;
        // All but the last KEPT go to `seen_expired` first (one statement),
        // so a store of a million texts is never read into memory.
        let last: i64 = conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM inbound", [], |r| r.get(0))
            .map_err(err)?;
        let last = last.max(0) as u64;
        let moved = if last > moved + seen::KEPT as u64 {
            let upto = last - seen::KEPT as u64;
            writes::move_pairs(&conn, moved, upto)?;
            upto
        } else {
            moved
        };
        let mut seen = Seen::new(moved);
        {
            let mut q = conn
                .prepare(
                    "SELECT account, carrier_id, id, received FROM inbound WHERE id > ?1 ORDER BY id",
                )
                .map_err(err)?;
            let mut rows = q.query([moved as i64]).map_err(err)?;
            while let Some(r) = rows.next().map_err(err)? {
                let key = seen.key_of_row(r)?;
                let id: i64 = r.get(2).map_err(err)?;
                let received: i64 = r.get(3).map_err(err)?;
                seen.add(id as u64, key, received.max(0) as u64, false);
            }
        }
        seen.expired = seen::ExpiredFilter::build(&conn)?;

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
            last_chats: Default::default(),
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

    fn entries(&self, kind: &str) -> Result<Vec<(String, String)>, StoreError> {
        let c = self.conn();
        let mut q = c
            .prepare("SELECT key, value FROM entries WHERE kind = ?1 ORDER BY key")
            .map_err(err)?;
        let rows = q
            .query_map([kind], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(err)?;
        rows.collect::<Result<_, _>>().map_err(err)
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
        self.pending_where("", [])
    }

    fn pending_inbound_between(
        &self,
        first: u64,
        last: u64,
    ) -> Result<Vec<PendingInbound>, StoreError> {
        let (first, last) = (as_id(first), as_id(last));
        self.pending_where("AND id BETWEEN ?1 AND ?2", [first, last])
    }
}

/// A row id as SQLite keeps it (a signed 64-bit integer; ids past its
/// range are read as its largest).
fn as_id(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

impl SqliteStore {
    /// Pending inbound texts, oldest first, with `and` added to the query's
    /// condition.
    fn pending_where(
        &self,
        and: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<PendingInbound>, StoreError> {
        let c = self.conn();
        let mut q = c
            .prepare(&format!(
                "SELECT id, account, data FROM inbound WHERE delivered = 0 {and} ORDER BY id"
            ))
            .map_err(err)?;
        let rows = q
            .query_map(params, |r| {
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

/// SQL: each sent chat `c` with each of its carrier ids `ids.value`, and
/// the receipt map's key of that pair (`sent_key`). One place for what
/// `writes` deletes and `dump` reads back, so the two cannot drift apart.
macro_rules! sent_pairs {
    (from) => {
        " FROM chats AS c, json_each(c.data, '$.state.Sent.ids') AS ids "
    };
    (key) => {
        " seen_key(json_extract(c.data, '$.account'), ids.value) "
    };
}

mod checkpoint;
mod dump;
mod errors;
mod schema;
mod seen;
mod wal;
mod writes;

use checkpoint::{checkpointer, Activity, WAL_CAP};
use errors::{err, in_use};
use schema::MIGRATIONS;
use seen::Seen;

#[cfg(test)]
mod tests;
