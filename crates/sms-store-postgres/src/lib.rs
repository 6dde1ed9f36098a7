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
//! Several gateways may share one database (`[cluster]`,
//! [`PostgresStore::in_cluster`]): each chat and inbound text is marked
//! with the instance that took it, each instance renews a lease in
//! `sox_instances`, and the work of an instance whose lease lapsed is
//! taken over by one of the others ([`Store::adopt`]), its rows claimed in
//! one transaction (`FOR UPDATE SKIP LOCKED` on the lapsed leases), so two
//! instances never both take the same. The receipt map, the ids already
//! seen and each user's last chats are shared: a delivery report reaching
//! any instance finds the chat whichever sent it.

mod import;
mod listen;
mod schema;
mod worker;

pub use postgres::Config;

use sms_gateway_core::store::{
    ChatRecord, ChatState, LastChat, Member, Orphans, PendingInbound, Store, StoreError,
    StoreErrorKind, Transaction,
};
use sms_gateway_core::{DeliveryStatus, InboundSms};
use std::sync::atomic::{AtomicBool, Ordering};
use worker::Db;
use worker::Worker;

/// The PostgreSQL store.
pub struct PostgresStore {
    worker: Worker,
    open: AtomicBool,
    /// This instance, when the database is shared by several.
    member: Option<Member>,
    /// Whether this instance has held a lease yet.
    leased: AtomicBool,
    /// Woken by `NOTIFY sox_work` (another instance released work).
    wake: Option<std::sync::Arc<tokio::sync::Notify>>,
    /// Where to connect the listener.
    config: postgres::Config,
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
        let worker = Worker::start(config.clone())?;
        worker.run(|c| schema::migrate(&mut c.client))?;
        Ok(PostgresStore {
            worker,
            open: AtomicBool::new(false),
            member: None,
            leased: AtomicBool::new(false),
            wake: None,
            config,
        })
    }

    /// Shares the database with other instances, as `member`: what this
    /// instance takes is marked as its own, read back as its own, and
    /// taken over by another instance if its lease lapses.
    pub fn in_cluster(mut self, member: Member) -> Self {
        self.member = Some(member);
        self.wake = Some(listen::start(self.config.clone()));
        self
    }

    /// Waits until no live instance holds `member`'s name (#27): an
    /// instance of that name whose lease has not lapsed is watched until it
    /// either renews it (alive: `Err`, naming the key, so two instances
    /// never share one lease) or lets it lapse (it died: `Ok`, and this one
    /// takes its work over as its successor). At most one lease long.
    pub fn claim_name(&self, member: &Member) -> Result<(), StoreError> {
        let read = |id: String| {
            self.worker.run(move |c| {
                Ok(
                    c.query_opt("SELECT expires FROM sox_instances WHERE id = $1", &[&id])
                        .map_err(err)?
                        .map(|r| r.get::<_, i64>(0)),
                )
            })
        };
        let id = member.instance.clone();
        let Some(first) = read(id.clone())? else {
            return Ok(());
        };
        if first < now() {
            return Ok(());
        }
        tracing::info!(instance = %id, "an instance of this name holds a lease: waiting to see whether it still runs");
        loop {
            std::thread::sleep(std::time::Duration::from_millis(500));
            match read(id.clone())? {
                None => return Ok(()),
                Some(e) if e != first => {
                    return Err(StoreError::new(
                        StoreErrorKind::Other,
                        format!("another running instance is named {id:?} (cluster.instance): give each instance a name of its own, or leave the key out for a unique one"),
                    ))
                }
                Some(_) if first < now() => return Ok(()),
                Some(_) => {}
            }
        }
    }

    /// This instance's name, if the database is shared.
    fn owner(&self) -> Option<String> {
        self.member.as_ref().map(|m| m.instance.clone())
    }

    /// Runs `f` in a transaction of its own, and commits it.
    fn transaction<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let tx = self.begin()?;
        let value = self.in_tx(f)?;
        tx.commit()?;
        Ok(value)
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
        let owner = self.owner();
        self.query(move |c| {
            let rows = match &owner {
                // Shared: this instance's own chats not yet sent (the sent
                // ones wait for reports, which any instance applies).
                Some(me) => c.query(
                    "SELECT ticket, data FROM chats WHERE owner = $1 AND NOT sent ORDER BY ticket",
                    &[me],
                ),
                None => c.query("SELECT ticket, data FROM chats ORDER BY ticket", &[]),
            }
            .map_err(err)?;
            Ok(read_chats(rows))
        })
    }

    fn pending_inbound(&self) -> Result<Vec<PendingInbound>, StoreError> {
        let owner = self.owner();
        self.query(move |c| {
            let rows = match &owner {
                Some(me) => c.query(
                    "SELECT id, account, data FROM inbound WHERE NOT delivered AND owner = $1
                     ORDER BY id",
                    &[me],
                ),
                None => c.query(
                    "SELECT id, account, data FROM inbound WHERE NOT delivered ORDER BY id",
                    &[],
                ),
            }
            .map_err(err)?;
            Ok(read_inbound(rows))
        })
    }

    fn pending_inbound_between(
        &self,
        first: u64,
        last: u64,
    ) -> Result<Vec<PendingInbound>, StoreError> {
        let owner = self.owner();
        let as_id = |id: u64| i64::try_from(id).unwrap_or(i64::MAX);
        let (first, last) = (as_id(first), as_id(last));
        self.query(move |c| {
            let rows = match &owner {
                Some(me) => c.query(
                    "SELECT id, account, data FROM inbound
                     WHERE NOT delivered AND owner = $1 AND id BETWEEN $2 AND $3 ORDER BY id",
                    &[me, &first, &last],
                ),
                None => c.query(
                    "SELECT id, account, data FROM inbound
                     WHERE NOT delivered AND id BETWEEN $1 AND $2 ORDER BY id",
                    &[&first, &last],
                ),
            }
            .map_err(err)?;
            Ok(read_inbound(rows))
        })
    }

    fn last_chats(&self) -> Result<Vec<LastChat>, StoreError> {
        self.query(|c| {
            // Kept per instance: each user's latest, whichever took it.
            let rows = c
                .query(
                    "SELECT DISTINCT ON (usr) usr, contact_jid, created, preview FROM last_chat
                     ORDER BY usr, created DESC",
                    &[],
                )
                .map_err(err)?;
            Ok(read_last_chats(&rows))
        })
    }

    fn member(&self) -> Option<&Member> {
        self.member.as_ref()
    }

    fn wake(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        self.wake.clone()
    }

    fn adopt(&self, with_link: bool) -> Result<Orphans, StoreError> {
        let Some(member) = self.member.clone() else {
            return Ok(Orphans::default());
        };
        let lease = member.lease.as_secs().max(1) as i64;
        let me = member.instance;
        let first = !self.leased.load(Ordering::SeqCst);
        let (renewed, orphans) = self.transaction(move |c| {
            let now = now();
            // xmax is 0 on a row this statement inserted: the lease was
            // not there (first call, or taken over as lapsed).
            let renewed: bool = c
                .query_one(
                    "INSERT INTO sox_instances (id, expires) VALUES ($1, $2)
                     ON CONFLICT (id) DO UPDATE SET expires = EXCLUDED.expires
                     RETURNING xmax <> 0",
                    &[&me, &(now + lease)],
                )
                .map_err(err)?
                .get(0);
            // Lapsed leases, each taken by one instance (the others skip
            // the rows this one locked).
            let mut dead: Vec<String> = c
                .query(
                    "DELETE FROM sox_instances WHERE id IN (
                        SELECT id FROM sox_instances WHERE expires < $1
                        FOR UPDATE SKIP LOCKED)
                     RETURNING id",
                    &[&now],
                )
                .map_err(err)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            // Unfinished work of every instance without a lease: those
            // just found dead, those that stopped cleanly, and a gateway
            // that ran alone before (owner NULL).
            let chats = c
                .query(
                    "UPDATE chats SET owner = $1 WHERE NOT sent
                     AND (owner IS NULL OR owner NOT IN (SELECT id FROM sox_instances))
                     RETURNING ticket, data",
                    &[&me],
                )
                .map_err(err)?;
            let mut chats = read_chats(chats);
            chats.sort_by_key(|(t, _)| *t);
            // Inbound texts need a link to go through.
            let inbound = if with_link {
                c.query(
                    "UPDATE inbound SET owner = $1 WHERE NOT delivered
                     AND (owner IS NULL OR owner NOT IN (SELECT id FROM sox_instances))
                     RETURNING id, account, data",
                    &[&me],
                )
                .map_err(err)?
            } else {
                vec![]
            };
            let mut inbound = read_inbound(inbound);
            // A lease of this name still held at this process's first
            // call: the last process of this name died without giving it
            // up (restarted within a lease), so its users are told too.
            if first && renewed {
                dead.push(me.clone());
            }
            inbound.sort_by_key(|p| p.id);
            // The users whose chats a dead instance had taken.
            let last = c
                .query(
                    "DELETE FROM last_chat WHERE owner = ANY($1)
                     RETURNING usr, contact_jid, created, preview",
                    &[&dead],
                )
                .map_err(err)?;
            let mut last_chats = read_last_chats(&last);
            last_chats.sort_by(|a, b| a.user.cmp(&b.user));
            Ok((
                renewed,
                Orphans {
                    dead,
                    chats,
                    inbound,
                    last_chats,
                },
            ))
        })?;
        let instance = self.owner().unwrap_or_default();
        let before = self.leased.swap(true, Ordering::SeqCst);
        match (before, renewed) {
            (false, _) => tracing::info!(%instance, "joined the instances sharing the store"),
            (true, false) => tracing::error!(
                %instance,
                "this instance's lease had lapsed (cut from the database for longer than a lease?) \
                 and its work was taken over: chats it was sending may go out twice"
            ),
            (true, true) => {}
        }
        Ok(orphans)
    }

    fn leave(&self) -> Result<(), StoreError> {
        let Some(me) = self.owner() else {
            return Ok(());
        };
        self.transaction(move |c| {
            c.execute("DELETE FROM last_chat WHERE owner = $1", &[&me])
                .map_err(err)?;
            c.execute("DELETE FROM sox_instances WHERE id = $1", &[&me])
                .map_err(err)?;
            Ok(())
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
        let owner = self.store.owner();
        self.store.in_tx(move |c| {
            let ticket: i64 = c
                .query_one(
                    "INSERT INTO chats (created, sent, data, owner) VALUES ($1, $2, $3, $4)
                     RETURNING ticket",
                    &[&created, &sent, &data, &owner],
                )
                .map_err(err)?
                .get(0);
            index_sent(c, &account, &ids, ticket)?;
            c.execute(
                "INSERT INTO last_chat (usr, owner, contact_jid, created, preview)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (usr, owner) DO UPDATE SET contact_jid = EXCLUDED.contact_jid,
                    created = EXCLUDED.created, preview = EXCLUDED.preview",
                &[
                    &last.user,
                    &owner.unwrap_or_default(),
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
        let key = sms_gateway_core::store::seen_key(&account, &carrier_id);
        let owner = self.store.owner();
        self.store.in_tx(move |c| {
            let replayed = c
                .query_opt(
                    "SELECT 1 FROM seen_expired WHERE account = $1 AND carrier_id = $2
                     UNION ALL SELECT 1 FROM seen_keyed WHERE key = $3 LIMIT 1",
                    &[&account, &carrier_id, &key],
                )
                .map_err(err)?
                .is_some();
            if replayed {
                return Ok(None);
            }
            // The unique key on (account, carrier_id) makes a repeat
            // whoever stored the first.
            Ok(c.query_opt(
                "INSERT INTO inbound (account, carrier_id, received, data, owner)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (account, carrier_id) DO NOTHING RETURNING id",
                &[&account, &carrier_id, &(now as i64), &data, &owner],
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
                "DELETE FROM seen_keyed WHERE received < $1",
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
            c.execute("DELETE FROM early_reports WHERE at < $1", &[&before])
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

    fn keep_early(
        &mut self,
        account: &str,
        carrier_id: &str,
        status: &DeliveryStatus,
        now: u64,
    ) -> Result<(), StoreError> {
        let status = match status {
            DeliveryStatus::Delivered => "delivered".to_owned(),
            // The code apart from the words (`failed:CODE\u{1f}WORDS`);
            // rows from before codes were kept apart are `failed:WORDS`.
            DeliveryStatus::Failed(f) => format!(
                "failed:{}\u{1f}{}",
                f.code.as_deref().unwrap_or(""),
                f.reason
            ),
            _ => return Ok(()),
        };
        let (account, carrier_id) = (account.to_owned(), carrier_id.to_owned());
        self.store.in_tx(move |c| {
            c.execute(
                "INSERT INTO early_reports (account, carrier_id, status, at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (account, carrier_id) DO UPDATE SET status = EXCLUDED.status",
                &[&account, &carrier_id, &status, &(now as i64)],
            )
            .map_err(err)?;
            Ok(())
        })
    }

    fn take_early(
        &mut self,
        account: &str,
        carrier_id: &str,
    ) -> Result<Option<DeliveryStatus>, StoreError> {
        let (account, carrier_id) = (account.to_owned(), carrier_id.to_owned());
        self.store.in_tx(move |c| {
            Ok(c.query_opt(
                "DELETE FROM early_reports WHERE account = $1 AND carrier_id = $2 RETURNING status",
                &[&account, &carrier_id],
            )
            .map_err(err)?
            .map(|r| {
                let s: String = r.get(0);
                match s.strip_prefix("failed:") {
                    Some(why) => DeliveryStatus::Failed(match why.split_once('\u{1f}') {
                        Some((code, words)) => {
                            sms_gateway_core::Failure::new(Some(code.to_owned()), words)
                        }
                        None => sms_gateway_core::Failure::from_words(why),
                    }),
                    None => DeliveryStatus::Delivered,
                }
            }))
        })
    }

    fn release_inbound(&mut self, id: u64) -> Result<(), StoreError> {
        if self.store.member.is_none() {
            return Ok(());
        }
        self.store.in_tx(move |c| {
            c.execute(
                "UPDATE inbound SET owner = NULL WHERE id = $1 AND NOT delivered",
                &[&(id as i64)],
            )
            .map_err(err)?;
            // Delivered to the listeners at the commit.
            c.execute("SELECT pg_notify('sox_work', '')", &[])
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

/// Unix seconds now.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Rows of (ticket, data) as chats; an unreadable one is skipped, and said.
fn read_chats(rows: Vec<postgres::Row>) -> Vec<(u64, ChatRecord)> {
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
    out
}

/// Rows of (id, account, data) as inbound texts; an unreadable one is
/// skipped, and said.
fn read_inbound(rows: Vec<postgres::Row>) -> Vec<PendingInbound> {
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
    out
}

/// Rows of (user, contact, created, preview) as last chats.
fn read_last_chats(rows: &[postgres::Row]) -> Vec<LastChat> {
    rows.iter()
        .map(|r| LastChat {
            user: r.get(0),
            contact_jid: r.get(1),
            created: r.get::<_, i64>(2) as u64,
            preview: r.get(3),
        })
        .collect()
}
