//! What must survive the program dying: chats accepted for sending, inbound
//! texts not yet handed to the XMPP server, the receipt map, and the
//! carrier message ids already seen (to deduplicate webhook retries).
//!
//! The Gateway writes through to a [`Store`] and keeps the same state in
//! memory; on start it reads everything back ([`crate::Gateway::recover`]).
//! [`MemoryStore`] keeps it in memory only (tests, embedders who want no
//! persistence); `sms-store-sqlite` keeps it in SQLite.

use crate::message::{InboundSms, OutboundSms};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Entries ([`Transaction::put_entry`]) of users who registered (XEP-0077)
/// or were added by an admin, by bare JID.
pub const ENTRY_USER: &str = "user";
/// Entries of what the gateway knows of a user's contact (the JID the user
/// writes to, the subscription, the name given to the roster), by
/// `{user}|{number}`.
pub const ENTRY_CONTACT: &str = "contact";
/// Entries of a user's settings, by bare JID.
pub const ENTRY_SETTINGS: &str = "settings";
/// Kind of entry: a user's group room (participants, subject, history),
/// key `{user}|{room local part}`.
pub const ENTRY_ROOM: &str = "room";

/// A store failure. The Gateway treats it as "not stored": an inbound
/// webhook is answered 5xx (the carrier retries), a chat gets an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store: {message}")]
pub struct StoreError {
    /// What kind of failure.
    pub kind: StoreErrorKind,
    /// What happened, for the log (never a message's text).
    pub message: String,
}

/// The kinds of [`StoreError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The store is busy or in use elsewhere (another gateway on the same
    /// file, a lock held): trying again may work.
    Busy,
    /// Reading or writing failed (disk full, I/O error, connection lost):
    /// trying again may work.
    Io,
    /// What the store holds cannot be read (corrupt, or a schema newer than
    /// this program).
    Corrupt,
    /// Anything else (a bug, a bad path).
    Other,
}

impl StoreError {
    /// A new error of `kind`.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        StoreError {
            kind,
            message: message.into(),
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_temporary(&self) -> bool {
        matches!(self.kind, StoreErrorKind::Busy | StoreErrorKind::Io)
    }
}

/// Where a chat stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ChatState {
    /// Accepted; its parts have not all been accepted by the carrier yet.
    Sending,
    /// Every part was accepted (`ids`); waiting for `undelivered` reports.
    Sent {
        /// The carrier's ids of the parts.
        ids: Vec<String>,
        /// Parts not yet reported delivered.
        undelivered: usize,
    },
}

/// A chat accepted for sending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatRecord {
    /// When it was accepted, Unix seconds (retries end a deadline after it).
    pub created: u64,
    /// The provider account.
    pub account: String,
    /// The sender's full JID.
    pub user_full_jid: String,
    /// The contact JID it was addressed to.
    pub contact_jid: String,
    /// The chat's stanza id.
    pub stanza_id: Option<String>,
    /// Whether the sender asked for a receipt.
    pub receipt: bool,
    /// The texts to send, in order.
    pub parts: Vec<OutboundSms>,
    /// Where it stands.
    pub state: ChatState,
    /// A group text: one message to several numbers, whose carrier reports
    /// each recipient on its own. Each failure is told (naming whom); no
    /// receipt comes, and it stays until it expires.
    #[serde(default)]
    pub group: bool,
}

/// The last chat a user sent that the store took: after an unclean stop,
/// the user is told that anything sent after it did not arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastChat {
    /// The user's bare JID.
    pub user: String,
    /// Where it went.
    pub contact_jid: String,
    /// When it was taken, Unix seconds.
    pub created: u64,
    /// Its first words.
    pub preview: String,
}

