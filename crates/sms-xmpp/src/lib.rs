//! # sms-xmpp
//!
//! The XMPP process of sms-over-xmpp: one XEP-0114 link to the XMPP server's
//! component port, on tokio-xmpp's XML stream and xmpp-parsers. It logs in,
//! keeps an idle link alive, reconnects with capped backoff when the link
//! drops, answers protocol duties itself (ping, disco, XEP-0100 gateway
//! prompt, vCards, presence, unknown IQs), hands chats to the Gateway and
//! writes what the Gateway sends back.
//!
//! Keep-alive: when the link has been silent for `keepalive_secs`, the
//! stream reports a soft timeout and we send an XEP-0199 ping to our own
//! domain; the server routes it back to us, so a healthy link always has
//! traffic. A link still silent `keepalive_secs` later is dead and replaced.
//!
//! Acknowledged delivery: "written to the socket" is not "taken by the
//! server" (a server killed with bytes unread loses them), and XEP-0114 has
//! no acknowledgements. But a server handles one stream in order, so after
//! each batch of stanzas we write a ping to our own domain, and the batch
//! counts as taken only when the server routes that ping back to us. Until
//! then it is kept: if the link drops, the batch is written again (the same
//! stanzas, the same ids, each with an XEP-0359 origin-id) on the next one,
//! and a stored inbound text leaves the store only once acknowledged.

mod depth;
mod error;
// Not API: sms-bench's bare echo component logs in with it.
#[doc(hidden)]
pub mod link;
mod translate;
mod upload;

pub use error::Error;

// Not API: the fuzz targets and the benchmarks reach the parsers here.
#[doc(hidden)]
pub use depth::limit_depth;
#[doc(hidden)]
pub use translate::{answer_iq, message_to_event, outgoing_to_stanza};

use translate::{gateway_answer, gateway_prompt, reply, vcard};

use async_trait::async_trait;
use link::{Incoming, Link};
use sms_gateway_core::callerid::CallerId;
use sms_gateway_core::component::backoff;
use sms_gateway_core::config::{normalize_bare_jid, Config, PhoneConfig};
use sms_gateway_core::{
    CancellationToken, OutgoingStanza, PhoneNumber, ProcessError, XmppChannels, XmppEvent, XmppLink,
};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_xmpp::jid::Jid;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Id, Message, MessageType};
use tokio_xmpp::parsers::ping::Ping;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType};
use tokio_xmpp::parsers::stanza_id::OriginId;
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::Stanza;

/// How long a login may take before we give up and retry.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the server to close its side after we closed ours.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How many (user, contact) pairs remember that the contact's name was sent.
const NICKS_SENT: usize = 100_000;
/// The most stanzas from the Gateway written with one flush.
const WRITE_BATCH: usize = 64;
/// How long a clean stop waits for the server to acknowledge what was written.
const ACK_AT_STOP: Duration = Duration::from_secs(2);
/// The most stanzas written and not yet acknowledged: past it, nothing more
/// is taken from the Gateway until the server catches up.
const MAX_UNACKED: usize = 4096;

/// What the Gateway asked for, with what makes its stanza: kept until the
/// server has taken it, so that writing it again (on a new link) writes
/// the same stanza, with the same id.
struct Built {
    out: OutgoingStanza,
    /// The stanza's id (an error's is the user's chat's, so unused).
    id: String,
    /// The contact's name, for the first chat from it.
    nick: Option<String>,
}

impl Built {
    /// The stored inbound text this stanza completes, if any.
    fn inbound_id(&self) -> Option<u64> {
        match &self.out {
            OutgoingStanza::Chat { inbound_id, .. } => *inbound_id,
            _ => None,
        }
    }

    /// The stanza, the same every time.
    fn stanza(&self) -> Result<Stanza, Error> {
        let mut stanza = outgoing_to_stanza(&self.out, || self.id.clone())?;
        if let (OutgoingStanza::Chat { .. }, Stanza::Message(m)) = (&self.out, &mut stanza) {
            if let Some(name) = &self.nick {
                m.payloads.push(translate::nick(name));
            }
            // A chat written again after a lost link is the same stanza:
            // XEP-0359 lets a client that de-duplicates see it.
            m.payloads.push(
                OriginId {
                    id: self.id.clone(),
                }
                .into(),
            );
        }
        Ok(stanza)
    }
}

