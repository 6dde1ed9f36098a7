//! Checkpointing the WAL from a thread of its own, at a pause in writes.

use rusqlite::Connection;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the checkpointer looks at the store.
pub(crate) const CHECKPOINT_POLL: Duration = Duration::from_millis(100);

/// A pause in writes this long lets the checkpointer run.
pub(crate) const CHECKPOINT_IDLE: Duration = Duration::from_millis(250);

/// A WAL this large is checkpointed even while writes go on; the WAL file
/// is cut back to this size when it is reused.
pub(crate) const WAL_CAP: u64 = 64 << 20;

/// What the checkpointer needs to know of the writes.
pub(crate) struct Activity {
    /// When the last write happened, in milliseconds since `start`.
    pub(crate) last_write_ms: AtomicU64,
    /// Bytes in the WAL waiting to be checkpointed (SQLite's WAL hook
    /// reports them after each commit); none when 0.
    pub(crate) wal_bytes: AtomicU64,
    pub(crate) start: std::time::Instant,
}

impl Activity {
    pub(crate) fn now_ms(&self) -> u64 {
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
pub(crate) fn checkpointer(
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
