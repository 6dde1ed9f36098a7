//! # sms-store-postgres
//!
//! The [`Store`] on PostgreSQL (`[store] url = "postgres://…"`), for
//! operators whose gateway's state must outlive its machine. Chats,
//! inbound texts, the receipt map, the ids already seen, each user's last
//! chat and the entries live in the database, with the same transactions
//! as the SQLite store: what a transaction wrote becomes durable at its
//! commit, all of it, before the Gateway lets anything out.
//!
//! A repeat of an inbound text is caught by a unique key on (account,
//! carrier id) in the database, not by a set in memory: a carrier's retry
//! is a repeat whichever process reads it.
//!
//! The driver is `postgres`, the blocking client over `tokio-postgres`,
//! run on a thread of the store's own: the [`Store`] trait is synchronous
//! (the Gateway commits before it answers a webhook or sends a text), and
//! a blocking call must not run a second runtime inside the gateway's. The
//! Gateway's thread waits for each statement as it waits for SQLite's
//! writes. A lost connection is made again at the next call; a
//! transaction it broke fails as a whole (its webhooks are answered 503
//! and retried by the carrier). Connections are not encrypted: keep the
//! database on loopback or a private network.
//!
//! The contract assumes one gateway writes at a time, as for SQLite.

mod import;
mod schema;
mod worker;

pub use postgres::Config;

use sms_gateway_core::store::{
    ChatRecord, ChatState, LastChat, PendingInbound, Store, StoreError, StoreErrorKind, Transaction,
};
use sms_gateway_core::InboundSms;
use std::sync::atomic::{AtomicBool, Ordering};
use worker::Db;
use worker::Worker;

/// The PostgreSQL store.
pub struct PostgresStore {
    worker: Worker,
    open: AtomicBool,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never shown.
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

/// A PostgreSQL error as a [`StoreError`]: a lost or refused connection is
/// temporary ([`StoreErrorKind::Io`]), a serialization failure or lock
/// wait [`StoreErrorKind::Busy`], the rest [`StoreErrorKind::Other`].
pub(crate) fn err(e: postgres::Error) -> StoreError {
    use postgres::error::SqlState;
    let kind = if e.is_closed() {
        StoreErrorKind::Io
    } else {
        match e.code() {
            Some(c)
                if *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::T_R_DEADLOCK_DETECTED
                    || *c == SqlState::LOCK_NOT_AVAILABLE =>
            {
                StoreErrorKind::Busy
            }
            Some(c)
                if c.code().starts_with("08")
                    || c.code().starts_with("57P")
                    || *c == SqlState::CANNOT_CONNECT_NOW =>
            {
                StoreErrorKind::Io
            }
            Some(_) => StoreErrorKind::Other,
            // No SQL state: the connection or the protocol failed.
            None => StoreErrorKind::Io,
        }
    };
    StoreError::new(kind, format!("PostgreSQL: {}", describe(&e)))
}

/// The error and its cause, on one line.
fn describe(e: &postgres::Error) -> String {
    use std::error::Error;
    match (e.as_db_error(), e.source()) {
        (Some(db), _) => format!("{}: {}", db.severity(), db.message()),
        (None, Some(s)) => format!("{e}: {s}"),
        (None, None) => e.to_string(),
    }
}

fn corrupt(what: String, e: serde_json::Error) -> StoreError {
    StoreError::new(
        StoreErrorKind::Corrupt,
        format!("{what} is unreadable: {e}"),
    )
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::new(StoreErrorKind::Other, format!("cannot encode: {e}")))
}

