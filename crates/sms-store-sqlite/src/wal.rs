//! The store's WAL written once per commit (#30).
//!
//! SQLite writes each frame of its WAL with two calls, a 24-byte header and
//! the page, so a commit of ten pages is twenty `pwrite` system calls. The
//! frames of one commit are contiguous in the file, and the store is the
//! only reader of its WAL (exclusive locking mode), so this VFS, the
//! platform's own with the WAL file's writes gathered, makes them one call:
//!
//! - writes that follow each other in the file are gathered in memory;
//! - they go to the file when the commit frame (a frame header whose
//!   "database size" field is set) has its page, so a commit is in the
//!   kernel before SQLite publishes it, as without this VFS;
//! - and before anything else touches the file: a read, a sync, a
//!   truncation, its size, a file control, closing it, or a write that does
//!   not follow on (SQLite rewriting a frame in place);
//! - and at [`GATHER_MAX`] bytes, for a transaction larger than that.
//!
//! A failed write is reported by the call that makes it: the commit
//! frame's write, as SQLite expects, in the usual case. Files other than
//! the WAL keep the platform VFS's methods untouched.

use rusqlite::ffi;
use std::ffi::{c_int, c_void, CStr};
use std::sync::OnceLock;

/// The name the store opens its database with.
pub(crate) const VFS_NAME: &CStr = c"sms-over-xmpp-wal";

/// Gathered bytes that are written out even before a commit frame: a
/// bound on the memory a large transaction (a migration) holds. The
/// buffer is made this size and a page larger at the first write, so a
/// usual commit (tens of KiB) never grows it.
const GATHER_MAX: usize = 60 << 10;

/// The most one write call takes: the unix VFS's own writes are less than
/// 128 KiB (it masks a larger count with 0x1ffff).
const WRITE_MAX: usize = 64 << 10;

/// A WAL frame's header, and the WAL file's header (where the page size is).
const FRAME_HEADER: usize = 24;
const WAL_HEADER: usize = 32;

/// What this VFS adds to a WAL file, after the platform's own file struct.
struct Gather {
    /// The platform's methods for the file (it is at the start of the
    /// struct SQLite allocated, so they are called with the same pointer).
    real: *const ffi::sqlite3_io_methods,
    /// Bytes not yet written, and where they go in the file.
    buf: Vec<u8>,
    at: i64,
    /// The page size, from the WAL header; 0 until known.
    page_size: i64,
    /// Where the commit frame being gathered ends, once its header is in.
    commit_end: Option<i64>,
}

struct Vfs {
    /// The platform's default VFS.
    real: *mut ffi::sqlite3_vfs,
    /// Where [`Gather`] starts in a file struct.
    offset: usize,
}

// SAFETY: the pointers are to SQLite's static VFS and are only read.
unsafe impl Send for Vfs {}
unsafe impl Sync for Vfs {}

static VFS: OnceLock<Result<Vfs, c_int>> = OnceLock::new();

#[cfg(test)]
thread_local! {
    /// Writes made to WAL files from this thread (tests).
    pub(crate) static WAL_WRITES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Registers the VFS (once); an SQLite error code if it cannot be.
pub(crate) fn register() -> Result<(), c_int> {
    VFS.get_or_init(|| {
        // SAFETY: sqlite3_vfs_find and sqlite3_vfs_register are safe to
        // call from any thread; the struct given to SQLite is leaked, so
        // it lives as long as the process.
        unsafe {
            let real = ffi::sqlite3_vfs_find(std::ptr::null());
            if real.is_null() {
                return Err(ffi::SQLITE_ERROR);
            }
            let size = usize::try_from((*real).szOsFile).map_err(|_| ffi::SQLITE_ERROR)?;
            let offset = size.next_multiple_of(std::mem::align_of::<Gather>());
            let mut ours = *real;
            ours.pNext = std::ptr::null_mut();
            ours.zName = VFS_NAME.as_ptr();
            ours.szOsFile = c_int::try_from(offset + std::mem::size_of::<Gather>())
                .map_err(|_| ffi::SQLITE_ERROR)?;
            ours.xOpen = Some(open);
            let rc = ffi::sqlite3_vfs_register(Box::into_raw(Box::new(ours)), 0);
            if rc != ffi::SQLITE_OK {
                return Err(rc);
            }
            Ok(Vfs { real, offset })
        }
    })
    .as_ref()
    .map(drop)
    .map_err(|rc| *rc)
}

fn vfs() -> &'static Vfs {
    match VFS.get() {
        Some(Ok(v)) => v,
        // SQLite only calls `open` through the registered VFS.
        _ => unreachable!("the WAL VFS is used before it is registered"),
    }
}

