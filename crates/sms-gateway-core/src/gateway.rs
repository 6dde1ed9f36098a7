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
    ChatMessage, DeliveryStatus, ErrorCondition, InboundRejected, InboundSms, OutboundSms,
    OutgoingStanza, PstnCommand, PstnEvent, StatusReport, XmppEvent,
};
use crate::phone::PhoneNumber;
use crate::provider::{ProviderError, ProviderErrorKind};
use crate::text::{self, Limits};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// How many sent messages are remembered for their delivery reports.
const SENT_MEMORY: usize = 100_000;
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

/// What the Gateway remembers about a chat between `send` and its reports.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    user_full_jid: String,
    contact_jid: String,
    stanza_id: Option<String>,
    receipt: bool,
    account: String,
    parts: usize,
}

/// A chat the carrier accepted, waiting for its parts' delivery reports.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    pending: Pending,
    ids: Vec<String>,
    undelivered: usize,
}

/// The Gateway's memory. The component keeps it across Gateway restarts.
#[derive(Debug, Default)]
pub struct GatewayState {
    next_ticket: u64,
    sending: HashMap<u64, Pending>,
    /// (account, carrier message id) → ticket of the chat it is part of.
    sent_ids: HashMap<(String, String), u64>,
    sent: HashMap<u64, Sent>,
    sent_order: VecDeque<u64>,
    /// Reports that arrived before their send's result (a fast carrier can
    /// call back before its API answer is read); applied when it arrives.
    early: HashMap<(String, String), DeliveryStatus>,
    early_order: VecDeque<(String, String)>,
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

/// Translation and routing. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct Gateway {
    routing: Arc<Routing>,
    state: Arc<Mutex<GatewayState>>,
}

