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
mod inbox;
// Not API: sms-bench's bare echo component logs in with it.
mod answers;
mod chat_commands;
#[doc(hidden)]
pub mod link;
mod muc;
mod outbox;
mod people;
mod reactions;
mod translate;
mod upload;
mod wire;

pub use error::Error;

// Not API: the fuzz targets and the benchmarks reach the parsers here.
#[doc(hidden)]
pub use depth::limit_depth;
#[doc(hidden)]
pub use translate::{answer_iq, message_to_event, outgoing_to_stanza};

use async_trait::async_trait;
use link::{Incoming, Link};
use outbox::{Built, Outbox};
use sms_gateway_core::backoff;
use sms_gateway_core::callerid::CallerId;
use sms_gateway_core::config::{Config, PhoneConfig};
use sms_gateway_core::{CancellationToken, Directory, OutgoingStanza, PhoneNumber, XmppEvent};
use sms_gateway_runtime::{ProcessError, XmppChannels, XmppLink};
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

/// How far the link is read ahead of the Gateway while the outbox has room.
const READ_AHEAD: usize = 32;
/// How long events may wait for the Gateway without one being taken
/// before the channel counts as stalled (logged, counted, `/readyz` fails).
const STALL_AFTER: Duration = Duration::from_secs(10);

/// How often the session loop looks at its deadlines (the Gateway's stall,
/// the server's acknowledgement): one timer for the whole session, not one
/// made and dropped for every stanza read (#30). A deadline is noticed
/// within this much of passing.
const DEADLINE_TICK: Duration = Duration::from_secs(1);
/// Chats from non-users answered with a sentence per second, all domains
/// together; past it (and its burst) they get a bare `resource-constraint`.
const STRANGER_ANSWERS_PER_SEC: f64 = 20.0;
/// The burst of those answers.
const STRANGER_BURST: f64 = 200.0;

/// The longest wait between logins of an instance standing by.
const STANDBY_MAX: Duration = Duration::from_secs(5);

/// The XMPP process. One value serves every incarnation the supervisor starts.
pub struct XmppProcess {
    server: String,
    domain: String,
    secret: sms_gateway_core::Secret,
    keepalive: Duration,
    /// With `[cluster]`: the longest wait between two logins, so an
    /// instance standing by (the server holds one link per component, as
    /// Prosody does) takes the link over soon after its holder is gone.
    standby: Option<Duration>,
    phone: PhoneConfig,
    /// The configured users.
    users: std::sync::Arc<Directory>,
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
    /// Presence said, servers' roster grants, requests waiting.
    people: Mutex<people::People>,
    /// Who is in which group room.
    rooms: Mutex<muc::Occupancy>,
    /// What is left of the budget for answering non-users' chats.
    strangers: Mutex<inbox::StrangerBudget>,
    /// Each conversation's recent messages, for reactions (#31).
    recent: Mutex<reactions::Recent>,
    /// `[admins] jids`.
    admins: std::collections::HashSet<tokio_xmpp::jid::BareJid>,
    /// `[registration]`.
    registration: sms_gateway_core::config::RegistrationConfig,
    /// Numbers offered for registration: (account, number).
    offered: Vec<(String, PhoneNumber)>,
    /// The carrier accounts, as a reload leaves them.
    accounts: std::sync::Arc<sms_gateway_core::accounts::Accounts>,
    /// What *Gateway status* shows of the link.
    status: Mutex<people::Status>,
    /// The Gateway's record of carrier errors, for *Gateway status*.
    activity: std::sync::Arc<sms_gateway_core::activity::Activity>,
    /// The link's state, for `/metrics` and `/readyz`.
    metrics: std::sync::Arc<sms_gateway_core::metrics::Metrics>,
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

/// Logs in to the server as the component `xmpp` describes and leaves at
/// once (`check --online`): `Ok` with how many messages the server routed
/// to us meanwhile (not taken: a running gateway's users would miss them,
/// which is why `check --online` is best run before the service starts).
pub async fn probe(xmpp: &sms_gateway_core::config::XmppConfig) -> Result<usize, Error> {
    let login = link::login(
        &xmpp.server,
        &xmpp.domain,
        xmpp.secret.expose(),
        Timeouts::tight(),
    );
    let mut link = match tokio::time::timeout(LOGIN_TIMEOUT, login).await {
        Ok(r) => r?,
        Err(_) => return Err(Error::Login(format!("no answer within {LOGIN_TIMEOUT:?}"))),
    };
    Ok(link::close(&mut link, Duration::from_secs(2)).await)
}

impl XmppProcess {
    /// A process for a validated config and what its validation gave
    /// (the users and the Gateway's record of carrier errors, shared with
    /// the Gateway).
    pub fn new(config: &Config, providers: &sms_gateway_core::Providers) -> Self {
        let users = providers.users.clone();
        let (queries_tx, queries) = mpsc::channel(64);
        // One cache of names, the Gateway's: the XMPP process reads it for
        // vCards and presence.
        let caller_id = users.names().clone();
        XmppProcess {
            server: config.xmpp.server.clone(),
            domain: config.xmpp.domain.to_lowercase(),
            secret: config.xmpp.secret.clone(),
            keepalive: Duration::from_secs(config.xmpp.keepalive_secs),
            standby: config.cluster.as_ref().map(|c| {
                Duration::from_secs(c.lease_secs / 3).clamp(Duration::from_secs(1), STANDBY_MAX)
            }),
            phone: config.phone.clone(),
            users,
            caller_id,
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
            people: Mutex::default(),
            rooms: Mutex::default(),
            strangers: Mutex::default(),
            recent: Mutex::default(),
            admins: config
                .admins
                .jids
                .iter()
                .filter_map(|j| sms_gateway_core::config::normalize_bare_jid(j))
                .filter_map(|j| tokio_xmpp::jid::BareJid::new(&j).ok())
                .collect(),
            registration: config.registration.clone(),
            offered: config
                .providers
                .iter()
                .flat_map(|(account, p)| {
                    p.registration_numbers
                        .iter()
                        .filter_map(|n| PhoneNumber::parse(n, None).ok())
                        .map(move |n| (account.clone(), n))
                })
                .collect(),
            accounts: providers.accounts.clone(),
            status: Mutex::default(),
            activity: providers.activity.clone(),
            metrics: providers.metrics.clone(),
        }
    }