impl LastChat {
    /// The record [`Transaction::insert_chat`] keeps for `chat`.
    pub fn of(chat: &ChatRecord) -> Self {
        const PREVIEW_CHARS: usize = 40;
        let text = chat.parts.first().map(|p| p.body.as_str()).unwrap_or("");
        let preview = crate::text::preview(text, PREVIEW_CHARS);
        LastChat {
            user: chat
                .user_full_jid
                .split('/')
                .next()
                .unwrap_or_default()
                .to_lowercase(),
            contact_jid: chat.contact_jid.clone(),
            created: chat.created,
            preview,
        }
    }
}

/// An inbound text kept until the XMPP server has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingInbound {
    /// The store's id for it.
    pub id: u64,
    /// The provider account it came through.
    pub account: String,
    /// The text.
    pub sms: InboundSms,
}

/// This gateway's place in a store shared by several ([`Store::member`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The instance's name (`[cluster] instance`): unique among those on
    /// the store at once.
    pub instance: String,
    /// How long the instance's lease lasts unless renewed: its work is
    /// taken over by another instance this long after it stops renewing.
    pub lease: std::time::Duration,
}

/// What instances that are gone left undone, taken over by this one
/// ([`Store::adopt`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Orphans {
    /// The instances whose leases lapsed (they died, or lost the database
    /// for longer than a lease), found in this call.
    pub dead: Vec<String>,
    /// Their chats not yet accepted by the carrier, by ticket: to send.
    pub chats: Vec<(u64, ChatRecord)>,
    /// Their inbound texts not yet taken by the XMPP server, oldest first.
    pub inbound: Vec<PendingInbound>,
    /// The last chat each user had handed to a dead instance: those users
    /// are told that what they sent after it may not have arrived.
    pub last_chats: Vec<LastChat>,
}

impl Orphans {
    /// Whether nothing was taken over.
    pub fn is_empty(&self) -> bool {
        self.dead.is_empty()
            && self.chats.is_empty()
            && self.inbound.is_empty()
            && self.last_chats.is_empty()
    }
}