/// Stanzas written with one flush, and the id of the ping that followed
/// them (`None`: a ping was out already; a later one covers this batch).
struct Batch {
    ping_id: Option<String>,
    stanzas: Vec<Built>,
}

/// What the link holds for the Gateway across reconnects.
#[derive(Default)]
struct Outbox {
    /// Built, not yet written (or written on a link that failed mid-write).
    unsent: Vec<Built>,
    /// Written, waiting for the server to route the batch's ping back.
    unacked: VecDeque<Batch>,
    /// When the ping now out was written.
    ping_written: Option<tokio::time::Instant>,
}

impl Outbox {
    /// Whether a ping is out on this link. At most one is: batches written
    /// meanwhile wait for the next, so under load many batches share one
    /// round trip (and the server routes one ping, not one per batch).
    fn ping_out(&self) -> bool {
        self.unacked.iter().any(|b| b.ping_id.is_some())
    }

    /// Whether batches wait with no ping out to cover them.
    fn ping_due(&self) -> bool {
        !self.unacked.is_empty() && !self.ping_out()
    }

    /// Stanzas written and not acknowledged.
    fn unacked_stanzas(&self) -> usize {
        self.unacked.iter().map(|b| b.stanzas.len()).sum()
    }
}

/// The XMPP process. One value serves every incarnation the supervisor starts.
pub struct XmppProcess {
    server: String,
    domain: String,
    secret: sms_gateway_core::Secret,
    keepalive: Duration,
    phone: PhoneConfig,
    /// Configured users' bare JIDs (lower-cased) and numbers.
    users: HashMap<String, PhoneNumber>,
    caller_id: std::sync::Arc<CallerId>,
    nicks_sent: Mutex<lru::LruCache<(String, String), ()>>,
    next_id: AtomicU64,
    /// Tells this run's stanza ids from other runs'.
    run: String,
    /// Chats the server sent while the link was closing at shutdown.
    dropped_at_close: std::sync::atomic::AtomicUsize,
    /// What the server has not taken yet. It outlives an incarnation that
    /// panics (a tokio mutex is not poisoned): the next one writes it.
    outbox: tokio::sync::Mutex<Outbox>,
    /// XEP-0363 slots for `media.store = "upload"`.
    uploads: std::sync::Arc<upload::Uploads>,
    /// Queries (from `uploads`) for the link to send.
    queries: tokio::sync::Mutex<mpsc::Receiver<upload::Query>>,
    /// Queries sent, by id: whom they went to and where the answer goes.
    pending: Mutex<HashMap<String, PendingQuery>>,
}

type PendingQuery = (
    Jid,
    tokio::sync::oneshot::Sender<Result<Option<tokio_xmpp::minidom::Element>, String>>,
);

enum SessionEnd {
    Shutdown,
    Lost(Error),
}

fn jid(s: &str) -> Option<Jid> {
    Jid::new(s).ok()
}