    fn set_link(&self, what: String) {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).link = what;
    }

    fn new_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("sox-{}-{n}", self.run)
    }

    /// The number of the user `jid` (full or bare), if any.
    fn user_number(&self, jid: &Jid) -> Option<PhoneNumber> {
        self.users.get(&jid.to_bare()).map(|u| u.number.clone())
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
        outbox.paused_at = None;
        // What waited for the Gateway while the link was down waits anew.
        outbox.inbox_since = (!outbox.inbox.is_empty()).then(tokio::time::Instant::now);
        if !outbox.unacked.is_empty() {
            let mut again: Vec<Built> = outbox.unacked.drain(..).flat_map(|b| b.stanzas).collect();
            tracing::info!(
                stanzas = again.len(),
                "writing again what the last link did not acknowledge"
            );
            again.append(&mut outbox.unsent);
            outbox.unsent = again;
        }
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + DEADLINE_TICK, DEADLINE_TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Made once: made anew at every turn it registered a waiter under
        // a lock and removed it again, for every stanza (#30).
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        loop {
            #[cfg(feature = "fault-injection")]
            sms_gateway_core::fault::trip(sms_gateway_core::fault::Process::Xmpp);
            if !outbox.unsent.is_empty() {
                if let Err(e) = self.write_batch(link, outbox).await {
                    return SessionEnd::Lost(e);
                }
            } else if outbox.ping_due() {
                if let Err(e) = self.write_ping(link, outbox).await {
                    return SessionEnd::Lost(e);
                }
            }
            let room = outbox.unacked_stanzas() + outbox.unsent.len() < MAX_UNACKED;
            // What is read and not yet stored is lost if the process is
            // killed (XEP-0114 has no acknowledgements), so the link is read
            // only so far ahead of the Gateway: past READ_AHEAD the server
            // and TCP hold the rest. Unless the outbox is full: then reading
            // is what frees it (the server's acknowledgements), so the link
            // is read whatever waits, and a sender past its share is refused.
            // The pause waits only on the Gateway, which never waits on us
            // while the outbox has room: no cycle.
            let reading = outbox.inbox.len() < READ_AHEAD || !room;
            match (reading, outbox.paused_at) {
                (false, None) => outbox.paused_at = Some(tokio::time::Instant::now()),
                (true, Some(since)) => {
                    // The server's answer could not be read meanwhile.
                    let paused = since.elapsed();
                    outbox.ping_written = outbox.ping_written.map(|w| w + paused);
                    outbox.paused_at = None;
                }
                _ => {}
            }
            // A server that takes stanzas but never routes the ping back is
            // as good as gone: what it took is not known to be taken.
            let ack_deadline = outbox
                .ping_written
                .filter(|_| reading)
                .map(|at| at + self.keepalive * 2);
            if ack_deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return SessionEnd::Lost(Error::Lost(format!(
                    "the server did not acknowledge what was written within {:?}",
                    self.keepalive * 2
                )));
            }
            // Events have waited for the Gateway since then with none taken.
            let stall_at = outbox
                .inbox_since
                .filter(|_| !outbox.stalled)
                .map(|since| since + STALL_AFTER);
            let result = tokio::select! {
                () = &mut cancelled => return SessionEnd::Shutdown,
                incoming = link::read(link), if reading => match incoming {
                    Incoming::Stanza(stanza) => self.on_stanza(link, *stanza, outbox).await,
                    Incoming::Invalid { kind, from, to, id, type_, error } => {
                        self.on_invalid(link, kind, from, to, id, type_, error).await
                    }
                    Incoming::Idle => self.ping_self(link).await,
                    Incoming::Nothing => Ok(()),
                    Incoming::Closed(reason) => Err(Error::Lost(reason)),
                },
                Some(q) = queries.recv() => self.send_query(link, q).await,
                // The Gateway takes what waits for it, one origin at a
                // time; the link is read meanwhile, whatever the Gateway does.
                permit = to_gateway.reserve(), if !outbox.inbox.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(ev) = outbox.inbox.next() {
                            permit.send(ev);
                        }
                        self.progressed(outbox);
                        Ok(())
                    }
                    Err(_) => return SessionEnd::Shutdown,
                },
                // The deadlines: a stalled Gateway is noticed here, a server
                // that acknowledged nothing at the top of the loop.
                now = ticker.tick(), if stall_at.is_some() || ack_deadline.is_some() => {
                    if stall_at.is_some_and(|d| now >= d) {
                        outbox.stalled = true;
                        self.metrics.stall("gateway_input", true);
                        tracing::warn!(waiting = outbox.inbox.len(), after = ?STALL_AFTER, "the Gateway has taken nothing from the XMPP link for a while");
                    }
                    Ok(())
                },
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

    async fn send(&self, link: &mut Link, stanza: impl Into<Stanza>) -> Result<(), Error> {
        link::write(link, stanza.into())
            .await
            .map_err(|e| Error::Write(e.to_string()))
    }

    async fn on_stanza(
        &self,
        link: &mut Link,
        stanza: Stanza,
        outbox: &mut Outbox,
    ) -> Result<(), Error> {
        match stanza {
            Stanza::Message(m) => {
                if self.on_privilege(&m) {
                    return Ok(());
                }
                if let Some(refusal) = self.check_room_message(&m) {
                    return self.send(link, refusal).await;
                }
                if let Some(mut ev) = message_to_event(&m) {
                    if let XmppEvent::Chat(c) = &mut ev {
                        let is_user = self.users.get_text(&c.from).is_some();
                        // A user's chat to a contact: remembered, or its
                        // reactions made text (#31).
                        if is_user
                            && !c.groupchat
                            && c.addresses.is_empty()
                            && c.to != self.domain
                            && !self.user_chat_seen(&m, c)
                        {
                            return Ok(());
                        }
                        // Chat states, markers, receipts: nothing for the
                        // Gateway to do (it would drop them), so they never
                        // take a place in the queue.
                        if c.body.trim().is_empty() && c.media.is_empty() {
                            return Ok(());
                        }
                        // To the gateway's own address: a command (#31).
                        if self.is_chat_command(c) {
                            return self.answer_chat_command(link, outbox, c).await;
                        }
                        if !is_user {
                            return self.answer_stranger(link, c).await;
                        }
                    }
                    return self.hand_on(link, outbox, ev).await;
                } else if m.type_ == MessageType::Error {
                    tracing::warn!(from = ?m.from.as_ref().map(|j| j.to_string()), "a message we sent bounced");
                }
                Ok(())
            }
            Stanza::Iq(iq) => {
                if self.answered(&iq) {
                    return Ok(());
                }
                if let Some((fallback, event)) = self.roster_answer(&iq) {
                    for s in fallback {
                        self.send(link, s).await?;
                    }
                    if let Some(ev) = event {
                        return self.hand_on(link, outbox, ev).await;
                    }
                    return Ok(());
                }
                if let Iq::Error { from, error, .. } = &iq {
                    // A roster push (XEP-0356) or other request of ours refused.
                    tracing::warn!(from = ?from.as_ref().map(|f| f.to_string()), error = %translate::describe_error(error), "a request the gateway sent was refused");
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
                        && self.acknowledged(id, outbox)
                    {
                        return Ok(());
                    }
                }
                if let Some(answer) = self.answer_room_iq(&iq) {
                    return self.send(link, answer).await;
                }
                if let Some(answer) = self.answer_people(&iq, outbox) {
                    return self.carry_out(link, answer, outbox).await;
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
                // To a group's room, or to a contact or the gateway.
                let (answers, event) = if p.to.as_ref().is_some_and(|t| self.is_room(t)) {
                    self.answer_room_presence(&p)
                } else {
                    let (answers, event) = self.answer_presence(&p);
                    (answers.into_iter().map(Stanza::from).collect(), event)
                };
                for answer in answers {
                    self.send(link, answer).await?;
                }
                match event {
                    Some(ev) => self.hand_on(link, outbox, ev).await,
                    None => Ok(()),
                }
            }
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

#[async_trait]
impl XmppLink for XmppProcess {
    fn dropped_at_stop(&self) -> usize {
        self.dropped_at_close.load(Ordering::Relaxed)
    }

    fn upload_slots(&self) -> Option<std::sync::Arc<dyn sms_gateway_runtime::media::UploadSlots>> {
        Some(self.uploads.clone())
    }

    async fn run(
        &self,
        channels: XmppChannels,
        shutdown: CancellationToken,
    ) -> Result<(), ProcessError> {
        let mut from_gateway = channels.from_gateway.lock().await;
        let mut outbox = self.outbox.lock().await;
        outbox.to_gateway = Some(channels.to_gateway.clone());
        let mut queries = self.queries.lock().await;
        let mut failures = 0u32;
        loop {
            let attempt = tokio::select! {
                () = shutdown.cancelled() => {
                    self.hand_over_at_stop(&mut outbox, &channels.to_gateway).await;
                    return Ok(());
                }
                r = self.connect() => r,
            };
            let mut link = match attempt {
                Ok(link) => {
                    tracing::info!(server = %self.server, domain = %self.domain, "connected to the XMPP server");
                    self.metrics.link_up();
                    self.set_link(format!(
                        "up since {}",
                        sms_gateway_core::utc(sms_gateway_core::unix_now())
                    ));
                    failures = 0;
                    link
                }
                Err(e) => {
                    let mut delay = backoff(failures);
                    failures = failures.saturating_add(1);
                    match self.standby {
                        // Refused while another instance holds the link:
                        // this one stands by, trying again soon.
                        Some(most) if matches!(&e, Error::Login(why) if why.contains("conflict")) =>
                        {
                            delay = delay.min(most);
                            if failures == 1 || failures % 100 == 0 {
                                tracing::info!(server = %self.server, retry_every = ?most, "standing by: another instance holds the component's link");
                            }
                        }
                        Some(most) => {
                            delay = delay.min(most);
                            tracing::warn!(server = %self.server, error = %e, retry_in = ?delay, "cannot log in to the XMPP server");
                        }
                        None => {
                            tracing::warn!(server = %self.server, error = %e, retry_in = ?delay, "cannot log in to the XMPP server")
                        }
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => {
                            self.hand_over_at_stop(&mut outbox, &channels.to_gateway).await;
                            return Ok(());
                        }
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
                    // Contacts and the gateway go offline in users' clients.
                    for p in self.goodbyes().into_iter().chain(self.room_goodbyes()) {
                        if self.send(&mut link, p).await.is_err() {
                            break;
                        }
                    }
                    self.await_acks(&mut link, &mut outbox).await;
                    self.hand_over_at_stop(&mut outbox, &channels.to_gateway)
                        .await;
                    let dropped = link::close(&mut link, CLOSE_TIMEOUT).await;
                    if dropped > 0 {
                        tracing::warn!(dropped, "chats arrived while the stream was closing; their senders will be told at the next start");
                        self.dropped_at_close.fetch_add(dropped, Ordering::Relaxed);
                    }
                    self.metrics.link_down();
                    tracing::info!("XMPP stream closed");
                    return Ok(());
                }
                SessionEnd::Lost(reason) => {
                    tracing::warn!(%reason, "lost the XMPP link; reconnecting");
                    self.metrics.link_down();
                    self.set_link(format!("down ({reason}); reconnecting"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
