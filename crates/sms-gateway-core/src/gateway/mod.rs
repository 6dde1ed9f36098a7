//! The Gateway process: pure translation and routing between the XMPP side
//! and the phone network. It owns no socket; it reads events from two
//! channels and writes commands to two others, so every rule below can be
//! tested by feeding it events ([`Gateway::on_chat`], [`Gateway::on_pstn`]).
//!
//! Rules:
//! - a chat from a configured user to `+E164@domain` becomes a text from the
//!   user's number through the user's account;
//! - an inbound text to a user's number becomes a chat from `+sender@domain`
//!   to the user's bare JID, then one chat per media item (XEP-0066);
//! - `delivered` answers a chat that asked for a receipt with `<received/>`;
//!   a failed send or a failed delivery answers it with an error naming why;
//! - nothing is silent: every chat that is not texted gets an error, except
//!   those with no text at all (chat states, markers).

mod contacts;
mod groups;
mod inbound;
mod outbound;
pub(crate) mod process;
mod receipts;
mod recovery;
mod routing;
#[cfg(test)]
mod tests;

pub use crate::directory::User;
pub use recovery::NOTICE_INTERVAL;
pub use routing::{AccountPolicy, Routing};

use crate::message::{
    DeliveryStatus, InboundRejected, OutgoingStanza, PstnCommand, PstnEvent, XmppEvent,
};
use crate::store::{ChatRecord, MemoryStore, Store, StoreError, Transaction};
use crate::time::unix_now;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// How many early reports (before their send's result) are kept.
const EARLY_MEMORY: usize = 10_000;

/// The Gateway's memory: the chats on their way to the carrier, and
/// delivery reports that overtook their send's result. The component keeps
/// it across Gateway restarts; [`Gateway::recover`] rebuilds it from the
/// store after the program restarts. Sent chats waiting for their reports
/// (the receipt map) live only in the store, so memory does not grow with
/// the number of texts sent.
#[derive(Debug, Default)]
pub struct GatewayState {
    /// Chats not yet accepted by the carrier, by ticket.
    sending: HashMap<u64, ChatRecord>,
    /// Reports that arrived before their send's result (a fast carrier can
    /// call back before its API answer is read); applied when it arrives.
    early: HashMap<(String, String), DeliveryStatus>,
    early_order: VecDeque<(String, String)>,
    /// Each user's send allowance (`[limits]`); made at the first chat.
    rates: Option<crate::rate::Buckets>,
    /// Each user's daily allowance (`limits.texts_per_day`), when set.
    day_rates: Option<crate::rate::Buckets>,
    contacts: HashMap<String, contacts::Contact>,
    /// How many kept contacts have opted out: while none has (as almost
    /// always), a chat costs no lookup for it.
    opted_out: usize,
    /// How many contacts each user has kept (bounded: `MAX_CONTACTS`).
    contacts_per_user: HashMap<String, usize>,
    /// Each user's group rooms, by `{user}|{room}`.
    rooms: HashMap<String, groups::Room>,
    /// How many rooms each user has kept (bounded: `MAX_ROOMS`).
    rooms_per_user: HashMap<String, usize>,
    /// Lines made by the gateway so far (for their ids).
    lines: u64,
    /// Inbound texts whose words went ahead of their media (`media.wait_secs`),
    /// so the media's arrival delivers the media alone. Bounded; after a
    /// restart the words come again, under the same id.
    went_ahead: std::collections::VecDeque<u64>,
    /// Stored inbound texts held while the XMPP link is down (and, while
    /// they are released, the ones that come meanwhile, so none overtakes
    /// an older one), in the store's order. They stay pending in the store
    /// (a restart delivers them too); only their ids are here (#26).
    held: std::collections::BTreeSet<u64>,
    /// Whether held texts are being released now.
    releasing: bool,
}

/// The answer to an inbound webhook, to send once its chats are handed on.
#[derive(Debug)]
pub struct Ack {
    tx: oneshot::Sender<Result<(), InboundRejected>>,
    result: Result<(), InboundRejected>,
}

impl Ack {
    /// Tells the webhook handler the outcome.
    pub fn send(self) {
        // The handler may have given up (client gone); nothing to do then.
        let _ = self.tx.send(self.result);
    }

    /// Tells the webhook handler the text could not be kept after all (the
    /// store failed to commit): it answers 503 and the carrier retries.
    pub fn fail(self) {
        let _ = self.tx.send(Err(InboundRejected::Unavailable));
    }

    /// The outcome this ack carries.
    pub fn result(&self) -> &Result<(), InboundRejected> {
        &self.result
    }
}

/// One thing the Gateway wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Send a stanza to the XMPP server.
    Xmpp(OutgoingStanza),
    /// Ask the PSTN process to send a text.
    Pstn(PstnCommand),
}

/// How long temporary carrier failures are retried, by default.
pub const DEFAULT_RETRY_DEADLINE: Duration = Duration::from_secs(3600);

