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

use crate::config::{normalize_bare_jid, Config};
use crate::message::{
    ChatMessage, DeliveryStatus, ErrorCondition, InboundRejected, InboundSms, OutboundSms,
    OutgoingStanza, PstnCommand, PstnEvent, StatusReport, XmppEvent,
};
use crate::phone::PhoneNumber;
use crate::provider::{ProviderError, ProviderErrorKind};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// How many sent messages are remembered for their delivery reports.
const SENT_MEMORY: usize = 100_000;

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

/// Who is who: built once from a validated config.
#[derive(Debug, Clone)]
pub struct Routing {
    domain: String,
    default_prefix: Option<String>,
    by_jid: HashMap<String, User>,
    by_number: HashMap<(String, PhoneNumber), String>,
}

impl Routing {
    /// Builds the routing tables. `config` must have passed
    /// [`Config::validate`]; users that do not parse are skipped.
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
            default_prefix: config.phone.default_prefix.clone(),
            by_jid,
            by_number,
        }
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

/// What the Gateway remembers about a text between `send` and its reports.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    user_full_jid: String,
    contact_jid: String,
    stanza_id: Option<String>,
    receipt: bool,
    account: String,
}

/// The Gateway's memory. The component keeps it across Gateway restarts.
#[derive(Debug, Default)]
pub struct GatewayState {
    next_ticket: u64,
    sending: HashMap<u64, Pending>,
    sent: HashMap<(String, String), Pending>,
    sent_order: VecDeque<(String, String)>,
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
        let to = match PhoneNumber::parse(node, self.routing.default_prefix.as_deref()) {
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
        // A client that uploads a file puts its URL in the body too: send it once.
        let body = if chat.media.iter().any(|m| m == chat.body.trim()) {
            String::new()
        } else {
            chat.body.clone()
        };
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
            },
        );
        vec![Action::Pstn(PstnCommand::Send {
            account: user.account.clone(),
            sms: OutboundSms {
                from: user.number.clone(),
                to,
                body,
                media: chat.media.clone(),
            },
            ticket,
        })]
    }

    /// Handles an event from the PSTN process. For an inbound text, the
    /// returned [`Ack`] must be sent only after the actions are handed on, so
    /// the webhook is answered 2xx only then (invariant 2).
    pub fn on_pstn(&self, event: PstnEvent) -> (Vec<Action>, Option<Ack>) {
        match event {
            PstnEvent::SendResult { ticket, result } => (self.on_send_result(ticket, result), None),
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

    fn on_send_result(&self, ticket: u64, result: Result<String, ProviderError>) -> Vec<Action> {
        let mut state = self.state();
        let Some(p) = state.sending.remove(&ticket) else {
            tracing::warn!(ticket, "send result for an unknown ticket");
            return vec![];
        };
        match result {
            Ok(message_id) => {
                tracing::debug!(%message_id, account = %p.account, "text accepted by the carrier");
                let key = (p.account.clone(), message_id);
                if state.sent.insert(key.clone(), p).is_none() {
                    state.sent_order.push_back(key);
                }
                while state.sent_order.len() > SENT_MEMORY {
                    if let Some(old) = state.sent_order.pop_front() {
                        state.sent.remove(&old);
                    }
                }
                vec![]
            }
            Err(e) => {
                tracing::warn!(account = %p.account, error = %e, "text not sent");
                let condition = match e.kind {
                    ProviderErrorKind::Rejected => ErrorCondition::NotAcceptable,
                    ProviderErrorKind::Unauthorized => ErrorCondition::InternalServerError,
                    ProviderErrorKind::RateLimited
                    | ProviderErrorKind::CarrierError
                    | ProviderErrorKind::Network => ErrorCondition::RemoteServerTimeout,
                };
                vec![Action::Xmpp(OutgoingStanza::Error {
                    from: p.contact_jid,
                    to: p.user_full_jid,
                    id: p.stanza_id,
                    condition,
                    text: format!("Not sent: {e}."),
                })]
            }
        }
    }

    fn on_status(&self, account: &str, report: StatusReport) -> Vec<Action> {
        if report.status == DeliveryStatus::InProgress {
            return vec![];
        }
        let mut state = self.state();
        let key = (account.to_owned(), report.message_id);
        let Some(p) = state.sent.remove(&key) else {
            tracing::debug!(message_id = %key.1, "delivery report for a message we do not remember");
            return vec![];
        };
        match report.status {
            DeliveryStatus::Delivered => match (p.receipt, p.stanza_id) {
                (true, Some(id)) => vec![Action::Xmpp(OutgoingStanza::Receipt {
                    from: p.contact_jid,
                    to: p.user_full_jid,
                    id,
                })],
                _ => vec![],
            },
            DeliveryStatus::Failed(reason) => vec![Action::Xmpp(OutgoingStanza::Error {
                from: p.contact_jid,
                to: p.user_full_jid,
                id: p.stanza_id,
                condition: ErrorCondition::RecipientUnavailable,
                text: format!("Not delivered: {reason}."),
            })],
            DeliveryStatus::InProgress => unreachable!("returned above"),
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
[[users]]
jid = "alice@example.com"
number = "+15550001111"
provider = "main"
[[users]]
jid = "bob@example.com"
number = "+15550002222"
provider = "other"
"#,
        )
        .unwrap();
        Gateway::new(Arc::new(Routing::from_config(&cfg)), Arc::default())
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
            [Action::Pstn(PstnCommand::Send { account, sms, .. })] => {
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
            [Action::Pstn(PstnCommand::Send { account, sms, .. })] => {
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
                result: Err(refused),
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
                result: Err(down),
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
                result: Ok("SM1".into())
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
            result: Ok("SM2".into()),
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