/// Durable state, written through transactions ([`Store::begin`]).
///
/// Within one gateway process, one Gateway writes at a time, so at most
/// one transaction is open. A store of one gateway (SQLite, memory, or
/// PostgreSQL without `[cluster]`) is read whole at start, and
/// [`crate::Gateway::recover`] resends every pending chat as its own. A
/// store shared by several instances ([`Store::member`] is `Some`) marks
/// each chat and inbound text with the instance that took it: the reads
/// below return this instance's own, and the work of an instance that is
/// gone is taken over under leases ([`Store::adopt`]).
pub trait Store: Send + Sync + 'static {
    /// Starts a transaction. What is written through it becomes durable at
    /// [`Transaction::commit`], all of it together; the Gateway lets
    /// nothing out (no webhook answer, no text, no stanza) before that.
    /// Dropped without a commit, none of it does where the backend can
    /// roll back (SQLite; [`MemoryStore`] cannot, and keeps nothing
    /// durable anyway).
    fn begin(&self) -> Result<Box<dyn Transaction + '_>, StoreError>;
    /// Every chat not forgotten, by ticket.
    fn chats(&self) -> Result<Vec<(u64, ChatRecord)>, StoreError>;
    /// Inbound texts not yet taken by the XMPP server, oldest first.
    fn pending_inbound(&self) -> Result<Vec<PendingInbound>, StoreError>;
    /// The same, only those with `first <= id <= last`: what releasing the
    /// texts held through an outage reads, one batch at a time, so that a
    /// backlog of N texts costs N rows read, not N²/batch (#26). The
    /// default reads them all and keeps the range; a backend with an index
    /// on `id` reads the range alone.
    fn pending_inbound_between(
        &self,
        first: u64,
        last: u64,
    ) -> Result<Vec<PendingInbound>, StoreError> {
        let mut all = self.pending_inbound()?;
        all.retain(|p| (first..=last).contains(&p.id));
        Ok(all)
    }
    /// Each user's last chat taken ([`Transaction::insert_chat`]); kept
    /// until a newer one replaces it.
    fn last_chats(&self) -> Result<Vec<LastChat>, StoreError>;
    /// A number kept under `key` ([`Transaction::set_meta`]), if any.
    fn meta(&self, key: &str) -> Result<Option<u64>, StoreError>;
    /// Every entry of `kind` ([`Transaction::put_entry`]), as (key, value),
    /// ordered by key.
    fn entries(&self, kind: &str) -> Result<Vec<(String, String)>, StoreError>;
    /// This instance's name and lease when the store is shared by several
    /// gateways; `None` (the default) for a store of one.
    fn member(&self) -> Option<&Member> {
        None
    }
    /// For a shared store: renews this instance's lease, and takes over
    /// the unfinished work of instances whose leases lapsed or that
    /// stopped cleanly, each piece by one instance only. Called every
    /// third of a lease. A store of one gateway has nothing to take.
    ///
    /// Inbound texts are taken only `with_link` (this instance holds an
    /// XMPP link to deliver them through): those of dead instances, and
    /// those released by instances without one
    /// ([`Transaction::release_inbound`]).
    fn adopt(&self, with_link: bool) -> Result<Orphans, StoreError> {
        let _ = with_link;
        Ok(Orphans::default())
    }
    /// For a shared store: notified when another instance released work
    /// for an instance with a link to take ([`Transaction::release_inbound`];
    /// PostgreSQL's `LISTEN`/`NOTIFY`). The Gateway then calls
    /// [`Store::adopt`] at once instead of at its next renewal.
    fn wake(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }
    /// For a shared store, at a clean stop: gives the lease up, so what
    /// this instance leaves undone is taken over at once, without telling
    /// anyone of a loss.
    fn leave(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// [`Store::begin`], the writes of a closure, and the commit, in one call.
pub trait StoreExt: Store {
    /// Runs `f` in a transaction of its own, and commits it.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut dyn Transaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut tx = self.begin()?;
        let value = f(&mut *tx)?;
        tx.commit()?;
        Ok(value)
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

/// The writes (and the one read on the hot path) of one transaction.
pub trait Transaction: Send {
    /// Saves a chat accepted for sending, and remembers it as its user's
    /// last chat ([`LastChat::of`]); returns its ticket (unique, increasing).
    fn insert_chat(&mut self, chat: &ChatRecord) -> Result<u64, StoreError>;
    /// Replaces chat `ticket`'s record.
    fn update_chat(&mut self, ticket: u64, chat: &ChatRecord) -> Result<(), StoreError>;
    /// Forgets chat `ticket` (delivered, failed or refused).
    fn delete_chat(&mut self, ticket: u64) -> Result<(), StoreError>;
    /// The sent chat one of whose parts the carrier calls `carrier_id` on
    /// `account` (the receipt map: chats in [`ChatState::Sent`] are found by
    /// each of their `ids`).
    fn find_sent(
        &mut self,
        account: &str,
        carrier_id: &str,
    ) -> Result<Option<(u64, ChatRecord)>, StoreError>;
    /// Drops one carrier id from the receipt map (that part was reported
    /// delivered: a repeat of its report then finds nothing). The chat
    /// stays findable by its other parts' ids.
    fn forget_sent_id(&mut self, account: &str, carrier_id: &str) -> Result<(), StoreError>;
    /// Saves an inbound text unless `(account, sms.id)` was seen before:
    /// `Some(id)` for a new one, `None` for a repeat (a carrier's retry).
    /// A text saved in a transaction that is then not committed is not
    /// "seen": the carrier's retry of its webhook is stored.
    fn insert_inbound(
        &mut self,
        account: &str,
        sms: &InboundSms,
        now: u64,
    ) -> Result<Option<u64>, StoreError>;
    /// Replaces the content of inbound text `id`, not yet delivered (its
    /// media once fetched: a restart then does not fetch them again).
    fn update_inbound(&mut self, id: u64, sms: &InboundSms) -> Result<(), StoreError>;
    /// Marks inbound text `id` as taken by the XMPP server (it is then kept
    /// only to recognise repeats).
    fn inbound_delivered(&mut self, id: u64) -> Result<(), StoreError>;
    /// Forgets sent chats and delivered inbound texts from before `before`
    /// (Unix seconds); returns how many. The `(account, carrier id)` of an
    /// inbound text is remembered until `seen_before` (no later than
    /// `before`): a webhook replayed after its text is gone must still be
    /// a repeat, and Twilio's and SignalWire's signatures carry no time.
    fn expire(&mut self, before: u64, seen_before: u64) -> Result<usize, StoreError>;
    /// Keeps `value` under `key`.
    fn set_meta(&mut self, key: &str, value: u64) -> Result<(), StoreError>;
    /// Writes (`Some`) or deletes (`None`) the entry `key` of `kind`: small
    /// records the gateway keeps as JSON text — users who registered
    /// ([`ENTRY_USER`]), what it knows of each user's contacts
    /// ([`ENTRY_CONTACT`]), users' settings ([`ENTRY_SETTINGS`]).
    fn put_entry(&mut self, kind: &str, key: &str, value: Option<&str>) -> Result<(), StoreError>;
    /// For a shared store: gives inbound text `id`, stored by this
    /// instance, to whichever instance holds an XMPP link (this one has
    /// none now), waking them at the commit ([`Store::wake`]). A store of
    /// one gateway keeps it: delivered when the link is back.
    fn release_inbound(&mut self, id: u64) -> Result<(), StoreError> {
        let _ = id;
        Ok(())
    }
    /// For a shared store: keeps a final delivery report for a carrier id
    /// no sent chat has yet (the instance that sent it, maybe another, has
    /// not recorded the send's result), for [`Transaction::take_early`].
    /// Kept until [`Transaction::expire`]'s `before`. A store of one
    /// gateway keeps nothing: the Gateway holds such reports in memory.
    fn keep_early(
        &mut self,
        account: &str,
        carrier_id: &str,
        status: &crate::message::DeliveryStatus,
        now: u64,
    ) -> Result<(), StoreError> {
        let _ = (account, carrier_id, status, now);
        Ok(())
    }
    /// Takes the report [`Transaction::keep_early`] kept for `carrier_id`.
    fn take_early(
        &mut self,
        account: &str,
        carrier_id: &str,
    ) -> Result<Option<crate::message::DeliveryStatus>, StoreError> {
        let _ = (account, carrier_id);
        Ok(None)
    }
    /// Makes everything written through this transaction durable.
    fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

/// The methods of a [`Transaction`] whose writes go straight to
/// `self.store`'s inherent methods of the same names (all but `commit`).
#[macro_export]
#[doc(hidden)]
macro_rules! delegate_writes {
    () => {
        fn insert_chat(&mut self, chat: &ChatRecord) -> Result<u64, StoreError> {
            self.store.insert_chat(chat)
        }
        fn update_chat(&mut self, ticket: u64, chat: &ChatRecord) -> Result<(), StoreError> {
            self.store.update_chat(ticket, chat)
        }
        fn delete_chat(&mut self, ticket: u64) -> Result<(), StoreError> {
            self.store.delete_chat(ticket)
        }
        fn find_sent(
            &mut self,
            account: &str,
            carrier_id: &str,
        ) -> Result<Option<(u64, ChatRecord)>, StoreError> {
            self.store.find_sent(account, carrier_id)
        }
        fn forget_sent_id(&mut self, account: &str, carrier_id: &str) -> Result<(), StoreError> {
            self.store.forget_sent_id(account, carrier_id)
        }
        fn insert_inbound(
            &mut self,
            account: &str,
            sms: &InboundSms,
            now: u64,
        ) -> Result<Option<u64>, StoreError> {
            self.store.insert_inbound(account, sms, now)
        }
        fn update_inbound(&mut self, id: u64, sms: &InboundSms) -> Result<(), StoreError> {
            self.store.update_inbound(id, sms)
        }
        fn inbound_delivered(&mut self, id: u64) -> Result<(), StoreError> {
            self.store.inbound_delivered(id)
        }
        fn expire(&mut self, before: u64, seen_before: u64) -> Result<usize, StoreError> {
            self.store.expire(before, seen_before)
        }
        fn set_meta(&mut self, key: &str, value: u64) -> Result<(), StoreError> {
            self.store.set_meta(key, value)
        }
        fn put_entry(
            &mut self,
            kind: &str,
            key: &str,
            value: Option<&str>,
        ) -> Result<(), StoreError> {
            self.store.put_entry(kind, key, value)
        }
    };
}

#[derive(Default)]
struct Memory {
    next: u64,
    chats: BTreeMap<u64, ChatRecord>,
    /// (account, carrier id) → ticket, for sent chats.
    sent_ids: HashMap<(String, String), u64>,
    inbound: BTreeMap<u64, (String, InboundSms, u64, bool)>,
    /// (account, carrier id) → inbound id.
    seen: HashMap<(String, String), u64>,
    /// Pairs whose text has expired, with its arrival time.
    seen_expired: HashMap<(String, String), u64>,
    last: BTreeMap<String, LastChat>,
    meta: HashMap<String, u64>,
    entries: BTreeMap<(String, String), String>,
    /// Batches committed (nothing to make durable; counted for tests).
    commits: u64,
}

impl Memory {
    fn unindex(&mut self, ticket: u64) {
        if let Some(ChatRecord {
            account,
            state: ChatState::Sent { ids, .. },
            ..
        }) = self.chats.get(&ticket)
        {
            for id in ids {
                self.sent_ids.remove(&(account.clone(), id.clone()));
            }
        }
    }

    /// Stores `chat`; its ids join the receipt map only when it becomes
    /// sent (ids dropped since, parts reported delivered, stay dropped).
    fn put(&mut self, ticket: u64, chat: &ChatRecord) {
        let was_sent = self
            .chats
            .get(&ticket)
            .is_some_and(|c| matches!(c.state, ChatState::Sent { .. }));
        if was_sent {
            self.chats.insert(ticket, chat.clone());
            return;
        }
        if let ChatState::Sent { ids, .. } = &chat.state {
            for id in ids {
                self.sent_ids
                    .insert((chat.account.clone(), id.clone()), ticket);
            }
        }
        self.chats.insert(ticket, chat.clone());
    }
}

/// A [`Store`] in memory: nothing survives the process.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Memory>,
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many batches were committed (for tests).
    #[doc(hidden)]
    pub fn commits(&self) -> u64 {
        self.lock().commits
    }
}

impl MemoryStore {
    fn insert_chat(&self, chat: &ChatRecord) -> Result<u64, StoreError> {
        let mut m = self.lock();
        m.next += 1;
        let t = m.next;
        m.put(t, chat);
        let last = LastChat::of(chat);
        m.last.insert(last.user.clone(), last);
        Ok(t)
    }
    fn update_chat(&self, ticket: u64, chat: &ChatRecord) -> Result<(), StoreError> {
        self.lock().put(ticket, chat);
        Ok(())
    }
    fn delete_chat(&self, ticket: u64) -> Result<(), StoreError> {
        let mut m = self.lock();
        m.unindex(ticket);
        m.chats.remove(&ticket);
        Ok(())
    }
    fn find_sent(
        &self,
        account: &str,
        carrier_id: &str,
    ) -> Result<Option<(u64, ChatRecord)>, StoreError> {
        let m = self.lock();
        Ok(m.sent_ids
            .get(&(account.to_owned(), carrier_id.to_owned()))
            .and_then(|t| Some((*t, m.chats.get(t)?.clone()))))
    }
    fn forget_sent_id(&self, account: &str, carrier_id: &str) -> Result<(), StoreError> {
        self.lock()
            .sent_ids
            .remove(&(account.to_owned(), carrier_id.to_owned()));
        Ok(())
    }
    fn insert_inbound(
        &self,
        account: &str,
        sms: &InboundSms,
        now: u64,
    ) -> Result<Option<u64>, StoreError> {
        let mut m = self.lock();
        let key = (account.to_owned(), sms.id.clone());
        if m.seen.contains_key(&key) || m.seen_expired.contains_key(&key) {
            return Ok(None);
        }
        m.next += 1;
        let id = m.next;
        m.seen.insert(key, id);
        m.inbound
            .insert(id, (account.to_owned(), sms.clone(), now, false));
        Ok(Some(id))
    }
    fn update_inbound(&self, id: u64, sms: &InboundSms) -> Result<(), StoreError> {
        if let Some(e) = self.lock().inbound.get_mut(&id).filter(|e| !e.3) {
            e.1 = sms.clone();
        }
        Ok(())
    }
    fn inbound_delivered(&self, id: u64) -> Result<(), StoreError> {
        if let Some(e) = self.lock().inbound.get_mut(&id) {
            e.3 = true;
        }
        Ok(())
    }
    fn expire(&self, before: u64, seen_before: u64) -> Result<usize, StoreError> {
        let mut m = self.lock();
        m.seen_expired.retain(|_, at| *at >= seen_before);
        let old_chats: Vec<u64> = m
            .chats
            .iter()
            .filter(|(_, c)| c.created < before && c.state != ChatState::Sending)
            .map(|(t, _)| *t)
            .collect();
        for t in &old_chats {
            m.unindex(*t);
            m.chats.remove(t);
        }
        let old_inbound: Vec<u64> = m
            .inbound
            .iter()
            .filter(|(_, e)| e.2 < before && e.3)
            .map(|(id, _)| *id)
            .collect();
        for id in &old_inbound {
            if let Some((account, sms, received, _)) = m.inbound.remove(id) {
                let key = (account, sms.id);
                m.seen.remove(&key);
                if received >= seen_before {
                    m.seen_expired.insert(key, received);
                }
            }
        }
        Ok(old_chats.len() + old_inbound.len())
    }
    fn set_meta(&self, key: &str, value: u64) -> Result<(), StoreError> {
        self.lock().meta.insert(key.to_owned(), value);
        Ok(())
    }
    fn put_entry(&self, kind: &str, key: &str, value: Option<&str>) -> Result<(), StoreError> {
        let k = (kind.to_owned(), key.to_owned());
        let mut m = self.lock();
        match value {
            Some(v) => m.entries.insert(k, v.to_owned()),
            None => m.entries.remove(&k),
        };
        Ok(())
    }
}

impl Store for MemoryStore {
    fn begin(&self) -> Result<Box<dyn Transaction + '_>, StoreError> {
        Ok(Box::new(MemoryTx { store: self }))
    }
    fn last_chats(&self) -> Result<Vec<LastChat>, StoreError> {
        Ok(self.lock().last.values().cloned().collect())
    }
    fn meta(&self, key: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.lock().meta.get(key).copied())
    }
    fn entries(&self, kind: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self
            .lock()
            .entries
            .iter()
            .filter(|((k, _), _)| k == kind)
            .map(|((_, key), v)| (key.clone(), v.clone()))
            .collect())
    }
    fn chats(&self) -> Result<Vec<(u64, ChatRecord)>, StoreError> {
        Ok(self
            .lock()
            .chats
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect())
    }
    fn pending_inbound(&self) -> Result<Vec<PendingInbound>, StoreError> {
        Ok(self
            .lock()
            .inbound
            .iter()
            .filter(|(_, e)| !e.3)
            .map(|(id, (account, sms, _, _))| PendingInbound {
                id: *id,
                account: account.clone(),
                sms: sms.clone(),
            })
            .collect())
    }
}