impl XmppProcess {
    /// A process for a validated config.
    pub fn new(config: &Config) -> Self {
        let (queries_tx, queries) = mpsc::channel(64);
        let users = config
            .users
            .iter()
            .filter_map(|u| {
                Some((
                    normalize_bare_jid(&u.jid)?,
                    PhoneNumber::parse(&u.number, None).ok()?,
                ))
            })
            .collect();
        XmppProcess {
            server: config.xmpp.server.clone(),
            domain: config.xmpp.domain.to_lowercase(),
            secret: config.xmpp.secret.clone(),
            keepalive: Duration::from_secs(config.xmpp.keepalive_secs),
            phone: config.phone.clone(),
            users,
            caller_id: std::sync::Arc::new(CallerId::from_table(&config.caller_id)),
            nicks_sent: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(NICKS_SENT).expect("not zero"),
            )),
            next_id: AtomicU64::new(1),
            run: sms_gateway_core::run_tag(),
            dropped_at_close: Default::default(),
            outbox: Default::default(),
            uploads: std::sync::Arc::new(upload::Uploads::new(
                config.media.upload_service.as_deref(),
                queries_tx,
            )),
            queries: tokio::sync::Mutex::new(queries),
            pending: Mutex::default(),
        }
    }

    /// Sends a query for [`upload::Uploads`], keeping where its answer goes.
    async fn send_query(&self, link: &mut Link, q: upload::Query) -> Result<(), Error> {
        let id = self.new_id();
        let iq = Iq::Get {
            from: jid(&self.domain),
            to: Some(q.to.clone()),
            id: id.clone(),
            payload: q.payload,
        };
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, (q.to, q.reply));
        self.send(link, iq).await
    }

    /// The answer to a query we sent, if `iq` is one: handed on.
    fn answered(&self, iq: &Iq) -> bool {
        let (id, from) = match iq {
            Iq::Result { id, from, .. } | Iq::Error { id, from, .. } => (id, from),
            _ => return false,
        };
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        // Only the entity asked may answer (or the server for it, when
        // the entity does not exist).
        let asked = pending.get(id).is_some_and(|(to, _)| {
            from.as_ref()
                .is_none_or(|f| f == to || f.domain() == to.domain())
        });
        if !asked {
            return false;
        }
        let Some((_, reply)) = pending.remove(id) else {
            return false;
        };
        let answer = match iq {
            Iq::Result { payload, .. } => Ok(payload.clone()),
            Iq::Error { error, .. } => Err(translate::describe_error(error)),
            _ => unreachable!("matched above"),
        };
        let _ = reply.send(answer);
        true
    }

    fn new_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("sox-{}-{n}", self.run)
    }

    /// The number of the configured user `jid` (full or bare), if any.
    fn user_number(&self, jid: &Jid) -> Option<&PhoneNumber> {
        self.users.get(&jid.to_bare().to_string().to_lowercase())
    }

    /// The contact number a JID of our domain names (`None` for the domain itself).
    fn contact_number(&self, jid: &Jid) -> Option<PhoneNumber> {
        PhoneNumber::parse(jid.node()?.as_str(), None).ok()
    }

    async fn connect(&self) -> Result<Link, Error> {
        let timeouts = Timeouts {
            read_timeout: self.keepalive,
            response_timeout: self.keepalive * 2,
        };
        let login = link::login(&self.server, &self.domain, self.secret.expose(), timeouts);
        match tokio::time::timeout(LOGIN_TIMEOUT, login).await {
            Ok(r) => r,
            Err(_) => Err(Error::Login(format!("no answer within {LOGIN_TIMEOUT:?}"))),
        }
    }

    async fn session(
        &self,
        link: &mut Link,
        from_gateway: &mut mpsc::Receiver<OutgoingStanza>,
        to_gateway: &mpsc::Sender<XmppEvent>,
        shutdown: &CancellationToken,
        outbox: &mut Outbox,
        queries: &mut mpsc::Receiver<upload::Query>,
    ) -> SessionEnd {
        // What the last link wrote but the server never acknowledged goes
        // first, in order, ahead of what was never written.
        outbox.ping_written = None;
        if !outbox.unacked.is_empty() {
            let mut again: Vec<Built> = outbox.unacked.drain(..).flat_map(|b| b.stanzas).collect();
            tracing::info!(
                stanzas = again.len(),
                "writing again what the last link did not acknowledge"
            );
            again.append(&mut outbox.unsent);
            outbox.unsent = again;
        }
        loop {
            #[cfg(feature = "fault-injection")]
            sms_gateway_core::fault::trip(sms_gateway_core::fault::Process::Xmpp);
            if !outbox.unsent.is_empty() {
                if let Err(e) = self.write_batch(link, outbox, to_gateway).await {
                    return SessionEnd::Lost(e);
                }
            } else if outbox.ping_due() {
                if let Err(e) = self.write_ping(link, outbox).await {
                    return SessionEnd::Lost(e);
                }
            }
            // A server that takes stanzas but never routes the ping back is
            // as good as gone: what it took is not known to be taken.
            let ack_deadline = outbox.ping_written.map(|at| at + self.keepalive * 2);
            if ack_deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return SessionEnd::Lost(Error::Lost(format!(
                    "the server did not acknowledge what was written within {:?}",
                    self.keepalive * 2
                )));
            }
            let room = outbox.unacked_stanzas() + outbox.unsent.len() < MAX_UNACKED;
            let result = tokio::select! {
                () = shutdown.cancelled() => return SessionEnd::Shutdown,
                incoming = link::read(link) => match incoming {
                    Incoming::Stanza(stanza) => self.on_stanza(link, *stanza, to_gateway, outbox).await,
                    Incoming::Invalid { kind, from, to, id, type_, error } => {
                        self.on_invalid(link, kind, from, to, id, type_, error).await
                    }
                    Incoming::Idle => self.ping_self(link).await,
                    Incoming::Nothing => Ok(()),
                    Incoming::Closed(reason) => Err(Error::Lost(reason)),
                },
                Some(q) = queries.recv() => self.send_query(link, q).await,
                () = async {
                    match ack_deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => Ok(()),
                out = from_gateway.recv(), if room => match out {
                    Some(out) => {
                        // What else is waiting goes in the same write.
                        self.build(out, outbox);
                        while outbox.unsent.len() < WRITE_BATCH {
                            match from_gateway.try_recv() {
                                Ok(out) => self.build(out, outbox),
                                Err(_) => break,
                            }
                        }
                        Ok(())
                    }
                    // The component owns the sender: closed means it is going away.
                    None => return SessionEnd::Shutdown,
                },
            };
            if let Err(e) = result {
                return SessionEnd::Lost(e);
            }
        }
    }

    /// Queues `out` in the outbox, with its id and (for the first chat
    /// from a contact) the contact's name.
    fn build(&self, out: OutgoingStanza, outbox: &mut Outbox) {
        let nick = match &out {
            // The contact's name goes with the first chat from it (XEP-0172).
            OutgoingStanza::Chat { from, to, .. } => self.first_nick(from, to),
            _ => None,
        };
        outbox.unsent.push(Built {
            out,
            id: self.new_id(),
            nick,
        });
    }

    async fn send(&self, link: &mut Link, stanza: impl Into<Stanza>) -> Result<(), Error> {
        link::write(link, stanza.into())
            .await
            .map_err(|e| Error::Write(e.to_string()))
    }

    async fn ping_self(&self, link: &mut Link) -> Result<(), Error> {
        let Some(me) = jid(&self.domain) else {
            return Ok(());
        };
        let ping = Iq::from_get(self.new_id(), Ping)
            .with_to(me.clone())
            .with_from(me);
        self.send(link, ping).await
    }

    /// Writes what is unsent in one go, followed by a ping to our own
    /// domain, with one flush (so usually one system call); the batch then
    /// waits in `outbox.unacked` for the ping to come back. On an I/O
    /// failure it stays unsent, for the next link.
    ///
    /// A stanza the XML writer refuses is dropped and logged (tokio-xmpp
    /// rewinds its buffer, so the stream is intact): it would be refused
    /// again on every link, and a link replaced for it would loop for ever
    /// (invariant 6). Everything reaching here has been through
    /// [`translate::xml_safe`], so this is a bug's safety net.
    async fn write_batch(
        &self,
        link: &mut Link,
        outbox: &mut Outbox,
        to_gateway: &mpsc::Sender<XmppEvent>,
    ) -> Result<(), Error> {
        let mut refused = vec![];
        for (i, built) in outbox.unsent.iter().enumerate() {
            let stanza = match built.stanza() {
                Ok(s) => s,
                Err(e) => {
                    // Built from our own routing tables: a bug, not a link problem.
                    tracing::error!(error = %e, what = kind(&built.out), "dropping a stanza that cannot be built");
                    refused.push(i);
                    continue;
                }
            };
            match link::feed(link, stanza).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                    tracing::error!(error = %e, what = kind(&built.out), "the XML writer refused a stanza; dropped");
                    refused.push(i);
                }
                Err(e) => return Err(Error::Write(e.to_string())),
            }
        }
        let ping_id = if outbox.ping_out() {
            None
        } else {
            let id = self.new_id();
            self.feed_ping(link, &id).await?;
            outbox.ping_written = Some(tokio::time::Instant::now());
            Some(id)
        };
        link::flush(link)
            .await
            .map_err(|e| Error::Write(e.to_string()))?;
        let mut stanzas = std::mem::take(&mut outbox.unsent);
        // Dropped for good: a stored text they complete is done with, or
        // it would fail again at every start.
        for i in refused.into_iter().rev() {
            if let Some(id) = stanzas.remove(i).inbound_id() {
                let _ = to_gateway.send(XmppEvent::Delivered(id)).await;
            }
        }
        outbox.unacked.push_back(Batch { ping_id, stanzas });
        Ok(())
    }

    /// Queues a ping to our own domain, with id `id`.
    async fn feed_ping(&self, link: &mut Link, id: &str) -> Result<(), Error> {
        let Some(me) = jid(&self.domain) else {
            return Ok(());
        };
        let ping = Iq::from_get(id.to_owned(), Ping)
            .with_to(me.clone())
            .with_from(me);
        link::feed(link, ping.into())
            .await
            .map_err(|e| Error::Write(e.to_string()))
    }

    /// Writes a ping for the batches written while the last one was out.
    async fn write_ping(&self, link: &mut Link, outbox: &mut Outbox) -> Result<(), Error> {
        let id = self.new_id();
        self.feed_ping(link, &id).await?;
        link::flush(link)
            .await
            .map_err(|e| Error::Write(e.to_string()))?;
        if let Some(last) = outbox.unacked.back_mut() {
            last.ping_id = Some(id);
        }
        outbox.ping_written = Some(tokio::time::Instant::now());
        Ok(())
    }

    /// The server routed back the ping written after a batch: it has taken
    /// that batch and every one before it. Returns whether `id` was one.
    async fn acknowledged(
        &self,
        id: &str,
        outbox: &mut Outbox,
        to_gateway: &mpsc::Sender<XmppEvent>,
    ) -> bool {
        let Some(n) = outbox
            .unacked
            .iter()
            .position(|b| b.ping_id.as_deref() == Some(id))
        else {
            return false;
        };
        outbox.ping_written = None;
        for batch in outbox.unacked.drain(..=n) {
            for built in batch.stanzas {
                if let Some(id) = built.inbound_id() {
                    // Closed only when the component is going away; the text
                    // then stays pending in the store and is delivered again
                    // after the restart (a duplicate the user may see).
                    let _ = to_gateway.send(XmppEvent::Delivered(id)).await;
                }
            }
        }
        true
    }

    /// The contact's name, the first time `contact` writes to `user` once
    /// the name is known. Never waits for the lookup command: until it has
    /// answered, chats go without a name and a later one carries it.
    fn first_nick(&self, contact: &str, user: &str) -> Option<String> {
        let key = (user.to_lowercase(), contact.to_lowercase());
        if self
            .nicks_sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&key)
        {
            return None;
        }
        let contact_number = self.contact_number(&jid(contact)?)?;
        let user_number = self.user_number(&jid(user)?)?.clone();
        let name = self.caller_id.name_now(&contact_number, &user_number)?;
        self.nicks_sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(key, ());
        name
    }

    #[allow(clippy::too_many_arguments)]
    async fn on_invalid(
        &self,
        link: &mut Link,
        kind: &str,
        from: Option<String>,
        to: Option<String>,
        id: Option<String>,
        type_: Option<String>,
        error: String,
    ) -> Result<(), Error> {
        tracing::warn!(%kind, ?from, %error, "a stanza we cannot read");
        // Errors and responses are never answered; presence is not answered either.
        let answerable = match kind {
            "message" => type_.as_deref() != Some("error"),
            "iq" => matches!(type_.as_deref(), Some("get" | "set")),
            _ => false,
        };
        let (Some(from), true) = (from.as_deref().and_then(jid), answerable) else {
            return Ok(());
        };
        let to = to.as_deref().and_then(jid);
        let err = translate::stanza_error(
            ErrorType::Modify,
            DefinedCondition::BadRequest,
            format!("This {kind} could not be read: {error}"),
        );
        let stanza: Stanza = if kind == "iq" {
            Iq::Error {
                from: to,
                to: Some(from),
                id: id.unwrap_or_default(),
                payload: None,
                error: err,
            }
            .into()
        } else {
            let mut m = Message::error(from);
            m.from = to;
            m.id = id.map(Id);
            m.payloads.push(err.into());
            m.into()
        };
        self.send(link, stanza).await
    }

    async fn on_stanza(
        &self,
        link: &mut Link,
        stanza: Stanza,
        to_gateway: &mpsc::Sender<XmppEvent>,
        outbox: &mut Outbox,
    ) -> Result<(), Error> {
        match stanza {
            Stanza::Message(m) => {
                if let Some(ev) = message_to_event(&m) {
                    // Waits when the Gateway is busy: back-pressure on the link.
                    if to_gateway.send(ev).await.is_err() {
                        return Err(Error::GatewayGone);
                    }
                } else if m.type_ == MessageType::Error {
                    tracing::warn!(from = ?m.from.as_ref().map(|j| j.to_string()), "a message we sent bounced");
                }
                Ok(())
            }
            Stanza::Iq(iq) => {
                if self.answered(&iq) {
                    return Ok(());
                }
                // Our own ping, routed back: an acknowledgement, not a
                // question (nobody waits for its answer).
                if let Iq::Get {
                    from: Some(from),
                    id,
                    payload,
                    ..
                } = &iq
                {
                    if payload.is("ping", tokio_xmpp::parsers::ns::PING)
                        && from.to_string() == self.domain
                        && self.acknowledged(id, outbox, to_gateway).await
                    {
                        return Ok(());
                    }
                }
                let answer = match self.answer_own_iq(&iq).await {
                    Some(a) => Some(a),
                    None => answer_iq(&iq, &self.domain),
                };
                match answer {
                    Some(a) => self.send(link, a).await,
                    None => Ok(()),
                }
            }
            Stanza::Presence(p) => {
                for answer in self.answer_presence(&p).await {
                    self.send(link, answer).await?;
                }
                Ok(())
            }
        }
    }

    /// The IQs that need our configuration: the XEP-0100 prompt and vCards.
    async fn answer_own_iq(&self, iq: &Iq) -> Option<Iq> {
        let (payload, is_get) = match iq {
            Iq::Get { payload, .. } => (payload, true),
            Iq::Set { payload, .. } => (payload, false),
            _ => return None,
        };
        if payload.is("query", translate::GATEWAY_NS) {
            if is_get {
                return Some(reply(iq, Ok(Some(gateway_prompt()))));
            }
            // Only users may make the gateway parse what they typed: the
            // answer is of no use to anyone else.
            if iq.from().and_then(|f| self.user_number(f)).is_none() {
                return Some(reply(
                    iq,
                    Err(translate::stanza_error(
                        ErrorType::Auth,
                        DefinedCondition::RegistrationRequired,
                        format!("Only users of {} can look up numbers.", self.domain),
                    )),
                ));
            }
            let typed = payload
                .get_child("prompt", translate::GATEWAY_NS)
                .map(|p| p.text())
                .unwrap_or_default();
            let answer = match self.phone.parse(&typed) {
                Ok(n) => Ok(Some(gateway_answer(&format!("{n}@{}", self.domain)))),
                Err(e) => Err(translate::stanza_error(
                    ErrorType::Modify,
                    DefinedCondition::NotAcceptable,
                    format!("{e}."),
                )),
            };
            return Some(reply(iq, answer));
        }
        if is_get && payload.is("vCard", translate::VCARD_NS) {
            let to = iq.to()?;
            let Some(contact) = self.contact_number(to) else {
                return Some(reply(iq, Ok(Some(vcard_for_domain()))));
            };
            // Not waited for: a vCard asked for again later has the name.
            let name = match iq.from().and_then(|f| self.user_number(f)) {
                Some(user) => self.caller_id.name_now(&contact, user).flatten(),
                None => None,
            };
            return Some(reply(
                iq,
                Ok(Some(vcard(contact.as_str(), name.as_deref()))),
            ));
        }
        None
    }

    /// RFC 6121 presence, as a contact (or the domain) that is always there.
    /// Presence from anyone who is not a configured user gets no answer, so
    /// nothing tells who is configured.
    async fn answer_presence(&self, p: &Presence) -> Vec<Presence> {
        let (Some(from), Some(to)) = (p.from.as_ref(), p.to.as_ref()) else {
            return vec![];
        };
        let Some(user_number) = self.user_number(from).cloned() else {
            return vec![];
        };
        let contact = self.contact_number(to);
        if to.node().is_some() && contact.is_none() {
            // Not a phone number: there is nobody there.
            return vec![Presence::new(PresenceType::Unsubscribed)
                .with_from(to.to_bare())
                .with_to(from.to_bare())];
        }
        let me = to.to_bare();
        let user = from.to_bare();
        let available = || {
            Presence::available()
                .with_from(me.clone())
                .with_to(user.clone())
        };
        match p.type_ {
            PresenceType::Subscribe => {
                let mut out = vec![
                    Presence::new(PresenceType::Subscribed)
                        .with_from(me.clone())
                        .with_to(user.clone()),
                    available(),
                ];
                if let Some(contact) = contact {
                    // Ask back, so the contact shows as reachable both ways.
                    let mut ask = Presence::subscribe()
                        .with_from(me.clone())
                        .with_to(user.clone());
                    if let Some(name) = self.caller_id.name_now(&contact, &user_number).flatten() {
                        ask.payloads.push(translate::nick(&name));
                    }
                    out.push(ask);
                }
                out
            }
            PresenceType::Probe | PresenceType::None | PresenceType::Subscribed => {
                vec![available()]
            }
            PresenceType::Unsubscribe => {
                vec![Presence::unavailable().with_from(me).with_to(user)]
            }
            _ => vec![],
        }
    }
}