/// The [`Gather`] of a file opened by [`open`] with the WAL methods.
unsafe fn gather<'a>(f: *mut ffi::sqlite3_file) -> &'a mut Gather {
    // SAFETY (caller): `f` was opened by `open`, which put a Gather there.
    unsafe { &mut *f.cast::<u8>().add(vfs().offset).cast::<Gather>() }
}

unsafe extern "C" fn open(
    _: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    f: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let v = vfs();
    // SAFETY: SQLite allocated `f` with our szOsFile, which leaves room
    // for the platform's struct at the start and a Gather at `offset`.
    unsafe {
        let Some(real_open) = (*v.real).xOpen else {
            return ffi::SQLITE_ERROR;
        };
        let rc = real_open(v.real, name, f, flags, out_flags);
        let methods = (*f).pMethods;
        if rc == ffi::SQLITE_OK
            && flags & ffi::SQLITE_OPEN_WAL != 0
            && !methods.is_null()
            && (*methods).iVersion == WAL_METHODS.iVersion
        {
            f.cast::<u8>().add(v.offset).cast::<Gather>().write(Gather {
                real: methods,
                buf: Vec::new(),
                at: 0,
                page_size: 0,
                commit_end: None,
            });
            (*f).pMethods = &WAL_METHODS;
        }
        rc
    }
}

/// Writes what is gathered.
unsafe fn flush(f: *mut ffi::sqlite3_file, g: &mut Gather) -> c_int {
    g.commit_end = None;
    if g.buf.is_empty() {
        return ffi::SQLITE_OK;
    }
    let mut rc = ffi::SQLITE_OK;
    let mut at = g.at;
    for part in g.buf.chunks(WRITE_MAX) {
        #[cfg(test)]
        WAL_WRITES.with(|w| w.set(w.get() + 1));
        // SAFETY: the platform's xWrite on its own file, with our buffer
        // (a part is at most WRITE_MAX bytes, so its length fits).
        rc = unsafe {
            match (*g.real).xWrite {
                Some(write) => write(f, part.as_ptr().cast(), part.len() as c_int, at),
                None => ffi::SQLITE_IOERR_WRITE,
            }
        };
        if rc != ffi::SQLITE_OK {
            break;
        }
        at += part.len() as i64;
    }
    // Written or not, these bytes are done with: after a failed write
    // SQLite writes the frames again, at the same place.
    g.buf.clear();
    rc
}

/// The platform's method `m` on the file, after writing what is
/// gathered; an I/O error if the platform has no such method (`open` only
/// takes over files whose methods are of the version these are).
macro_rules! flushed {
    ($f:expr, $m:ident ( $($arg:expr),* )) => {{
        let g = gather($f);
        let rc = flush($f, g);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        direct!($f, $m($($arg),*))
    }};
}

/// The platform's method `m` on the file, with nothing to write first.
macro_rules! direct {
    ($f:expr, $m:ident ( $($arg:expr),* )) => {{
        match (*gather($f).real).$m {
            Some(m) => m($f $(, $arg)*),
            None => ffi::SQLITE_IOERR,
        }
    }};
}

unsafe extern "C" fn wal_close(f: *mut ffi::sqlite3_file) -> c_int {
    unsafe {
        let g = gather(f);
        let written = flush(f, g);
        let real = g.real;
        std::ptr::drop_in_place(g as *mut Gather);
        let closed = match (*real).xClose {
            Some(close) => close(f),
            None => ffi::SQLITE_IOERR,
        };
        if written != ffi::SQLITE_OK {
            written
        } else {
            closed
        }
    }
}

