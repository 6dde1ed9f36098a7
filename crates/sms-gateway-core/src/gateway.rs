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

use crate::config::{normalize_bare_jid, Config, Providers};
use crate::message::{
    ChatMessage, DeliveryStatus, ErrorCondition, Fetched, InboundRejected, InboundSms, OutboundSms,
    OutgoingStanza, PstnCommand, PstnEvent, StatusReport, XmppEvent,
};
use crate::phone::PhoneNumber;
use crate::provider::{ProviderError, ProviderErrorKind};
use crate::store::{ChatRecord, ChatState, MemoryStore, Store, StoreError};
use crate::text::{self, Limits};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// How many early reports (before their send's result) are kept.
const EARLY_MEMORY: usize = 10_000;

/// A configured user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Bare JID, lower-cased.
    pub jid: String,
    /// The user's number.
    pub number: PhoneNumber,
    /// The provider account.
    pub account: String,
}

/// What an account accepts per request, and what to do with a longer text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountPolicy {
    /// The provider's limits.
    pub limits: Limits,
    /// Split a long text into several sends (else refuse it).
    pub split_long: bool,
}

/// Who is who: built once from a validated config and its providers.
#[derive(Debug, Clone)]
pub struct Routing {
    domain: String,
    phone: crate::config::PhoneConfig,
    by_jid: HashMap<String, User>,
    by_number: HashMap<(String, PhoneNumber), String>,
    accounts: HashMap<String, AccountPolicy>,
    limits: crate::config::LimitsConfig,
    /// Whether inbound media are fetched (`media.store` is not `link`).
    fetch_media: bool,
    /// Whether chats may carry media URLs on private addresses.
    relay_private_urls: bool,
}

impl Routing {
    /// Builds the routing tables from a config that passed
    /// [`Config::validate`] and the providers it gave.
    pub fn new(config: &Config, providers: &Providers) -> Self {
        let mut routing = Self::from_config(config);
        for (name, provider) in &providers.accounts {
            let split_long = config.providers.get(name).is_none_or(|p| p.split_long);
            routing.accounts.insert(
                name.clone(),
                AccountPolicy {
                    limits: provider.limits(),
                    split_long,
                },
            );
        }
        routing
    }

    /// Builds the routing tables without provider limits (every account
    /// unlimited). Users that do not parse are skipped.
    pub fn from_config(config: &Config) -> Self {
        let mut by_jid = HashMap::new();
        let mut by_number = HashMap::new();
        for u in &config.users {
            let (Some(jid), Ok(number)) = (
                normalize_bare_jid(&u.jid),
                PhoneNumber::parse(&u.number, None),
            ) else {
                continue;
            };
            by_number.insert((u.provider.clone(), number.clone()), jid.clone());
            by_jid.insert(
                jid.clone(),
                User {
                    jid,
                    number,
                    account: u.provider.clone(),
                },
            );
        }
        Routing {
            domain: config.xmpp.domain.to_lowercase(),
            phone: config.phone.clone(),
            by_jid,
            by_number,
            accounts: HashMap::new(),
            limits: config.limits.clone(),
            fetch_media: config.media.store != crate::config::MediaStoreKind::Link,
            relay_private_urls: config.media.relay_private_urls,
        }
    }

    fn policy(&self, account: &str) -> AccountPolicy {
        self.accounts
            .get(account)
            .copied()
            .unwrap_or(AccountPolicy {
                limits: Limits::default(),
                split_long: true,
            })
    }

    /// The contact JID for a number: `+15557654321@sms.example.com`.
    pub fn contact_jid(&self, number: &PhoneNumber) -> String {
        format!("{number}@{}", self.domain)
    }

    /// The user a full or bare JID belongs to.
    pub fn user(&self, jid: &str) -> Option<&User> {
        let bare = jid.split('/').next().unwrap_or(jid).to_lowercase();
        self.by_jid.get(&bare)
    }
}

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
pub enum Action {
    /// Send a stanza to the XMPP server.
    Xmpp(OutgoingStanza),
    /// Ask the PSTN process to send a text.
    Pstn(PstnCommand),
}

/// The store's run marker: 1 while a gateway runs, 0 after a clean stop.
const RUNNING: &str = "running";
/// When users were last told of an unclean stop (Unix seconds).
const NOTIFIED: &str = "notified_unclean_stop";
/// The shortest time between two such notices.
pub const NOTICE_INTERVAL: Duration = Duration::from_secs(3600);