/// Translation and routing. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Gateway {
    routing: Arc<Routing>,
    state: Arc<Mutex<GatewayState>>,
    store: Arc<dyn Store>,
    retry_deadline: Duration,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("routing", &self.routing)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A Gateway over `routing`, remembering in `state` and writing through
    /// to an in-memory store.
    pub fn new(routing: Arc<Routing>, state: Arc<Mutex<GatewayState>>) -> Self {
        Self::with_store(
            routing,
            state,
            Arc::new(MemoryStore::default()),
            DEFAULT_RETRY_DEADLINE,
        )
    }

    /// A Gateway writing through to `store`, retrying temporary carrier
    /// failures for `retry_deadline`.
    pub fn with_store(
        routing: Arc<Routing>,
        state: Arc<Mutex<GatewayState>>,
        store: Arc<dyn Store>,
        retry_deadline: Duration,
    ) -> Self {
        Gateway {
            routing,
            state,
            store,
            retry_deadline,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, GatewayState> {
        // A panic elsewhere must not take the Gateway down with a poisoned lock:
        // the state is a set of maps that stay consistent between statements.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Names caller ID finds in the background, for [`Gateway`]'s loop.
    pub(crate) fn names_learned(
        &self,
    ) -> tokio::sync::mpsc::Receiver<(crate::phone::PhoneNumber, crate::phone::PhoneNumber)> {
        self.routing.users.names().learned()
    }

    /// Starts a store transaction for a batch of events: the handlers
    /// (`on_xmpp`, `on_pstn`) write through it, and nothing they return
    /// may leave before it is committed.
    pub fn begin(&self) -> Result<Box<dyn Transaction + '_>, StoreError> {
        self.store.begin()
    }

    /// A batch's commit took `took` and succeeded (or not): counted, and
    /// what `/readyz` reads of the store.
    /// This instance's place in a store shared by several, if it is.
    pub fn member(&self) -> Option<&crate::store::Member> {
        self.store.member()
    }

    /// Notified when another instance released work for this one.
    pub(crate) fn wake(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.store.wake()
    }

    pub(crate) fn commit_done(&self, took: Duration, ok: bool) {
        let m = &self.routing.metrics;
        m.store_commit_seconds.observe(took.as_secs_f64());
        m.store_ok.set(i64::from(ok));
    }

    /// Forgets store entries older than `keep` allows.
    pub fn expire(&self, tx: &mut dyn Transaction, keep: crate::store::Retention) {
        let (before, seen_before) = keep.cutoffs(unix_now());
        match tx.expire(before, seen_before) {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "expired old entries from the store"),
            Err(e) => tracing::error!(error = %e, "cannot expire old entries"),
        }
    }

    /// Handles an event from the XMPP process.
    pub fn on_xmpp(&self, tx: &mut dyn Transaction, event: XmppEvent) -> Vec<Action> {
        match event {
            XmppEvent::Chat(chat) => self.on_chat(tx, chat),
            XmppEvent::Delivered(id) => {
                if let Err(e) = tx.inbound_delivered(id) {
                    // It stays pending: delivered once more after a restart.
                    tracing::error!(error = %e, id, "cannot mark an inbound text delivered");
                }
                vec![]
            }
            XmppEvent::Subscription {
                from,
                to,
                subscribed,
            } => self.on_subscription(tx, &from, &to, subscribed),
            XmppEvent::Users { change, ticket } => self.on_users(tx, change, ticket),
            XmppEvent::Join {
                from,
                room,
                nick,
                max_history,
            } => self.on_join(tx, &from, &room, &nick, max_history),
        }
    }

    /// Handles an event from the PSTN process. For an inbound text, the
    /// returned [`Ack`] must be sent only after the actions are handed on, so
    /// the webhook is answered 2xx only then (invariant 2).
    pub fn on_pstn(
        &self,
        tx: &mut dyn Transaction,
        event: PstnEvent,
    ) -> (Vec<Action>, Option<Ack>) {
        match event {
            PstnEvent::SendResult { ticket, ids, error } => {
                (self.on_send_result(tx, ticket, ids, error), None)
            }
            PstnEvent::Status { account, report } => (self.on_status(tx, &account, report), None),
            PstnEvent::MediaSlow { account, id, sms } => {
                (self.on_media_slow(&account, id, &sms), None)
            }
            PstnEvent::MediaFetched { account, id, sms } => {
                (self.on_media_fetched(tx, &account, id, &sms), None)
            }
            PstnEvent::Inbound { account, sms, ack } => match self.on_inbound(tx, &account, &sms) {
                Ok(actions) => (
                    actions,
                    Some(Ack {
                        tx: ack,
                        result: Ok(()),
                    }),
                ),
                Err(e) => {
                    tracing::warn!(%account, error = %e, "inbound text refused");
                    (
                        vec![],
                        Some(Ack {
                            tx: ack,
                            result: Err(e),
                        }),
                    )
                }
            },
        }
    }
}