/// A transaction on a [`MemoryStore`]: its writes apply at once (there is
/// no rolling back), and a commit only counts.
struct MemoryTx<'a> {
    store: &'a MemoryStore,
}

impl Transaction for MemoryTx<'_> {
    delegate_writes!();

    fn commit(self: Box<Self>) -> Result<(), StoreError> {
        self.store.lock().commits += 1;
        Ok(())
    }
}

/// How long the store keeps things: texts and receipts for `texts`, the
/// carrier ids of inbound texts (to recognise replays) for `seen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Sent chats (the receipt map) and delivered inbound texts.
    pub texts: std::time::Duration,
    /// Inbound texts' `(account, carrier id)`, at least as long as `texts`.
    pub seen: std::time::Duration,
}

impl Retention {
    /// The `before` and `seen_before` of [`Transaction::expire`] at `now`.
    pub fn cutoffs(&self, now: u64) -> (u64, u64) {
        (
            now.saturating_sub(self.texts.as_secs()),
            now.saturating_sub(self.seen.as_secs().max(self.texts.as_secs())),
        )
    }
}

/// Everything a store holds, row by row, records as their JSON text: what
/// `sms-over-xmpp migrate-store` copies from one backend to another, ids
/// kept (tickets, inbound ids), so nothing a carrier or a client refers
/// to changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dump {
    /// Chats: ticket, created, whether sent, the [`ChatRecord`] as JSON.
    pub chats: Vec<(u64, u64, bool, String)>,
    /// The receipt map: account, carrier id, ticket.
    pub sent_ids: Vec<(String, String, u64)>,
    /// Inbound texts: id, account, carrier id, received, delivered, the
    /// [`InboundSms`] as JSON (empty once delivered).
    pub inbound: Vec<(u64, String, String, u64, bool, String)>,
    /// Carrier ids of expired inbound texts: account, carrier id, received.
    pub seen_expired: Vec<(String, String, u64)>,
    /// Expired inbound texts kept only as their [`seen_key`]: key, received.
    pub seen_keyed: Vec<(i64, u64)>,
    /// Each user's last chat.
    pub last_chats: Vec<LastChat>,
    /// The numbers kept by [`Transaction::set_meta`].
    pub meta: Vec<(String, u64)>,
    /// The entries: kind, key, value.
    pub entries: Vec<(String, String, String)>,
}