fn sent_ids(chat: &ChatRecord) -> Vec<String> {
    match &chat.state {
        ChatState::Sent { ids, .. } => ids.clone(),
        _ => vec![],
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`, or
    /// libpq's `key=value` form) and brings its schema up to date.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let config: postgres::Config = url.parse().map_err(|e: postgres::Error| {
            StoreError::new(
                StoreErrorKind::Other,
                format!("store.url is not a PostgreSQL URL: {}", describe(&e)),
            )
        })?;
        Self::with_config(config)
    }

    /// Connects as `config` says and brings the schema up to date.
    pub fn with_config(config: postgres::Config) -> Result<Self, StoreError> {
        let worker = Worker::start(config)?;
        worker.run(|c| schema::migrate(&mut c.client))?;
        Ok(PostgresStore {
            worker,
            open: AtomicBool::new(false),
        })
    }

    fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.worker.run(f)
    }

    fn in_tx<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.worker.in_tx(f)
    }
}

impl Store for PostgresStore {
    fn begin(&self) -> Result<Box<dyn Transaction + '_>, StoreError> {
        if self.open.swap(true, Ordering::SeqCst) {
            return Err(StoreError::new(
                StoreErrorKind::Busy,
                "a transaction is already open (one gateway writes at a time)",
            ));
        }
        if let Err(e) = self.worker.begin() {
            self.open.store(false, Ordering::SeqCst);
            return Err(e);
        }
        Ok(Box::new(PgTx {
            store: self,
            done: false,
        }))
    }

    fn chats(&self) -> Result<Vec<(u64, ChatRecord)>, StoreError> {
        self.query(|c| {
            let rows = c
                .query("SELECT ticket, data FROM chats ORDER BY ticket", &[])
                .map_err(err)?;
            let mut out = vec![];
            for r in rows {
                let (ticket, data): (i64, String) = (r.get(0), r.get(1));
                match serde_json::from_str(&data) {
                    Ok(chat) => out.push((ticket as u64, chat)),
                    Err(e) => {
                        tracing::error!(ticket, error = %e, "skipping an unreadable chat in the store")
                    }
                }
            }
            Ok(out)
        })
    }

    fn pending_inbound(&self) -> Result<Vec<PendingInbound>, StoreError> {
        self.query(|c| {
            let rows = c
                .query(
                    "SELECT id, account, data FROM inbound WHERE NOT delivered ORDER BY id",
                    &[],
                )
                .map_err(err)?;
            let mut out = vec![];
            for r in rows {
                let (id, account, data): (i64, String, String) = (r.get(0), r.get(1), r.get(2));
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
        })
    }

    fn last_chats(&self) -> Result<Vec<LastChat>, StoreError> {
        self.query(|c| {
            let rows = c
                .query(
                    "SELECT usr, contact_jid, created, preview FROM last_chat ORDER BY usr",
                    &[],
                )
                .map_err(err)?;
            Ok(rows
                .iter()
                .map(|r| LastChat {
                    user: r.get(0),
                    contact_jid: r.get(1),
                    created: r.get::<_, i64>(2) as u64,
                    preview: r.get(3),
                })
                .collect())
        })
    }

    fn meta(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let key = key.to_owned();
        self.query(move |c| {
            Ok(
                c.query_opt("SELECT value FROM meta WHERE key = $1", &[&key])
                    .map_err(err)?
                    .map(|r| r.get::<_, i64>(0) as u64),
            )
        })
    }

    fn entries(&self, kind: &str) -> Result<Vec<(String, String)>, StoreError> {
        let kind = kind.to_owned();
        self.query(move |c| {
            Ok(c.query(
                "SELECT key, value FROM entries WHERE kind = $1 ORDER BY key COLLATE \"C\"",
                &[&kind],
            )
            .map_err(err)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
        })
    }
}

/// One open transaction; dropped without a commit, it is rolled back.
struct PgTx<'a> {
    store: &'a PostgresStore,
    done: bool,
}

impl Drop for PgTx<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.store.worker.rollback();
        }
        self.store.open.store(false, Ordering::SeqCst);
    }
}

impl Transaction for PgTx<'_> {
    fn insert_chat(&mut self, chat: &ChatRecord) -> Result<u64, StoreError> {
        let data = json(chat)?;
        let ids = sent_ids(chat);
        let (account, created, sent) = (
            chat.account.clone(),
            chat.created as i64,
            matches!(chat.state, ChatState::Sent { .. }),
        );
        let last = LastChat::of(chat);
        self.store.in_tx(move |c| {
            let ticket: i64 = c
                .query_one(
                    "INSERT INTO chats (created, sent, data) VALUES ($1, $2, $3) RETURNING ticket",
                    &[&created, &sent, &data],
                )
                .map_err(err)?
                .get(0);
            index_sent(c, &account, &ids, ticket)?;
            c.execute(
                "INSERT INTO last_chat (usr, contact_jid, created, preview) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (usr) DO UPDATE SET contact_jid = EXCLUDED.contact_jid,
                    created = EXCLUDED.created, preview = EXCLUDED.preview",
                &[
                    &last.user,
                    &last.contact_jid,
                    &(last.created as i64),
                    &last.preview,
                ],
            )
            .map_err(err)?;
            Ok(ticket as u64)
        })
    }

    fn update_chat(&mut self, ticket: u64, chat: &ChatRecord) -> Result<(), StoreError> {
        let data = json(chat)?;
        let ids = sent_ids(chat);
        let account = chat.account.clone();
        let sent = matches!(chat.state, ChatState::Sent { .. });
        self.store.in_tx(move |c| {
            let ticket = ticket as i64;
            // A chat becoming sent: its ids join the receipt map then (ids
            // dropped later, parts reported delivered, stay dropped).
            let became_sent = c
                .execute(
                    "UPDATE chats SET sent = $2, data = $3 WHERE ticket = $1 AND NOT sent",
                    &[&ticket, &sent, &data],
                )
                .map_err(err)?
                == 1;
            if became_sent {
                return index_sent(c, &account, &ids, ticket);
            }
            c.execute(
                "UPDATE chats SET sent = $2, data = $3 WHERE ticket = $1",
                &[&ticket, &sent, &data],
            )
            .map_err(err)?;
            Ok(())
        })
    }

    fn delete_chat(&mut self, ticket: u64) -> Result<(), StoreError> {
        // Its receipt-map rows go with it (ON DELETE CASCADE).
        self.store.in_tx(move |c| {
            c.execute("DELETE FROM chats WHERE ticket = $1", &[&(ticket as i64)])
                .map_err(err)?;
            Ok(())
        })
    }

    fn find_sent(
        &mut self,
        account: &str,
        carrier_id: &str,
    ) -> Result<Option<(u64, ChatRecord)>, StoreError> {
        let (account, carrier_id) = (account.to_owned(), carrier_id.to_owned());
        self.store.in_tx(move |c| {
            let Some(r) = c
                .query_opt(
                    "SELECT chats.ticket, chats.data FROM sent_ids JOIN chats USING (ticket)
                     WHERE sent_ids.account = $1 AND sent_ids.carrier_id = $2",
                    &[&account, &carrier_id],
                )
                .map_err(err)?
            else {
                return Ok(None);
            };
            let (ticket, data): (i64, String) = (r.get(0), r.get(1));
            let chat =
                serde_json::from_str(&data).map_err(|e| corrupt(format!("chat {ticket}"), e))?;
            Ok(Some((ticket as u64, chat)))
        })
    }

    fn forget_sent_id(&mut self, account: &str, carrier_id: &str) -> Result<(), StoreError> {
        let (account, carrier_id) = (account.to_owned(), carrier_id.to_owned());
        self.store.in_tx(move |c| {
            c.execute(
                "DELETE FROM sent_ids WHERE account = $1 AND carrier_id = $2",
                &[&account, &carrier_id],
            )
            .map_err(err)?;
            Ok(())
        })
    }

    fn insert_inbound(
        &mut self,
        account: &str,
        sms: &InboundSms,
        now: u64,
    ) -> Result<Option<u64>, StoreError> {
        let data = json(sms)?;
        let (account, carrier_id) = (account.to_owned(), sms.id.clone());
        self.store.in_tx(move |c| {
            let replayed = c
                .query_opt(
                    "SELECT 1 FROM seen_expired WHERE account = $1 AND carrier_id = $2",
                    &[&account, &carrier_id],
                )
                .map_err(err)?
                .is_some();
            if replayed {
                return Ok(None);
            }
            // The unique key on (account, carrier_id) makes a repeat
            // whoever stored the first.
            Ok(c.query_opt(
                "INSERT INTO inbound (account, carrier_id, received, data) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (account, carrier_id) DO NOTHING RETURNING id",
                &[&account, &carrier_id, &(now as i64), &data],
            )
            .map_err(err)?
            .map(|r| r.get::<_, i64>(0) as u64))
        })
    }

    fn update_inbound(&mut self, id: u64, sms: &InboundSms) -> Result<(), StoreError> {
        let data = json(sms)?;
        self.store.in_tx(move |c| {
            c.execute(
                "UPDATE inbound SET data = $2 WHERE id = $1 AND NOT delivered",
                &[&(id as i64), &data],
            )
            .map_err(err)?;
            Ok(())
        })
    }

    fn inbound_delivered(&mut self, id: u64) -> Result<(), StoreError> {
        self.store.in_tx(move |c| {
            c.execute(
                "UPDATE inbound SET delivered = TRUE, data = '' WHERE id = $1",
                &[&(id as i64)],
            )
            .map_err(err)?;
            Ok(())
        })
    }

    fn expire(&mut self, before: u64, seen_before: u64) -> Result<usize, StoreError> {
        let (before, seen_before) = (before as i64, seen_before as i64);
        self.store.in_tx(move |c| {
            c.execute(
                "DELETE FROM seen_expired WHERE received < $1",
                &[&seen_before],
            )
            .map_err(err)?;
            c.execute(
                "INSERT INTO seen_expired (account, carrier_id, received)
                 SELECT account, carrier_id, received FROM inbound
                 WHERE delivered AND received < $1 AND received >= $2
                 ON CONFLICT DO NOTHING",
                &[&before, &seen_before],
            )
            .map_err(err)?;
            let chats = c
                .execute("DELETE FROM chats WHERE sent AND created < $1", &[&before])
                .map_err(err)?;
            let inbound = c
                .execute(
                    "DELETE FROM inbound WHERE delivered AND received < $1",
                    &[&before],
                )
                .map_err(err)?;
            Ok((chats + inbound) as usize)
        })
    }

    fn set_meta(&mut self, key: &str, value: u64) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.store.in_tx(move |c| {
            c.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&key, &(value as i64)],
            )
            .map_err(err)?;
            Ok(())
        })
    }

    fn put_entry(&mut self, kind: &str, key: &str, value: Option<&str>) -> Result<(), StoreError> {
        let (kind, key, value) = (kind.to_owned(), key.to_owned(), value.map(str::to_owned));
        self.store.in_tx(move |c| {
            match value {
                Some(v) => c.execute(
                    "INSERT INTO entries (kind, key, value) VALUES ($1, $2, $3)
                     ON CONFLICT (kind, key) DO UPDATE SET value = EXCLUDED.value",
                    &[&kind, &key, &v],
                ),
                None => c.execute(
                    "DELETE FROM entries WHERE kind = $1 AND key = $2",
                    &[&kind, &key],
                ),
            }
            .map_err(err)?;
            Ok(())
        })
    }

    fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        self.done = true;
        self.store.worker.commit()
    }
}

/// Adds a sent chat's carrier ids to the receipt map.
fn index_sent(c: &mut Db, account: &str, ids: &[String], ticket: i64) -> Result<(), StoreError> {
    for id in ids {
        c.execute(
            "INSERT INTO sent_ids (account, carrier_id, ticket) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&account, id, &ticket],
        )
        .map_err(err)?;
    }
    Ok(())
}
