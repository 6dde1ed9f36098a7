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

mod depth;
pub mod link;
#[doc(hidden)]
pub use depth::limit_depth;
mod translate;

pub use translate::{
    answer_iq, gateway_answer, gateway_prompt, message_to_event, outgoing_to_stanza, reply, vcard,
    FEATURES,
};

use async_trait::async_trait;
use link::{Incoming, Link};
use sms_gateway_core::callerid::CallerId;
use sms_gateway_core::component::backoff;
use sms_gateway_core::config::{normalize_bare_jid, Config, PhoneConfig};
use sms_gateway_core::{
    CancellationToken, OutgoingStanza, PhoneNumber, ProcessError, XmppChannels, XmppEvent, XmppLink,
};
use std::collections::{HashMap, HashSet};
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
    nicks_sent: Mutex<HashSet<(String, String)>>,
    next_id: AtomicU64,
    /// Chats the server sent while the link was closing at shutdown.
    dropped_at_close: std::sync::atomic::AtomicUsize,
}

enum SessionEnd {
    Shutdown,
    Lost(String),
}

fn jid(s: &str) -> Option<Jid> {
    Jid::new(s).ok()
}

impl XmppProcess {
    /// A process for a validated config.
    pub fn new(config: &Config) -> Self {
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
            nicks_sent: Mutex::default(),
            next_id: AtomicU64::new(1),
            dropped_at_close: Default::default(),
        }
    }

    fn new_id(&self) -> String {
        format!("sox-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// The number of the configured user `jid` (full or bare), if any.
    fn user_number(&self, jid: &Jid) -> Option<&PhoneNumber> {
        self.users.get(&jid.to_bare().to_string().to_lowercase())
    }

    /// The contact number a JID of our domain names (`None` for the domain itself).
    fn contact_number(&self, jid: &Jid) -> Option<PhoneNumber> {
        PhoneNumber::parse(jid.node()?.as_str(), None).ok()
    }

    async fn connect(&self) -> Result<Link, String> {
        let timeouts = Timeouts {
            read_timeout: self.keepalive,
            response_timeout: self.keepalive * 2,
        };
        let login = link::login(&self.server, &self.domain, self.secret.expose(), timeouts);
        match tokio::time::timeout(LOGIN_TIMEOUT, login).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {LOGIN_TIMEOUT:?}")),
        }
    }

    async fn session(
        &self,
        link: &mut Link,
        from_gateway: &mut mpsc::Receiver<OutgoingStanza>,
        to_gateway: &mpsc::Sender<XmppEvent>,
        shutdown: &CancellationToken,
        unsent: &mut Vec<OutgoingStanza>,
    ) -> SessionEnd {
        loop {
            #[cfg(feature = "fault-injection")]
            sms_gateway_core::fault::trip(sms_gateway_core::fault::Process::Xmpp);
            // Stanzas whose write failed on the last link go first.
            if !unsent.is_empty() {
                if let Err(e) = self.write_outgoing(link, unsent, to_gateway).await {
                    return SessionEnd::Lost(e);
                }
                unsent.clear();
            }
            let result = tokio::select! {
                () = shutdown.cancelled() => return SessionEnd::Shutdown,
                incoming = link::read(link) => match incoming {
                    Incoming::Stanza(stanza) => self.on_stanza(link, *stanza, to_gateway).await,
                    Incoming::Invalid { kind, from, to, id, type_, error } => {
                        self.on_invalid(link, kind, from, to, id, type_, error).await
                    }
                    Incoming::Idle => self.ping_self(link).await,
                    Incoming::Nothing => Ok(()),
                    Incoming::Closed(reason) => Err(reason),
                },
                out = from_gateway.recv() => match out {
                    Some(out) => {
                        // What else is waiting goes in the same write.
                        unsent.push(out);
                        while unsent.len() < WRITE_BATCH {
                            match from_gateway.try_recv() {
                                Ok(out) => unsent.push(out),
                                Err(_) => break,
                            }
                        }
                        let r = self.write_outgoing(link, unsent, to_gateway).await;
                        if r.is_ok() {
                            unsent.clear();
                        }
                        r
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

    async fn send(&self, link: &mut Link, stanza: impl Into<Stanza>) -> Result<(), String> {
        link::write(link, stanza.into())
            .await
            .map_err(|e| format!("write failed: {e}"))
    }

    async fn ping_self(&self, link: &mut Link) -> Result<(), String> {
        let Some(me) = jid(&self.domain) else {
            return Ok(());
        };
        let ping = Iq::from_get(self.new_id(), Ping)
            .with_to(me.clone())
            .with_from(me);
        self.send(link, ping).await
    }

    /// Writes `outs` in one go (one flush, so usually one system call).
    /// On an I/O failure none of them counts as written: the caller keeps
    /// them for the next link, and some may then reach the server twice.
    ///
    /// A stanza that cannot be built or that the XML writer refuses is
    /// dropped, logged, and (for a stored inbound text) marked done: it
    /// would be refused again on every link, and a link replaced for it
    /// would loop for ever (invariant 6). Everything reaching here has been
    /// through [`translate::xml_safe`], so this is a bug's safety net.
    async fn write_outgoing(
        &self,
        link: &mut Link,
        outs: &[OutgoingStanza],
        to_gateway: &mpsc::Sender<XmppEvent>,
    ) -> Result<(), String> {
        for out in outs {
            let mut stanza = match outgoing_to_stanza(out, || self.new_id()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, what = kind(out), "dropping a stanza that cannot be built");
                    continue;
                }
            };
            // The contact's name goes with the first chat from it (XEP-0172).
            if let (OutgoingStanza::Chat { from, to, .. }, Stanza::Message(m)) = (out, &mut stanza)
            {
                if let Some(name) = self.first_nick(from, to) {
                    m.payloads.push(translate::nick(&name));
                }
            }
            match link::feed(link, stanza).await {
                Ok(()) => {}
                // tokio-xmpp rewinds its buffer when an element cannot be
                // serialised: the stream is intact, only this stanza is lost.
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                    tracing::error!(error = %e, what = kind(out), "the XML writer refused a stanza; dropped");
                }
                Err(e) => return Err(format!("write failed: {e}")),
            }
        }
        link::flush(link)
            .await
            .map_err(|e| format!("write failed: {e}"))?;
        // The server has them: stored inbound texts can leave the store.
        for out in outs {
            if let OutgoingStanza::Chat {
                inbound_id: Some(id),
                ..
            } = out
            {
                // Closed only when the component is going away; the text then
                // stays pending in the store and is delivered again after the
                // restart (a duplicate the user may see, never a loss).
                let _ = to_gateway.send(XmppEvent::Delivered(*id)).await;
            }
        }
        Ok(())
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
        let mut sent = self.nicks_sent.lock().unwrap_or_else(|p| p.into_inner());
        if sent.len() >= NICKS_SENT {
            sent.clear();
        }
        sent.insert(key);
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
    ) -> Result<(), String> {
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
    ) -> Result<(), String> {
        match stanza {
            Stanza::Message(m) => {
                if let Some(ev) = message_to_event(&m) {
                    // Waits when the Gateway is busy: back-pressure on the link.
                    if to_gateway.send(ev).await.is_err() {
                        return Err("the gateway channel is closed".into());
                    }
                } else if m.type_ == MessageType::Error {
                    tracing::warn!(from = ?m.from.as_ref().map(|j| j.to_string()), "a message we sent bounced");
                }
                Ok(())
            }
            Stanza::Iq(iq) => {
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

/// What an outgoing stanza is, for logs (never its content).
fn kind(out: &OutgoingStanza) -> &'static str {
    match out {
        OutgoingStanza::Chat { .. } => "chat",
        OutgoingStanza::Receipt { .. } => "receipt",
        OutgoingStanza::Error { .. } => "error",
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

    async fn run(
        &self,
        channels: XmppChannels,
        shutdown: CancellationToken,
    ) -> Result<(), ProcessError> {
        let mut from_gateway = channels.from_gateway.lock().await;
        let mut unsent = Vec::new();
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
            match self
                .session(
                    &mut link,
                    &mut from_gateway,
                    &channels.to_gateway,
                    &shutdown,
                    &mut unsent,
                )
                .await
            {
                SessionEnd::Shutdown => {
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