impl Dump {
    /// How many rows of each kind, for people.
    pub fn summary(&self) -> String {
        format!(
            "{} chats ({} carrier ids), {} inbound texts ({} waiting), {} expired ids, {} last chats, {} meta, {} entries",
            self.chats.len(),
            self.sent_ids.len(),
            self.inbound.len(),
            self.inbound.iter().filter(|r| !r.4).count(),
            self.seen_expired.len() + self.seen_keyed.len(),
            self.last_chats.len(),
            self.meta.len(),
            self.entries.len()
        )
    }
}

/// The 64-bit key a store may keep for an expired inbound text's (account,
/// carrier id) pair instead of the pair: SipHash-2-4 of the account, a
/// 0xff byte (never in UTF-8, so no two pairs give the same bytes) and the
/// carrier id, under a fixed key, so every store and every start computes
/// the same. The key need not be secret: carrier ids are chosen by the
/// carrier, whose webhooks are authenticated, so nobody can pick ids that
/// collide. Two carrier ids share a key with odds of about n / 2^64 for n
/// kept (one in 10^13 at a million): that text would be taken for a repeat.
/// The SQLite store keys its receipt map (a sent text's carrier ids) the
/// same way, and checks the chat a key finds for the id itself.
pub fn seen_key(account: &str, carrier_id: &str) -> i64 {
    use std::hash::Hasher;
    let mut h = siphasher::sip::SipHasher24::new_with_keys(SEEN_KEY.0, SEEN_KEY.1);
    h.write(account.as_bytes());
    h.write(&[0xff]);
    h.write(carrier_id.as_bytes());
    h.finish() as i64
}

/// [`seen_key`]'s SipHash key. Changing it makes every stored key useless.
const SEEN_KEY: (u64, u64) = (
    u64::from_le_bytes(*b"sms-xmpp"),
    u64::from_le_bytes(*b"seen-key"),
);

mod contract;
pub use contract::check_store;

#[cfg(test)]
mod tests;