/// `YYYY-MM-DD HH:MM:SS` for Unix seconds, in UTC.
pub fn utc(secs: u64) -> String {
    // Howard Hinnant's days-to-civil algorithm.
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
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

/// Now, in Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
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

    fn send_command(&self, ticket: u64, chat: &ChatRecord) -> Action {
        Action::Pstn(PstnCommand::Send {
            account: chat.account.clone(),
            parts: chat.parts.clone(),
            ticket,
            retry_until: chat.created + self.retry_deadline.as_secs(),
        })
    }

    /// After a restart: the actions that finish what the store holds. Chats
    /// not yet accepted by the carrier are sent (again: one whose request was
    /// in flight when the program died may go out twice); inbound texts not
    /// yet taken by the XMPP server are delivered, in order. Old entries are
    /// expired first.
    pub fn recover(&self, keep: crate::store::Retention) -> Result<Vec<Action>, StoreError> {
        let (before, seen_before) = keep.cutoffs(unix_now());
        let removed = self.store.expire(before, seen_before)?;
        if removed > 0 {
            tracing::info!(removed, "expired old entries from the store");
        }
        let mut actions = vec![];
        let chats = self.store.chats()?;
        let pending = self.store.pending_inbound()?;
        let mut state = self.state();
        for (ticket, chat) in chats {
            // Sent chats stay in the store until their reports come.
            if chat.state == ChatState::Sending {
                actions.push(self.send_command(ticket, &chat));
                state.sending.insert(ticket, chat);
            }
        }
        drop(state);
        let resent = actions.len();
        for p in pending {
            if let Some(fetch) = self.fetch_command(&p.account, p.id, &p.sms) {
                actions.push(fetch);
                continue;
            }
            match self.inbound_chats(&p.account, &p.sms, Some(p.id)) {
                Ok(chats) => actions.extend(chats),
                Err(e) => {
                    tracing::warn!(account = %p.account, error = %e, "a stored inbound text has nobody to go to now");
                    self.store.inbound_delivered(p.id)?;
                }
            }
        }
        if !actions.is_empty() {
            tracing::info!(
                chats = resent,
                inbound = actions.len() - resent,
                "resuming what was pending before the restart"
            );
        }
        Ok(actions)
    }

    /// At the start of a run: marks the store as in use and, if the last
    /// run never ended (the program was killed or crashed), tells each user
    /// what the gateway last received from them. XEP-0114 has no
    /// acknowledgements, so chats the server had handed over but the
    /// gateway had not yet stored are gone without a trace; the notice
    /// makes that loss visible, and names where it starts. Not repeated
    /// within [`NOTICE_INTERVAL`] (a crash loop must not flood anyone).
    pub fn start_run(&self) -> Vec<Action> {
        let unclean = match self.store.meta(RUNNING) {
            Ok(v) => v == Some(1),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the store's run marker");
                false
            }
        };
        if let Err(e) = self.store.set_meta(RUNNING, 1) {
            tracing::error!(error = %e, "cannot mark the store in use");
        }
        if !unclean {
            return vec![];
        }
        let now = unix_now();
        let recent = self
            .store
            .meta(NOTIFIED)
            .ok()
            .flatten()
            .is_some_and(|t| now < t + NOTICE_INTERVAL.as_secs());
        tracing::warn!("the last run ended without a clean stop (killed or crashed)");
        if recent {
            tracing::warn!("users were told of an unclean stop less than an hour ago; not again");
            return vec![];
        }
        let _ = self.store.set_meta(NOTIFIED, now);
        let last: HashMap<String, crate::store::LastChat> = match self.store.last_chats() {
            Ok(l) => l.into_iter().map(|l| (l.user.clone(), l)).collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the users' last chats");
                HashMap::new()
            }
        };
        let mut users: Vec<&User> = self.routing.by_jid.values().collect();
        users.sort_by(|a, b| a.jid.cmp(&b.jid));
        users
            .into_iter()
            .map(|u| {
                let body = match last.get(&u.jid) {
                    Some(l) => format!(
                        "The SMS gateway restarted after an unexpected stop. The last chat it received from you was to {} at {} UTC: \"{}\". Anything you sent after that did not reach it: please send it again.",
                        l.contact_jid.split('@').next().unwrap_or(&l.contact_jid),
                        utc(l.created),
                        l.preview
                    ),
                    None => "The SMS gateway restarted after an unexpected stop. It has no chat from you on record: anything you sent just before did not reach it; please send it again.".to_owned(),
                };
                Action::Xmpp(OutgoingStanza::Chat {
                    from: self.routing.domain.clone(),
                    to: u.jid.clone(),
                    body,
                    media_url: None,
                    inbound_id: None,
                })
            })
            .collect()
    }

    /// At a clean stop: the next start has nothing to report.
    pub fn end_run(&self) {
        if let Err(e) = self.store.set_meta(RUNNING, 0) {
            tracing::error!(error = %e, "cannot mark a clean stop in the store");
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, GatewayState> {
        // A panic elsewhere must not take the Gateway down with a poisoned lock:
        // the state is a set of maps that stay consistent between statements.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a batch of events whose store writes are committed together
    /// (see [`Store::begin`]).
    pub fn begin_batch(&self) -> Result<(), StoreError> {
        self.store.begin()
    }

    /// Commits the batch started by [`Gateway::begin_batch`].
    pub fn commit_batch(&self) -> Result<(), StoreError> {
        self.store.commit()
    }

    /// Forgets store entries older than `keep` allows.
    pub fn expire(&self, keep: crate::store::Retention) {
        let (before, seen_before) = keep.cutoffs(unix_now());
        match self.store.expire(before, seen_before) {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "expired old entries from the store"),
            Err(e) => tracing::error!(error = %e, "cannot expire old entries"),
        }
    }

    /// Handles an event from the XMPP process.
    pub fn on_xmpp(&self, event: XmppEvent) -> Vec<Action> {
        match event {
            XmppEvent::Chat(chat) => self.on_chat(chat),
            XmppEvent::Delivered(id) => {
                if let Err(e) = self.store.inbound_delivered(id) {
                    // It stays pending: delivered once more after a restart.
                    tracing::error!(error = %e, id, "cannot mark an inbound text delivered");
                }
                vec![]
            }
        }
    }

    /// Handles a chat from a user.
    pub fn on_chat(&self, chat: ChatMessage) -> Vec<Action> {
        // Chat states, markers, receipts: nothing to text, nothing to answer.
        if chat.body.trim().is_empty() && chat.media.is_empty() {
            return vec![];
        }
        let error = |condition, text: String| {
            vec![Action::Xmpp(OutgoingStanza::Error {
                from: chat.to.clone(),
                to: chat.from.clone(),
                id: chat.id.clone(),
                condition,
                text,
            })]
        };
        let Some(user) = self.routing.user(&chat.from) else {
            return error(
                ErrorCondition::RegistrationRequired,
                "You are not a user of this SMS gateway.".into(),
            );
        };
        let node = match chat.to.split_once('@') {
            Some((node, _)) => node,
            None => {
                return error(
                    ErrorCondition::BadRequest,
                    format!(
                        "Write to a phone number at this gateway, such as +15557654321@{}.",
                        self.routing.domain
                    ),
                )
            }
        };
        let to = match self.routing.phone.parse(node) {
            Ok(n) => n,
            Err(e) => return error(ErrorCondition::JidMalformed, format!("{e}.")),
        };
        for url in &chat.media {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return error(
                    ErrorCondition::BadRequest,
                    format!("Only http(s) media can be sent by MMS, not {url:?}."),
                );
            }
            if !self.routing.relay_private_urls && crate::media::is_private_url(url) {
                return error(
                    ErrorCondition::NotAcceptable,
                    format!(
                        "The media link {} points at a private or local address, which the carrier cannot fetch (and the gateway does not fetch for users unless the operator sets media.relay_private_urls).",
                        text::excerpt(url, 80)
                    ),
                );
            }
        }
        let policy = self.routing.policy(&user.account);
        if chat.media.len() > policy.limits.max_media {
            return error(
                ErrorCondition::NotAcceptable,
                format!(
                    "At most {} media per message on this account; this message has {}.",
                    policy.limits.max_media,
                    chat.media.len()
                ),
            );
        }
        // A client that uploads a file puts its URL in the body too: send it once.
        let body = if chat.media.iter().any(|m| m == chat.body.trim()) {
            String::new()
        } else {
            chat.body.clone()
        };
        let texts = if text::fits(&body, policy.limits.body) {
            vec![body]
        } else if policy.split_long {
            text::split(&body, policy.limits.body)
        } else {
            let limit = match policy.limits.body {
                text::BodyLimit::Characters(n) => format!("{n} characters"),
                text::BodyLimit::Segments(n) => format!("{n} SMS segments"),
                text::BodyLimit::Unlimited => "no limit".into(),
            };
            return error(
                ErrorCondition::NotAcceptable,
                format!(
                    "The text is too long for one message ({} characters, {} SMS segments; this account takes at most {limit}) and the account is set not to split texts (split_long = false).",
                    body.chars().count(),
                    text::segments(&body)
                ),
            );
        };
        let limits = &self.routing.limits;
        if texts.len() > limits.max_parts {
            return error(
                ErrorCondition::NotAcceptable,
                format!(
                    "The text is too long: it would be {} SMS, and this gateway sends at most {} per message (limits.max_parts). Send it in shorter pieces.",
                    texts.len(),
                    limits.max_parts
                ),
            );
        }
        let cost = u32::try_from(texts.len()).unwrap_or(u32::MAX);
        let allowed = {
            let mut state = self.state();
            let rates = state.rates.get_or_insert_with(|| {
                crate::rate::Buckets::new(limits.texts_per_minute, limits.texts_burst)
            });
            rates.take(&user.jid, cost, std::time::Instant::now())
        };
        if let Err(wait) = allowed {
            return error(
                ErrorCondition::ResourceConstraint,
                format!(
                    "Not sent: you are over this gateway's limit of {} SMS a minute (limits.texts_per_minute, bursts of {}). Try again in {} s.",
                    limits.texts_per_minute,
                    limits.texts_burst,
                    wait.as_secs().max(1)
                ),
            );
        }
        let parts: Vec<OutboundSms> = texts
            .into_iter()
            .enumerate()
            .map(|(i, body)| OutboundSms {
                from: user.number.clone(),
                to: to.clone(),
                body,
                // Media go with the first part.
                media: if i == 0 { chat.media.clone() } else { vec![] },
            })
            .collect();
        let chat = ChatRecord {
            created: unix_now(),
            account: user.account.clone(),
            user_full_jid: chat.from.clone(),
            contact_jid: self.routing.contact_jid(&to),
            stanza_id: chat.id.clone(),
            receipt: chat.receipt_requested,
            parts,
            state: ChatState::Sending,
        };
        // Stored before anything else happens: it survives a crash from here on.
        let ticket = match self.store.insert_chat(&chat) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot store a chat");
                return error(
                    ErrorCondition::InternalServerError,
                    "The gateway could not queue this text (its store failed); it was not sent."
                        .into(),
                );
            }
        };
        let action = self.send_command(ticket, &chat);
        self.state().sending.insert(ticket, chat);
        vec![action]
    }

    /// Handles an event from the PSTN process. For an inbound text, the
    /// returned [`Ack`] must be sent only after the actions are handed on, so
    /// the webhook is answered 2xx only then (invariant 2).
    pub fn on_pstn(&self, event: PstnEvent) -> (Vec<Action>, Option<Ack>) {
        match event {
            PstnEvent::SendResult { ticket, ids, error } => {
                (self.on_send_result(ticket, ids, error), None)
            }
            PstnEvent::Status { account, report } => (self.on_status(&account, report), None),
            PstnEvent::MediaFetched { account, id, sms } => {
                (self.on_media_fetched(&account, id, &sms), None)
            }
            PstnEvent::Inbound { account, sms, ack } => match self.on_inbound(&account, &sms) {
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

    /// Takes an inbound text: refused when nobody has its number; stored
    /// (the webhook is answered 2xx only after this); a repeat of one already
    /// taken (a carrier's retry) becomes nothing. The chats it becomes.
    pub fn on_inbound(
        &self,
        account: &str,
        sms: &InboundSms,
    ) -> Result<Vec<Action>, InboundRejected> {
        // Check the route before storing: a text nobody can get is refused.
        self.inbound_chats(account, sms, None)?;
        match self.store.insert_inbound(account, sms, unix_now()) {
            Ok(Some(id)) => match self.fetch_command(account, id, sms) {
                // The webhook is answered once the text is stored; its
                // media are fetched after, and the chats follow them.
                Some(fetch) => Ok(vec![fetch]),
                None => self.inbound_chats(account, sms, Some(id)),
            },
            Ok(None) => {
                tracing::info!(%account, id = %sms.id, "a repeated webhook: already taken");
                Ok(vec![])
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot store an inbound text");
                Err(InboundRejected::Unavailable)
            }
        }
    }

    /// The command that fetches stored text `id`'s media, if it has media
    /// not yet fetched (and media are fetched at all).
    fn fetch_command(&self, account: &str, id: u64, sms: &InboundSms) -> Option<Action> {
        if !self.routing.fetch_media || sms.media.iter().all(|m| m.fetched.is_some()) {
            return None;
        }
        let user = self
            .routing
            .by_number
            .get(&(account.to_owned(), sms.to.clone()))?;
        Some(Action::Pstn(PstnCommand::FetchMedia {
            account: account.to_owned(),
            id,
            user: user.clone(),
            sms: sms.clone(),
            retry_until: unix_now() + self.retry_deadline.as_secs(),
        }))
    }

    /// Stored text `id`'s media have been fetched: kept so (a restart does
    /// not fetch them again), and delivered.
    fn on_media_fetched(&self, account: &str, id: u64, sms: &InboundSms) -> Vec<Action> {
        if let Err(e) = self.store.update_inbound(id, sms) {
            // Delivered all the same; after a restart, fetched again.
            tracing::error!(error = %e, id, "cannot record fetched media in the store");
        }
        match self.inbound_chats(account, sms, Some(id)) {
            Ok(actions) => actions,
            Err(e) => {
                tracing::warn!(%account, error = %e, "an inbound text has nobody to go to now");
                if let Err(e) = self.store.inbound_delivered(id) {
                    tracing::error!(error = %e, id, "cannot drop an undeliverable inbound text");
                }
                vec![]
            }
        }
    }

    /// The chats an inbound text becomes (the last one carrying `inbound_id`),
    /// or why it cannot be delivered.
    fn inbound_chats(
        &self,
        account: &str,
        sms: &InboundSms,
        inbound_id: Option<u64>,
    ) -> Result<Vec<Action>, InboundRejected> {
        let user_jid = self
            .routing
            .by_number
            .get(&(account.to_owned(), sms.to.clone()))
            .ok_or_else(|| InboundRejected::UnknownNumber(sms.to.to_string()))?;
        let from = self.routing.contact_jid(&sms.from);
        let mut actions = Vec::with_capacity(1 + sms.media.len());
        if !sms.body.is_empty() {
            actions.push(OutgoingStanza::Chat {
                from: from.clone(),
                to: user_jid.clone(),
                body: sms.body.clone(),
                media_url: None,
                inbound_id: None,
            });
        }
        let count = sms.media.len();
        for (i, m) in sms.media.iter().enumerate() {
            let (body, media_url) = match &m.fetched {
                Some(Fetched::Served { url }) => (url.clone(), Some(url.clone())),
                Some(Fetched::Failed { reason }) => {
                    (crate::media::failure_line(i, count, m, reason), None)
                }
                // `media.store = "link"`: the carrier's own URL.
                None => (m.url.clone(), Some(m.url.clone())),
            };
            actions.push(OutgoingStanza::Chat {
                from: from.clone(),
                to: user_jid.clone(),
                body,
                media_url,
                inbound_id: None,
            });
        }
        if let Some(OutgoingStanza::Chat {
            inbound_id: last, ..
        }) = actions.last_mut()
        {
            *last = inbound_id;
        }
        Ok(actions.into_iter().map(Action::Xmpp).collect())
    }

    fn on_send_result(
        &self,
        ticket: u64,
        ids: Vec<String>,
        error: Option<ProviderError>,
    ) -> Vec<Action> {
        let mut state = self.state();
        let Some(mut chat) = state.sending.remove(&ticket) else {
            tracing::warn!(ticket, "send result for an unknown ticket");
            return vec![];
        };
        let Some(e) = error else {
            tracing::debug!(ids = ?ids, account = %chat.account, "text accepted by the carrier");
            chat.state = ChatState::Sent {
                ids: ids.clone(),
                undelivered: ids.len(),
            };
            // The texts are gone; what is left is what a report needs.
            chat.parts = Vec::new();
            if let Err(e) = self.store.update_chat(ticket, &chat) {
                // Its reports will find nothing: no receipt, no error.
                tracing::error!(error = %e, "cannot store a sent chat");
            }
            let mut actions = vec![];
            for id in ids {
                let key = (chat.account.clone(), id);
                if let Some(status) = state.early.remove(&key) {
                    actions.extend(self.apply_status(&key, status, None));
                }
            }
            return actions;
        };
        if let Err(e) = self.store.delete_chat(ticket) {
            tracing::error!(error = %e, "cannot forget a chat");
        }
        tracing::warn!(account = %chat.account, error = %e, "text not sent");
        let condition = match e.kind {
            ProviderErrorKind::Rejected => ErrorCondition::NotAcceptable,
            ProviderErrorKind::Unauthorized => ErrorCondition::InternalServerError,
            ProviderErrorKind::RateLimited
            | ProviderErrorKind::CarrierError
            | ProviderErrorKind::Network
            | ProviderErrorKind::Timeout => ErrorCondition::RemoteServerTimeout,
        };
        let parts = chat.parts.len();
        let mut text = if parts > 1 && !ids.is_empty() {
            format!(
                "Only part of the text was sent: parts 1 to {} of {parts} went out, part {} did not: {e}.",
                ids.len(),
                ids.len() + 1
            )
        } else {
            format!("Not sent: {e}.")
        };
        if e.kind == ProviderErrorKind::Timeout {
            text.push_str(" It was not sent again, so that it cannot arrive twice.");
        }
        vec![Action::Xmpp(OutgoingStanza::Error {
            from: chat.contact_jid,
            to: chat.user_full_jid,
            id: chat.stanza_id,
            condition,
            text,
        })]
    }

    fn on_status(&self, account: &str, report: StatusReport) -> Vec<Action> {
        if report.status == DeliveryStatus::InProgress {
            return vec![];
        }
        let key = (account.to_owned(), report.message_id);
        let found = match self.store.find_sent(&key.0, &key.1) {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(error = %e, "cannot look a delivery report up");
                return vec![];
            }
        };
        if found.is_none() {
            let mut state = self.state();
            if state.sending.is_empty() {
                tracing::debug!(message_id = %key.1, "delivery report for a message we do not remember");
            } else {
                // Its send's result may still be on the way: keep it for then.
                if state.early.insert(key.clone(), report.status).is_none() {
                    state.early_order.push_back(key);
                }
                while state.early_order.len() > EARLY_MEMORY {
                    if let Some(old) = state.early_order.pop_front() {
                        state.early.remove(&old);
                    }
                }
            }
            return vec![];
        }
        self.apply_status(&key, report.status, found)
    }

    /// A final report for one part of a sent chat (`found`: the chat, if
    /// already looked up).
    fn apply_status(
        &self,
        key: &(String, String),
        status: DeliveryStatus,
        found: Option<(u64, ChatRecord)>,
    ) -> Vec<Action> {
        let found = match found {
            Some(f) => Ok(Some(f)),
            None => self.store.find_sent(&key.0, &key.1),
        };
        let (ticket, mut chat) = match found {
            Ok(Some(found)) => found,
            Ok(None) => return vec![],
            Err(e) => {
                tracing::error!(error = %e, "cannot look a delivery report up");
                return vec![];
            }
        };
        let ChatState::Sent { ids, undelivered } = &mut chat.state else {
            return vec![];
        };
        let parts = ids.len();
        match status {
            DeliveryStatus::InProgress => return vec![],
            DeliveryStatus::Delivered if *undelivered > 1 => {
                // Another part still to come. This part's id leaves the
                // receipt map, so a carrier repeating its report does not
                // count it twice.
                *undelivered -= 1;
                if let Err(e) = self
                    .store
                    .update_chat(ticket, &chat)
                    .and_then(|()| self.store.forget_sent_id(&key.0, &key.1))
                {
                    tracing::error!(error = %e, "cannot store a delivery report");
                }
                return vec![];
            }
            DeliveryStatus::Delivered | DeliveryStatus::Failed(_) => {}
        }
        if let Err(e) = self.store.delete_chat(ticket) {
            tracing::error!(error = %e, "cannot forget a chat");
        }
        match status {
            DeliveryStatus::Delivered => match (chat.receipt, chat.stanza_id) {
                (true, Some(id)) => vec![Action::Xmpp(OutgoingStanza::Receipt {
                    from: chat.contact_jid,
                    to: chat.user_full_jid,
                    id,
                })],
                _ => vec![],
            },
            DeliveryStatus::Failed(reason) => {
                let text = if parts > 1 {
                    format!("Part of the text was not delivered: {reason}.")
                } else {
                    format!("Not delivered: {reason}.")
                };
                vec![Action::Xmpp(OutgoingStanza::Error {
                    from: chat.contact_jid,
                    to: chat.user_full_jid,
                    id: chat.stanza_id,
                    condition: ErrorCondition::RecipientUnavailable,
                    text,
                })]
            }
            DeliveryStatus::InProgress => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Media;

    fn gateway() -> Gateway {
        gateway_with("")
    }

    /// [`gateway`] with more TOML (a `[limits]` section) at the end.
    fn gateway_with(extra: &str) -> Gateway {
        let cfg = Config::from_toml(&format!(
            r#"
[xmpp]
server = "127.0.0.1:5347"
domain = "sms.example.com"
secret = "x"
[http]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1/"
[phone]
default_prefix = "+1"
[providers.main]
type = "sandbox"
token = "sandbox-test-token"
[providers.other]
type = "sandbox"
token = "sandbox-test-token"
max_chars = 20
max_media = 2
[providers.strict]
type = "sandbox"
token = "sandbox-test-token"
max_chars = 20
split_long = false
[[users]]
jid = "alice@example.com"
number = "+15550001111"
provider = "main"
[[users]]
jid = "bob@example.com"
number = "+15550002222"
provider = "other"
[[users]]
jid = "carol@example.com"
number = "+15550003333"
provider = "strict"
{extra}
"#,
        ))
        .unwrap();
        let providers = cfg.validate(&crate::ProviderRegistry::new()).unwrap();
        Gateway::new(Arc::new(Routing::new(&cfg, &providers)), Arc::default())
    }

    fn chat(from: &str, to: &str, body: &str) -> ChatMessage {
        ChatMessage {
            from: from.into(),
            to: to.into(),
            id: Some("m1".into()),
            body: body.into(),
            media: vec![],
            receipt_requested: true,
        }
    }

    fn n(s: &str) -> PhoneNumber {
        PhoneNumber::parse(s, None).unwrap()
    }

    /// The carrier's answer to chat `ticket`: its parts' `ids`, or `error`.
    fn send_result(ticket: u64, ids: &[&str], error: Option<ProviderError>) -> PstnEvent {
        PstnEvent::SendResult {
            ticket,
            ids: ids.iter().map(|&id| id.into()).collect(),
            error,
        }
    }

    fn sent_ticket(actions: &[Action]) -> u64 {
        match actions {
            [Action::Pstn(PstnCommand::Send { ticket, .. })] => *ticket,
            other => panic!("expected one send, got {other:?}"),
        }
    }

    /// Past the per-user rate: `resource-constraint` naming the limit;
    /// other users are not held up. Past the parts cap: `not-acceptable`
    /// naming `limits.max_parts`, and no tokens are spent.
    #[test]
    fn over_the_rate_or_the_parts_cap_gets_an_error_naming_the_limit() {
        let g = gateway_with("[limits]\ntexts_per_minute = 6\ntexts_burst = 3\nmax_parts = 2\n");
        let to = "+15557654321@sms.example.com";
        let long = "x".repeat(50); // bob's account: 20 characters a part, so 3 parts
        let text = expect_error(
            g.on_chat(chat("bob@example.com/pc", to, &long)),
            ErrorCondition::NotAcceptable,
        );
        assert!(
            text.contains("limits.max_parts") && text.contains("3 SMS"),
            "{text}"
        );
        for i in 0..3 {
            let a = g.on_chat(chat("alice@example.com/phone", to, &format!("hi {i}")));
            assert!(matches!(&a[..], [Action::Pstn(_)]), "{i}: {a:?}");
        }
        let text = expect_error(
            g.on_chat(chat("alice@example.com/phone", to, "one too many")),
            ErrorCondition::ResourceConstraint,
        );
        assert!(
            text.contains("limits.texts_per_minute") && text.contains("6 SMS a minute"),
            "{text}"
        );
        let a = g.on_chat(chat("bob@example.com/pc", to, "bob is not held up"));
        assert!(matches!(&a[..], [Action::Pstn(_)]), "{a:?}");
    }

    #[test]
    fn chat_becomes_a_text_through_the_users_account() {
        let g = gateway();
        let a = g.on_chat(chat(
            "Alice@example.com/phone",
            "+15557654321@sms.example.com",
            "hello",
        ));
        match &a[..] {
            [Action::Pstn(PstnCommand::Send { account, parts, .. })] => {
                let sms = &parts[0];
                assert_eq!(account, "main");
                assert_eq!(sms.from, n("+15550001111"));
                assert_eq!(sms.to, n("+15557654321"));
                assert_eq!(sms.body, "hello");
            }
            other => panic!("{other:?}"),
        }
        let b = g.on_chat(chat(
            "bob@example.com/pc",
            "5557654321@sms.example.com",
            "hi",
        ));
        match &b[..] {
            [Action::Pstn(PstnCommand::Send { account, parts, .. })] => {
                let sms = &parts[0];
                assert_eq!(account, "other");
                assert_eq!(sms.to, n("+15557654321"), "default prefix applied");
            }
            other => panic!("{other:?}"),
        }
    }

    fn expect_error(actions: Vec<Action>, want: ErrorCondition) -> String {
        match &actions[..] {
            [Action::Xmpp(OutgoingStanza::Error {
                condition,
                text,
                id,
                ..
            })] => {
                assert_eq!(*condition, want, "{text}");
                assert_eq!(id.as_deref(), Some("m1"));
                text.clone()
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn unconfigured_sender_gets_an_error() {
        let g = gateway();
        let text = expect_error(
            g.on_chat(chat(
                "mallory@example.com/x",
                "+15557654321@sms.example.com",
                "hi",
            )),
            ErrorCondition::RegistrationRequired,
        );
        assert!(text.contains("not a user"));
    }

    #[test]
    fn invalid_number_gets_an_error_naming_it() {
        let g = gateway();
        let text = expect_error(
            g.on_chat(chat("alice@example.com/x", "pizza@sms.example.com", "hi")),
            ErrorCondition::JidMalformed,
        );
        assert!(text.contains("pizza"), "{text}");
        // Numbers no country has, typed or as E.164 (#11: they were texted).
        for to in [
            "+1555@sms.example.com",
            "1555@sms.example.com",
            "1234567@sms.example.com",
        ] {
            let text = expect_error(
                g.on_chat(chat("alice@example.com/x", to, "hi")),
                ErrorCondition::JidMalformed,
            );
            assert!(
                text.contains("too short") || text.contains("digits"),
                "{to}: {text}"
            );
        }
        expect_error(
            g.on_chat(chat("alice@example.com/x", "sms.example.com", "hi")),
            ErrorCondition::BadRequest,
        );
    }

    #[test]
    fn empty_and_whitespace_bodies_send_nothing() {
        let g = gateway();
        assert!(g
            .on_chat(chat(
                "alice@example.com/x",
                "+15557654321@sms.example.com",
                ""
            ))
            .is_empty());
        assert!(g
            .on_chat(chat(
                "alice@example.com/x",
                "+15557654321@sms.example.com",
                " \n"
            ))
            .is_empty());
    }

    #[test]
    fn carrier_refusal_and_outage_come_back_as_errors() {
        let g = gateway();
        let t = sent_ticket(&g.on_chat(chat(
            "alice@example.com/x",
            "+15557654321@sms.example.com",
            "hi",
        )));
        let refused =
            ProviderError::from_http_status(400, "Invalid 'To' Phone Number").with_code("21211");
        let text = expect_error(
            g.on_pstn(send_result(t, &[], Some(refused))).0,
            ErrorCondition::NotAcceptable,
        );
        assert!(
            text.contains("21211") && text.contains("Invalid 'To'"),
            "{text}"
        );

        let t = sent_ticket(&g.on_chat(chat(
            "alice@example.com/x",
            "+15557654321@sms.example.com",
            "hi",
        )));
        let down = ProviderError::new(ProviderErrorKind::Network, "connection refused");
        let text = expect_error(
            g.on_pstn(send_result(t, &[], Some(down))).0,
            ErrorCondition::RemoteServerTimeout,
        );
        assert!(text.contains("unreachable"), "{text}");
    }

    #[test]
    fn delivered_gives_a_receipt_and_failed_an_error() {
        let g = gateway();
        let t = sent_ticket(&g.on_chat(chat(
            "alice@example.com/x",
            "+15557654321@sms.example.com",
            "hi",
        )));
        assert!(g.on_pstn(send_result(t, &["SM1"], None)).0.is_empty());
        let status = |id: &str, status| PstnEvent::Status {
            account: "main".into(),
            report: StatusReport {
                message_id: id.into(),
                status,
            },
        };
        assert!(g
            .on_pstn(status("SM1", DeliveryStatus::InProgress))
            .0
            .is_empty());
        assert_eq!(
            g.on_pstn(status("SM1", DeliveryStatus::Delivered)).0,
            vec![Action::Xmpp(OutgoingStanza::Receipt {
                from: "+15557654321@sms.example.com".into(),
                to: "alice@example.com/x".into(),
                id: "m1".into(),
            })]
        );
        // A repeated report finds nothing left to answer.
        assert!(g
            .on_pstn(status("SM1", DeliveryStatus::Delivered))
            .0
            .is_empty());

        let t = sent_ticket(&g.on_chat(chat(
            "alice@example.com/x",
            "+15557654321@sms.example.com",
            "hi",
        )));
        let _ = g.on_pstn(send_result(t, &["SM2"], None));
        let text = expect_error(
            g.on_pstn(status(
                "SM2",
                DeliveryStatus::Failed("error 30003: Unreachable destination handset".into()),
            ))
            .0,
            ErrorCondition::RecipientUnavailable,
        );
        assert!(text.contains("30003"), "{text}");
    }

    fn parts_of(actions: &[Action]) -> Vec<OutboundSms> {
        match actions {
            [Action::Pstn(PstnCommand::Send { parts, .. })] => parts.clone(),
            other => panic!("expected one send, got {other:?}"),
        }
    }

    #[test]
    fn a_long_text_is_split_in_order_with_media_on_the_first_part() {
        let g = gateway();
        let mut c = chat(
            "bob@example.com/x",
            "+15557654321@sms.example.com",
            "one two three four five six seven eight",
        );
        c.media = vec!["https://up.example/a.jpg".into()];
        let parts = parts_of(&g.on_chat(c));
        assert!(parts.len() >= 2, "{parts:?}");
        assert!(
            parts.iter().all(|p| p.body.chars().count() <= 20),
            "{parts:?}"
        );
        assert_eq!(
            parts.iter().map(|p| p.body.as_str()).collect::<String>(),
            "one two three four five six seven eight"
        );
        assert_eq!(parts[0].media, vec!["https://up.example/a.jpg".to_owned()]);
        assert!(parts[1..].iter().all(|p| p.media.is_empty()));
    }

    #[test]
    fn split_long_false_refuses_and_media_beyond_the_limit_are_refused() {
        let g = gateway();
        let text = expect_error(
            g.on_chat(chat(
                "carol@example.com/x",
                "+15557654321@sms.example.com",
                "this text is longer than twenty",
            )),
            ErrorCondition::NotAcceptable,
        );
        assert!(
            text.contains("split_long") && text.contains("20 characters"),
            "{text}"
        );
        assert_eq!(
            parts_of(&g.on_chat(chat(
                "carol@example.com/x",
                "+15557654321@sms.example.com",
                "short"
            )))
            .len(),
            1
        );

        let mut c = chat("bob@example.com/x", "+15557654321@sms.example.com", "");
        c.media = (0..3)
            .map(|i| format!("https://up.example/{i}.jpg"))
            .collect();
        let text = expect_error(g.on_chat(c), ErrorCondition::NotAcceptable);
        assert!(text.contains("At most 2 media"), "{text}");

        let mut c = chat("alice@example.com/x", "+15557654321@sms.example.com", "");
        c.media = vec!["file:///etc/passwd".into()];
        let text = expect_error(g.on_chat(c), ErrorCondition::BadRequest);
        assert!(text.contains("http"), "{text}");
    }

    #[test]
    fn the_receipt_waits_for_every_part_and_a_partial_send_is_reported() {
        let g = gateway();
        let actions = g.on_chat(chat(
            "bob@example.com/x",
            "+15557654321@sms.example.com",
            "one two three four five six seven eight",
        ));
        let t = sent_ticket(&actions);
        let n = parts_of(&actions).len();
        let ids: Vec<String> = (0..n).map(|i| format!("P{i}")).collect();
        let _ = g.on_pstn(PstnEvent::SendResult {
            ticket: t,
            ids: ids.clone(),
            error: None,
        });
        let delivered = |id: &str| PstnEvent::Status {
            account: "other".into(),
            report: StatusReport {
                message_id: id.into(),
                status: DeliveryStatus::Delivered,
            },
        };
        for id in &ids[..n - 1] {
            assert!(
                g.on_pstn(delivered(id)).0.is_empty(),
                "no receipt before the last part"
            );
            // Carriers repeat reports; a part is counted once.
            assert!(
                g.on_pstn(delivered(id)).0.is_empty(),
                "a repeated report counts nothing"
            );
        }
        assert!(matches!(
            &g.on_pstn(delivered(&ids[n - 1])).0[..],
            [Action::Xmpp(OutgoingStanza::Receipt { .. })]
        ));

        let t = sent_ticket(&g.on_chat(chat(
            "bob@example.com/x",
            "+15557654321@sms.example.com",
            "one two three four five six seven eight",
        )));
        let e = ProviderError::new(ProviderErrorKind::CarrierError, "boom");
        let text = expect_error(
            g.on_pstn(send_result(t, &["Q0"], Some(e))).0,
            ErrorCondition::RemoteServerTimeout,
        );
        assert!(
            text.contains("parts 1 to 1 of") && text.contains("part 2 did not"),
            "{text}"
        );
    }

    #[test]
    fn a_part_reported_twice_counts_once_even_after_other_parts() {
        let g = gateway();
        let t = sent_ticket(&g.on_chat(chat(
            "bob@example.com/x",
            "+15557654321@sms.example.com",
            "one two three four five six seven eight nine ten eleven twelve",
        )));
        let _ = g.on_pstn(send_result(t, &["R0", "R1", "R2"], None));
        let delivered = |id: &str| PstnEvent::Status {
            account: "other".into(),
            report: StatusReport {
                message_id: id.into(),
                status: DeliveryStatus::Delivered,
            },
        };
        assert!(g.on_pstn(delivered("R0")).0.is_empty());
        assert!(g.on_pstn(delivered("R1")).0.is_empty());
        // R0 again, after R1 was stored: still counted once.
        assert!(
            g.on_pstn(delivered("R0")).0.is_empty(),
            "a repeat after another part's report counts nothing"
        );
        assert!(matches!(
            &g.on_pstn(delivered("R2")).0[..],
            [Action::Xmpp(OutgoingStanza::Receipt { .. })]
        ));
    }

    #[test]
    fn a_report_that_overtakes_its_send_result_still_counts() {
        let g = gateway();
        let t = sent_ticket(&g.on_chat(chat(
            "alice@example.com/x",
            "+15557654321@sms.example.com",
            "hi",
        )));
        let early = PstnEvent::Status {
            account: "main".into(),
            report: StatusReport {
                message_id: "SM9".into(),
                status: DeliveryStatus::Delivered,
            },
        };
        assert!(g.on_pstn(early).0.is_empty());
        let (actions, _) = g.on_pstn(send_result(t, &["SM9"], None));
        assert!(
            matches!(&actions[..], [Action::Xmpp(OutgoingStanza::Receipt { id, .. })] if id == "m1"),
            "{actions:?}"
        );
    }

    #[test]
    fn after_a_restart_pending_chats_are_resent_and_receipts_still_come() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let cfg_gateway = gateway();
        let make = || {
            Gateway::with_store(
                cfg_gateway.routing.clone(),
                Arc::default(),
                store.clone(),
                DEFAULT_RETRY_DEADLINE,
            )
        };
        let before = make();
        let t1 = sent_ticket(&before.on_chat(chat(
            "alice@example.com/x",
            "+15557654321@sms.example.com",
            "sent",
        )));
        let _ = before.on_pstn(send_result(t1, &["SM1"], None));
        let t2 = sent_ticket(&before.on_chat(chat(
            "alice@example.com/x",
            "+15557654321@sms.example.com",
            "pending",
        )));
        let sms = InboundSms {
            id: "SMin".into(),
            from: n("+15557654321"),
            to: n("+15550001111"),
            body: "in".into(),
            media: vec![],
        };
        let _ = before.on_inbound("main", &sms).unwrap();
        drop(before);

        // The program dies; a new gateway starts on the same store.
        let after = make();
        let actions = after
            .recover(crate::store::Retention {
                texts: Duration::from_secs(86_400),
                seen: Duration::from_secs(86_400),
            })
            .unwrap();
        assert!(actions.iter().any(|a| matches!(a, Action::Pstn(PstnCommand::Send { ticket, parts, .. }) if *ticket == t2 && parts[0].body == "pending")), "{actions:?}");
        assert!(
            !actions.iter().any(
                |a| matches!(a, Action::Pstn(PstnCommand::Send { ticket, .. }) if *ticket == t1)
            ),
            "accepted chats are not resent"
        );
        assert!(actions.iter().any(|a| matches!(a, Action::Xmpp(OutgoingStanza::Chat { body, inbound_id: Some(_), .. }) if body == "in")), "{actions:?}");
        // The delivery report of the chat sent before the restart still makes its receipt.
        let (receipt, _) = after.on_pstn(PstnEvent::Status {
            account: "main".into(),
            report: StatusReport {
                message_id: "SM1".into(),
                status: DeliveryStatus::Delivered,
            },
        });
        assert!(
            matches!(&receipt[..], [Action::Xmpp(OutgoingStanza::Receipt { id, .. })] if id == "m1"),
            "{receipt:?}"
        );
        assert_eq!(
            store.chats().unwrap().len(),
            1,
            "the delivered chat left the store; the pending one stays"
        );
        // And the carrier's retry of the inbound webhook is still recognised.
        assert_eq!(after.on_inbound("main", &sms), Ok(vec![]));
    }

    #[test]
    fn a_timeout_is_reported_and_not_retried() {
        let g = gateway();
        let t = sent_ticket(&g.on_chat(chat(
            "alice@example.com/x",
            "+15557654321@sms.example.com",
            "hi",
        )));
        let e = ProviderError::new(ProviderErrorKind::Timeout, "no answer within 30s");
        let text = expect_error(
            g.on_pstn(send_result(t, &[], Some(e))).0,
            ErrorCondition::RemoteServerTimeout,
        );
        assert!(
            text.contains("may or may not") && text.contains("not sent again"),
            "{text}"
        );
        assert!(
            g.store.chats().unwrap().is_empty(),
            "reported, so it leaves the store"
        );
    }

    #[test]
    fn inbound_text_and_media_become_chats() {
        let g = gateway();
        let sms = InboundSms {
            id: "SMx".into(),
            from: n("+15557654321"),
            to: n("+15550001111"),
            body: "hey".into(),
            media: vec![
                Media::new("https://carrier.example/1", Some("image/jpeg".into())),
                Media::new("https://carrier.example/2", Some("image/png".into())),
            ],
        };
        let a = g.on_inbound("main", &sms).unwrap();
        let stored = g.store.pending_inbound().unwrap();
        assert_eq!(stored.len(), 1, "stored before it is answered");
        let id = stored[0].id;
        // Media are fetched first; the chats wait for them.
        let [Action::Pstn(PstnCommand::FetchMedia {
            account,
            id: fetch_id,
            user,
            sms: to_fetch,
            ..
        })] = &a[..]
        else {
            panic!("{a:?}")
        };
        assert_eq!(
            (account.as_str(), *fetch_id, user.as_str()),
            ("main", id, "alice@example.com")
        );
        assert_eq!(to_fetch, &sms);
        // A restart before the fetch ends fetches again.
        let again = g
            .recover(crate::config::StoreConfig::default().keep())
            .unwrap();
        assert!(
            matches!(&again[..], [Action::Pstn(PstnCommand::FetchMedia { id: i, .. })] if *i == id),
            "{again:?}"
        );
        let mut fetched = sms.clone();
        fetched.media[0].fetched = Some(Fetched::Served {
            url: "https://gw.example/media/0123/1.jpg".into(),
        });
        fetched.media[1].fetched = Some(Fetched::Failed {
            reason: "the carrier no longer has it (HTTP 404)".into(),
        });
        let (chats, ack) = g.on_pstn(PstnEvent::MediaFetched {
            account: "main".into(),
            id,
            sms: fetched.clone(),
        });
        assert!(ack.is_none());
        let chat = |body: &str, media_url: Option<&str>, inbound_id| {
            Action::Xmpp(OutgoingStanza::Chat {
                from: "+15557654321@sms.example.com".into(),
                to: "alice@example.com".into(),
                body: body.into(),
                media_url: media_url.map(Into::into),
                inbound_id,
            })
        };
        assert_eq!(
            chats,
            vec![
                chat("hey", None, None),
                chat(
                    "https://gw.example/media/0123/1.jpg",
                    Some("https://gw.example/media/0123/1.jpg"),
                    None
                ),
                chat(
                    "[Attachment 2 of 2 (image/png) could not be fetched: the carrier no longer has it (HTTP 404).]",
                    None,
                    Some(id)
                ),
            ]
        );
        // Kept so: a restart now delivers without fetching.
        assert_eq!(g.store.pending_inbound().unwrap()[0].sms, fetched);
        let again = g
            .recover(crate::config::StoreConfig::default().keep())
            .unwrap();
        assert_eq!(again, chats);
        // The carrier's retry of the same webhook delivers nothing new.
        assert_eq!(g.on_inbound("main", &sms), Ok(vec![]));
        // Once written to the server, it leaves the store.
        assert!(g.on_xmpp(XmppEvent::Delivered(id)).is_empty());
        assert!(g.store.pending_inbound().unwrap().is_empty());
        // Alice's number on the wrong account is nobody's.
        assert_eq!(
            g.on_inbound("other", &sms),
            Err(InboundRejected::UnknownNumber("+15550001111".into()))
        );
    }

    #[test]
    fn with_media_store_link_the_carriers_urls_go_as_they_are() {
        let g = gateway_with("[media]\nstore = \"link\"\n");
        let sms = InboundSms {
            id: "SMy".into(),
            from: n("+15557654321"),
            to: n("+15550001111"),
            body: String::new(),
            media: vec![Media::new("https://m.example/1.jpg", None)],
        };
        let a = g.on_inbound("main", &sms).unwrap();
        assert!(
            matches!(&a[..], [Action::Xmpp(OutgoingStanza::Chat { media_url: Some(u), .. })] if u == "https://m.example/1.jpg"),
            "{a:?}"
        );
    }

    #[test]
    fn media_links_on_private_addresses_are_refused_unless_relayed() {
        let mut c = chat(
            "alice@example.com/phone",
            "+15557654321@sms.example.com",
            "",
        );
        c.media = vec!["http://127.0.0.1:5280/upload/a.jpg".into()];
        let text = expect_error(gateway().on_chat(c.clone()), ErrorCondition::NotAcceptable);
        assert!(text.contains("media.relay_private_urls"), "{text}");
        let relayed = gateway_with("[media]\nrelay_private_urls = true\n").on_chat(c);
        assert!(
            matches!(&relayed[..], [Action::Pstn(PstnCommand::Send { .. })]),
            "{relayed:?}"
        );
    }

    #[test]
    fn utc_matches_python() {
        // python3: datetime.fromtimestamp(t, timezone.utc).strftime('%Y-%m-%d %H:%M:%S')
        for (t, want) in [
            (0, "1970-01-01 00:00:00"),
            (951_782_400, "2000-02-29 00:00:00"),
            (1_709_251_199, "2024-02-29 23:59:59"),
            (1_795_762_352, "2026-11-27 06:52:32"),
            (4_102_444_800, "2100-01-01 00:00:00"),
            (253_402_300_799, "9999-12-31 23:59:59"),
        ] {
            assert_eq!(utc(t), want, "{t}");
        }
    }

    fn notices(actions: &[Action]) -> Vec<(String, String, String)> {
        actions
            .iter()
            .map(|a| match a {
                Action::Xmpp(OutgoingStanza::Chat { from, to, body, .. }) => {
                    (from.clone(), to.clone(), body.clone())
                }
                other => panic!("not a notice: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn after_an_unclean_stop_each_user_is_told_what_arrived_last() {
        let g = gateway();
        assert!(g.start_run().is_empty(), "a new store: nothing to tell");
        g.on_chat(chat(
            "alice@example.com/phone",
            "+15557654321@sms.example.com",
            "first",
        ));
        g.on_chat(chat(
            "Alice@example.com/laptop",
            "+15557654322@sms.example.com",
            "the last one, with more than forty characters in it",
        ));
        // The process dies here: no end_run. The next run shares the store.
        let next = Gateway::with_store(
            g.routing.clone(),
            Arc::default(),
            g.store.clone(),
            DEFAULT_RETRY_DEADLINE,
        );
        let told = notices(&next.start_run());
        assert_eq!(told.len(), 3, "every configured user: {told:?}");
        let (from, to, body) = &told[0];
        assert_eq!(
            (from.as_str(), to.as_str()),
            ("sms.example.com", "alice@example.com")
        );
        assert!(body.contains("unexpected stop"), "{body}");
        assert!(body.contains("to +15557654322 at "), "{body}");
        assert!(
            body.contains("\"the last one, with more than forty chara…\""),
            "{body}"
        );
        assert!(
            told[1].2.contains("no chat from you on record"),
            "{}",
            told[1].2
        );
        // Killed again at once: not told twice within the hour.
        assert!(next.start_run().is_empty());
        // A clean stop leaves nothing to tell.
        next.end_run();
        assert!(next.start_run().is_empty());
    }
}