unsafe extern "C" fn wal_write(
    f: *mut ffi::sqlite3_file,
    data: *const c_void,
    amt: c_int,
    off: i64,
) -> c_int {
    unsafe {
        let g = gather(f);
        let Ok(len) = usize::try_from(amt) else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        if !g.buf.is_empty() && off != g.at + g.buf.len() as i64 {
            let rc = flush(f, g);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        let bytes = std::slice::from_raw_parts(data.cast::<u8>(), len);
        if off == 0 && len >= WAL_HEADER {
            g.page_size = i64::from(u32::from_be_bytes([
                bytes[8], bytes[9], bytes[10], bytes[11],
            ]));
        }
        // A frame header whose "database size after commit" is set: its
        // page ends the commit.
        let commit = len == FRAME_HEADER && bytes[4..8] != [0; 4];
        if commit && g.page_size == 0 {
            let rc = flush(f, g);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            let mut size = [0u8; 4];
            let rc = direct!(f, xRead(size.as_mut_ptr().cast(), 4, 8));
            if rc == ffi::SQLITE_OK {
                g.page_size = i64::from(u32::from_be_bytes(size));
            }
        }
        if g.buf.is_empty() {
            g.at = off;
            if g.buf.capacity() == 0 {
                g.buf.reserve_exact(GATHER_MAX + len.max(4096));
            }
        }
        g.buf.extend_from_slice(bytes);
        if commit {
            // Without a page size (a WAL header that cannot be read), the
            // next write is taken as the page.
            g.commit_end = Some(off + FRAME_HEADER as i64 + g.page_size.max(1));
        }
        let end = g.at + g.buf.len() as i64;
        if g.commit_end.is_some_and(|c| end >= c) || g.buf.len() >= GATHER_MAX {
            return flush(f, g);
        }
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn wal_read(
    f: *mut ffi::sqlite3_file,
    p: *mut c_void,
    amt: c_int,
    off: i64,
) -> c_int {
    unsafe { flushed!(f, xRead(p, amt, off)) }
}
unsafe extern "C" fn wal_truncate(f: *mut ffi::sqlite3_file, size: i64) -> c_int {
    unsafe { flushed!(f, xTruncate(size)) }
}
unsafe extern "C" fn wal_sync(f: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    unsafe { flushed!(f, xSync(flags)) }
}
unsafe extern "C" fn wal_file_size(f: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    unsafe { flushed!(f, xFileSize(size)) }
}
unsafe extern "C" fn wal_file_control(
    f: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    unsafe { flushed!(f, xFileControl(op, arg)) }
}
unsafe extern "C" fn wal_fetch(
    f: *mut ffi::sqlite3_file,
    off: i64,
    amt: c_int,
    pp: *mut *mut c_void,
) -> c_int {
    unsafe { flushed!(f, xFetch(off, amt, pp)) }
}
unsafe extern "C" fn wal_lock(f: *mut ffi::sqlite3_file, l: c_int) -> c_int {
    unsafe { direct!(f, xLock(l)) }
}
unsafe extern "C" fn wal_unlock(f: *mut ffi::sqlite3_file, l: c_int) -> c_int {
    unsafe { direct!(f, xUnlock(l)) }
}
unsafe extern "C" fn wal_check_reserved(f: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    unsafe { direct!(f, xCheckReservedLock(out)) }
}
unsafe extern "C" fn wal_sector_size(f: *mut ffi::sqlite3_file) -> c_int {
    unsafe { direct!(f, xSectorSize()) }
}
unsafe extern "C" fn wal_device(f: *mut ffi::sqlite3_file) -> c_int {
    unsafe { direct!(f, xDeviceCharacteristics()) }
}
unsafe extern "C" fn wal_shm_map(
    f: *mut ffi::sqlite3_file,
    pg: c_int,
    size: c_int,
    extend: c_int,
    pp: *mut *mut c_void,
) -> c_int {
    unsafe { direct!(f, xShmMap(pg, size, extend, pp)) }
}
unsafe extern "C" fn wal_shm_lock(
    f: *mut ffi::sqlite3_file,
    off: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    unsafe { direct!(f, xShmLock(off, n, flags)) }
}
unsafe extern "C" fn wal_shm_barrier(f: *mut ffi::sqlite3_file) {
    unsafe {
        if let Some(barrier) = (*gather(f).real).xShmBarrier {
            barrier(f)
        }
    }
}
unsafe extern "C" fn wal_shm_unmap(f: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    unsafe { direct!(f, xShmUnmap(delete)) }
}
unsafe extern "C" fn wal_unfetch(f: *mut ffi::sqlite3_file, off: i64, p: *mut c_void) -> c_int {
    unsafe { direct!(f, xUnfetch(off, p)) }
}

/// The WAL file's methods: the platform's, with writes gathered.
static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(wal_close),
    xRead: Some(wal_read),
    xWrite: Some(wal_write),
    xTruncate: Some(wal_truncate),
    xSync: Some(wal_sync),
    xFileSize: Some(wal_file_size),
    xLock: Some(wal_lock),
    xUnlock: Some(wal_unlock),
    xCheckReservedLock: Some(wal_check_reserved),
    xFileControl: Some(wal_file_control),
    xSectorSize: Some(wal_sector_size),
    xDeviceCharacteristics: Some(wal_device),
    xShmMap: Some(wal_shm_map),
    xShmLock: Some(wal_shm_lock),
    xShmBarrier: Some(wal_shm_barrier),
    xShmUnmap: Some(wal_shm_unmap),
    xFetch: Some(wal_fetch),
    xUnfetch: Some(wal_unfetch),
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SqliteStore;
    use rusqlite::Connection;
    use sms_gateway_core::store::{Store, StoreExt};

    fn open_raw(path: &std::path::Path) -> Connection {
        register().unwrap();
        let c = Connection::open_with_flags_and_vfs(path, rusqlite::OpenFlags::default(), VFS_NAME)
            .unwrap();
        c.pragma_update(None, "locking_mode", "EXCLUSIVE").unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.pragma_update(None, "synchronous", "NORMAL").unwrap();
        c
    }

    /// Frames in a WAL file, from its size.
    fn frames(path: &std::path::Path, page: u64) -> u64 {
        let len = std::fs::metadata(path.with_extension("db-wal"))
            .unwrap()
            .len();
        len.saturating_sub(WAL_HEADER as u64) / (FRAME_HEADER as u64 + page)
    }

    /// A commit of several pages is one write, where SQLite alone makes
    /// two a page; what it wrote reads back through SQLite's own VFS.
    #[test]
    fn a_commit_is_one_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let c = open_raw(&path);
        c.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .unwrap();
        let page = c
            .pragma_query_value(None, "page_size", |r| r.get::<_, i64>(0))
            .unwrap() as u64;
        let frames_before = frames(&path, page);
        let writes_before = WAL_WRITES.with(|w| w.get());
        let tx = c.unchecked_transaction().unwrap();
        for k in 0..60 {
            tx.execute(
                "INSERT INTO t (k, v) VALUES (?1, ?2)",
                rusqlite::params![k, "x".repeat(200)],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        let written = frames(&path, page) - frames_before;
        assert!(written >= 3, "{written} frames");
        assert_eq!(WAL_WRITES.with(|w| w.get()) - writes_before, 1);
        drop(c);
        let plain = Connection::open(&path).unwrap();
        let n: i64 = plain
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 60);
    }

    /// What a commit wrote is in the file when the commit returns: a
    /// process that dies right after (no close, no destructor) loses
    /// nothing, through a transaction larger than SQLite's page cache
    /// (frames spilled and rewritten, writes past `GATHER_MAX`) and small
    /// ones after it.
    #[test]
    fn a_commit_survives_the_process_dying_at_once() {
        const CHILD: &str = "SMS_WAL_TEST_CHILD";
        let body = |i: usize| format!("{i}-{}", "y".repeat(i % 700));
        if let Some(path) = std::env::var_os(CHILD) {
            let s = SqliteStore::open(std::path::Path::new(&path)).unwrap();
            let mut tx = s.begin().unwrap();
            for i in 0..3000 {
                tx.insert_inbound(
                    "main",
                    &crate::tests::inbound(&format!("SM{i}"), &body(i)),
                    1,
                )
                .unwrap();
            }
            tx.commit().unwrap();
            for i in 3000..3010 {
                s.write(|t| {
                    t.insert_inbound(
                        "main",
                        &crate::tests::inbound(&format!("SM{i}"), &body(i)),
                        1,
                    )
                })
                .unwrap();
            }
            std::process::abort();
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "wal::tests::a_commit_survives_the_process_dying_at_once",
                "--exact",
                "--test-threads=1",
            ])
            .env(CHILD, &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "the child aborts");
        let plain = Connection::open(&path).unwrap();
        let rows: Vec<(String, String)> = plain
            .prepare("SELECT carrier_id, data FROM inbound ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), 3010);
        for (i, (id, data)) in rows.iter().enumerate() {
            assert_eq!(id, &format!("SM{i}"));
            assert!(data.contains(&body(i)), "row {i}");
        }
        let check: String = plain
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }
}