impl Gateway {
    /// A Gateway over `routing`, remembering in `state`.
    pub fn new(routing: Arc<Routing>, state: Arc<Mutex<GatewayState>>) -> Self {
        Gateway { routing, state }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, GatewayState> {
        // A panic elsewhere must not take the Gateway down with a poisoned lock:
        // the state is a set of maps that stay consistent between statements.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Handles an event from the XMPP process.
    pub fn on_xmpp(&self, event: XmppEvent) -> Vec<Action> {
        match event {
            XmppEvent::Chat(chat) => self.on_chat(chat),
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
        let mut state = self.state();
        state.next_ticket += 1;
        let ticket = state.next_ticket;
        state.sending.insert(
            ticket,
            Pending {
                user_full_jid: chat.from.clone(),
                contact_jid: self.routing.contact_jid(&to),
                stanza_id: chat.id.clone(),
                receipt: chat.receipt_requested,
                account: user.account.clone(),
                parts: parts.len(),
            },
        );
        vec![Action::Pstn(PstnCommand::Send {
            account: user.account.clone(),
            parts,
            ticket,
        })]
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

    /// The chats an inbound text becomes, or why it cannot be delivered.
    pub fn on_inbound(
        &self,
        account: &str,
        sms: &InboundSms,
    ) -> Result<Vec<Action>, InboundRejected> {
        let user_jid = self
            .routing
            .by_number
            .get(&(account.to_owned(), sms.to.clone()))
            .ok_or_else(|| InboundRejected::UnknownNumber(sms.to.to_string()))?;
        let from = self.routing.contact_jid(&sms.from);
        let mut actions = Vec::with_capacity(1 + sms.media.len());
        if !sms.body.is_empty() {
            actions.push(Action::Xmpp(OutgoingStanza::Chat {
                from: from.clone(),
                to: user_jid.clone(),
                body: sms.body.clone(),
                media_url: None,
            }));
        }
        for m in &sms.media {
            actions.push(Action::Xmpp(OutgoingStanza::Chat {
                from: from.clone(),
                to: user_jid.clone(),
                body: m.url.clone(),
                media_url: Some(m.url.clone()),
            }));
        }
        Ok(actions)
    }

    fn on_send_result(
        &self,
        ticket: u64,
        ids: Vec<String>,
        error: Option<ProviderError>,
    ) -> Vec<Action> {
        let mut state = self.state();
        let Some(p) = state.sending.remove(&ticket) else {
            tracing::warn!(ticket, "send result for an unknown ticket");
            return vec![];
        };
        let Some(e) = error else {
            tracing::debug!(ids = ?ids, account = %p.account, "text accepted by the carrier");
            for id in &ids {
                state
                    .sent_ids
                    .insert((p.account.clone(), id.clone()), ticket);
            }
            let undelivered = ids.len();
            let account = p.account.clone();
            state.sent.insert(
                ticket,
                Sent {
                    pending: p,
                    ids: ids.clone(),
                    undelivered,
                },
            );
            state.sent_order.push_back(ticket);
            while state.sent_order.len() > SENT_MEMORY {
                if let Some(old) = state.sent_order.pop_front() {
                    if let Some(s) = state.sent.remove(&old) {
                        for id in s.ids {
                            state.sent_ids.remove(&(s.pending.account.clone(), id));
                        }
                    }
                }
            }
            let mut actions = vec![];
            for id in ids {
                let key = (account.clone(), id);
                if let Some(status) = state.early.remove(&key) {
                    actions.extend(Self::apply_status(&mut state, key, status));
                }
            }
            return actions;
        };
        tracing::warn!(account = %p.account, error = %e, "text not sent");
        let condition = match e.kind {
            ProviderErrorKind::Rejected => ErrorCondition::NotAcceptable,
            ProviderErrorKind::Unauthorized => ErrorCondition::InternalServerError,
            ProviderErrorKind::RateLimited
            | ProviderErrorKind::CarrierError
            | ProviderErrorKind::Network => ErrorCondition::RemoteServerTimeout,
        };
        let text = if p.parts > 1 && !ids.is_empty() {
            format!(
                "Only part of the text was sent: parts 1 to {} of {} went out, part {} did not: {e}.",
                ids.len(),
                p.parts,
                ids.len() + 1
            )
        } else {
            format!("Not sent: {e}.")
        };
        vec![Action::Xmpp(OutgoingStanza::Error {
            from: p.contact_jid,
            to: p.user_full_jid,
            id: p.stanza_id,
            condition,
            text,
        })]
    }

    fn on_status(&self, account: &str, report: StatusReport) -> Vec<Action> {
        if report.status == DeliveryStatus::InProgress {
            return vec![];
        }
        let mut state = self.state();
        let key = (account.to_owned(), report.message_id);
        if !state.sent_ids.contains_key(&key) {
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
        Self::apply_status(&mut state, key, report.status)
    }

    fn apply_status(
        state: &mut GatewayState,
        key: (String, String),
        status: DeliveryStatus,
    ) -> Vec<Action> {
        let Some(ticket) = state.sent_ids.remove(&key) else {
            return vec![];
        };
        let Some(sent) = state.sent.get_mut(&ticket) else {
            return vec![];
        };
        let report = StatusReport {
            message_id: key.1,
            status,
        };
        match report.status {
            DeliveryStatus::Delivered => {
                sent.undelivered = sent.undelivered.saturating_sub(1);
                if sent.undelivered > 0 {
                    return vec![];
                }
                let Some(done) = state.sent.remove(&ticket) else {
                    return vec![];
                };
                match (done.pending.receipt, done.pending.stanza_id) {
                    (true, Some(id)) => vec![Action::Xmpp(OutgoingStanza::Receipt {
                        from: done.pending.contact_jid,
                        to: done.pending.user_full_jid,
                        id,
                    })],
                    _ => vec![],
                }
            }
            DeliveryStatus::Failed(reason) => {
                let Some(failed) = state.sent.remove(&ticket) else {
                    return vec![];
                };
                for id in &failed.ids {
                    state
                        .sent_ids
                        .remove(&(failed.pending.account.clone(), id.clone()));
                }
                let p = failed.pending;
                let text = if p.parts > 1 {
                    format!("Part of the text was not delivered: {reason}.")
                } else {
                    format!("Not delivered: {reason}.")
                };
                vec![Action::Xmpp(OutgoingStanza::Error {
                    from: p.contact_jid,
                    to: p.user_full_jid,
                    id: p.stanza_id,
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
        let cfg = Config::from_toml(
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
token = "t"
[providers.other]
type = "sandbox"
token = "t"
max_chars = 20
max_media = 2
[providers.strict]
type = "sandbox"
token = "t"
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
"#,
        )
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

    fn sent_ticket(actions: &[Action]) -> u64 {
        match actions {
            [Action::Pstn(PstnCommand::Send { ticket, .. })] => *ticket,
            other => panic!("expected one send, got {other:?}"),
        }
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
            g.on_pstn(PstnEvent::SendResult {
                ticket: t,
                ids: vec![],
                error: Some(refused),
            })
            .0,
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
            g.on_pstn(PstnEvent::SendResult {
                ticket: t,
                ids: vec![],
                error: Some(down),
            })
            .0,
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
        assert!(g
            .on_pstn(PstnEvent::SendResult {
                ticket: t,
                ids: vec!["SM1".into()],
                error: None,
            })
            .0
            .is_empty());
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
        let _ = g.on_pstn(PstnEvent::SendResult {
            ticket: t,
            ids: vec!["SM2".into()],
            error: None,
        });
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
            g.on_pstn(PstnEvent::SendResult {
                ticket: t,
                ids: vec!["Q0".into()],
                error: Some(e),
            })
            .0,
            ErrorCondition::RemoteServerTimeout,
        );
        assert!(
            text.contains("parts 1 to 1 of") && text.contains("part 2 did not"),
            "{text}"
        );
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
        let (actions, _) = g.on_pstn(PstnEvent::SendResult {
            ticket: t,
            ids: vec!["SM9".into()],
            error: None,
        });
        assert!(
            matches!(&actions[..], [Action::Xmpp(OutgoingStanza::Receipt { id, .. })] if id == "m1"),
            "{actions:?}"
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
            media: vec![Media {
                url: "https://m.example/1.jpg".into(),
                content_type: Some("image/jpeg".into()),
            }],
        };
        let a = g.on_inbound("main", &sms).unwrap();
        assert_eq!(
            a,
            vec![
                Action::Xmpp(OutgoingStanza::Chat {
                    from: "+15557654321@sms.example.com".into(),
                    to: "alice@example.com".into(),
                    body: "hey".into(),
                    media_url: None,
                }),
                Action::Xmpp(OutgoingStanza::Chat {
                    from: "+15557654321@sms.example.com".into(),
                    to: "alice@example.com".into(),
                    body: "https://m.example/1.jpg".into(),
                    media_url: Some("https://m.example/1.jpg".into()),
                }),
            ]
        );
        // Alice's number on the wrong account is nobody's.
        assert_eq!(
            g.on_inbound("other", &sms),
            Err(InboundRejected::UnknownNumber("+15550001111".into()))
        );
    }
}