impl XmppProcess {
    /// At a clean stop: waits (at most [`ACK_AT_STOP`]) for the server to
    /// acknowledge what was written. What it does not acknowledge stays
    /// pending in the store and is delivered again at the next start.
    async fn await_acks(
        &self,
        link: &mut Link,
        outbox: &mut Outbox,
        to_gateway: &mpsc::Sender<XmppEvent>,
    ) {
        if outbox.ping_due() && self.write_ping(link, outbox).await.is_err() {
            return;
        }
        let wait = async {
            while !outbox.unacked.is_empty() {
                match link::read(link).await {
                    Incoming::Stanza(stanza) => {
                        if let Stanza::Iq(Iq::Get {
                            from: Some(from),
                            id,
                            ..
                        }) = *stanza
                        {
                            if from.to_string() == self.domain {
                                self.acknowledged(&id, outbox, to_gateway).await;
                            }
                        }
                    }
                    Incoming::Closed(_) => return,
                    _ => {}
                }
            }
        };
        let _ = tokio::time::timeout(ACK_AT_STOP, wait).await;
        if !outbox.unacked.is_empty() {
            let n: usize = outbox.unacked.iter().map(|b| b.stanzas.len()).sum();
            tracing::warn!(stanzas = n, "stopping with stanzas the server has not acknowledged; stored texts among them are delivered again at the next start");
        }
    }
}

/// What an outgoing stanza is, for logs (never its content).
fn kind(out: &OutgoingStanza) -> &'static str {
    match out {
        OutgoingStanza::Chat { .. } => "chat",
        OutgoingStanza::Receipt { .. } => "receipt",
        OutgoingStanza::Error { .. } => "error",
        _ => "stanza",
    }
}

fn vcard_for_domain() -> tokio_xmpp::minidom::Element {
    tokio_xmpp::minidom::Element::builder("vCard", translate::VCARD_NS)
        .append(
            tokio_xmpp::minidom::Element::builder("FN", translate::VCARD_NS).append("SMS gateway"),
        )
        .build()
}

#[async_trait]
impl XmppLink for XmppProcess {
    fn dropped_at_stop(&self) -> usize {
        self.dropped_at_close.load(Ordering::Relaxed)
    }

    fn upload_slots(&self) -> Option<std::sync::Arc<dyn sms_gateway_core::media::UploadSlots>> {
        Some(self.uploads.clone())
    }

    async fn run(
        &self,
        channels: XmppChannels,
        shutdown: CancellationToken,
    ) -> Result<(), ProcessError> {
        let mut from_gateway = channels.from_gateway.lock().await;
        let mut outbox = self.outbox.lock().await;
        let mut queries = self.queries.lock().await;
        let mut failures = 0u32;
        loop {
            let attempt = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                r = self.connect() => r,
            };
            let mut link = match attempt {
                Ok(link) => {
                    tracing::info!(server = %self.server, domain = %self.domain, "connected to the XMPP server");
                    failures = 0;
                    link
                }
                Err(e) => {
                    let delay = backoff(failures);
                    failures = failures.saturating_add(1);
                    tracing::warn!(server = %self.server, error = %e, retry_in = ?delay, "cannot log in to the XMPP server");
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            let end = self
                .session(
                    &mut link,
                    &mut from_gateway,
                    &channels.to_gateway,
                    &shutdown,
                    &mut outbox,
                    &mut queries,
                )
                .await;
            // Queries out on that link get no answer now: they fail, and
            // are asked again.
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            match end {
                SessionEnd::Shutdown => {
                    self.await_acks(&mut link, &mut outbox, &channels.to_gateway)
                        .await;
                    let dropped = link::close(&mut link, CLOSE_TIMEOUT).await;
                    if dropped > 0 {
                        tracing::warn!(dropped, "chats arrived while the stream was closing; their senders will be told at the next start");
                        self.dropped_at_close.fetch_add(dropped, Ordering::Relaxed);
                    }
                    tracing::info!("XMPP stream closed");
                    return Ok(());
                }
                SessionEnd::Lost(reason) => {
                    tracing::warn!(%reason, "lost the XMPP link; reconnecting");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
