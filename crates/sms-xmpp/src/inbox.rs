//! What the link has read for the Gateway and the Gateway has not taken
//! yet, queued per origin (#26).
//!
//! The link is always read: reading it is how the server's acknowledgements
//! (our pings routed back) arrive, and those are what frees room for the
//! Gateway's stanzas. So reading never waits for the Gateway. What the
//! Gateway is to handle waits here instead, in one bounded queue per
//! origin (each user by bare JID; everyone else by domain), and is handed
//! over in turns, one event per origin a turn: one sender's burst delays
//! only that sender. An origin whose queue is full is refused (an XMPP
//! `resource-constraint` error, written by the caller), counted.
//!
//! Reports that written stanzas were taken ([`XmppEvent::Delivered`]) are
//! never refused: they go first, and there are never more of them than
//! stanzas written and not acknowledged (bounded by the outbox).

use crate::*;
use sms_gateway_core::XmppEvent;
use std::collections::{HashMap, VecDeque};

/// The most events one user may have waiting for the Gateway.
pub(crate) const PER_USER: usize = 256;
/// The most events one domain of non-users may have waiting.
pub(crate) const PER_STRANGER_DOMAIN: usize = 16;
/// The most events waiting from all origins together.
pub(crate) const MAX_QUEUED: usize = 16_384;

/// Who an event comes from, for its share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    key: String,
    cap: usize,
}

impl Origin {
    /// A user of the gateway, by bare JID.
    pub(crate) fn user(bare: &str) -> Self {
        Origin {
            key: bare.to_owned(),
            cap: PER_USER,
        }
    }

    /// Anyone else, by domain: one server's accounts share one share.
    pub(crate) fn stranger(domain: &str) -> Self {
        Origin {
            key: format!("@{domain}"),
            cap: PER_STRANGER_DOMAIN,
        }
    }
}

/// The queues.
#[derive(Default)]
pub(crate) struct Inbox {
    /// Acknowledgements for the Gateway: first, never refused.
    control: VecDeque<XmppEvent>,
    queues: HashMap<String, VecDeque<XmppEvent>>,
    /// Origins with something waiting, in turn.
    turn: VecDeque<String>,
    queued: usize,
}

impl Inbox {
    /// Queues `ev` from `origin`; gives it back when the origin's share (or
    /// the whole inbox) is full.
    pub(crate) fn offer(&mut self, origin: &Origin, ev: XmppEvent) -> Result<(), Box<XmppEvent>> {
        if self.queued >= MAX_QUEUED {
            return Err(Box::new(ev));
        }
        let q = match self.queues.get_mut(&origin.key) {
            Some(q) => q,
            None => {
                self.turn.push_back(origin.key.clone());
                self.queues.entry(origin.key.clone()).or_default()
            }
        };
        if q.len() >= origin.cap {
            return Err(Box::new(ev));
        }
        q.push_back(ev);
        self.queued += 1;
        Ok(())
    }

    /// Queues an acknowledgement (never refused).
    pub(crate) fn control(&mut self, ev: XmppEvent) {
        self.control.push_back(ev);
    }

    /// Whether anything waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.control.is_empty() && self.queued == 0
    }

    /// How many events wait.
    pub(crate) fn len(&self) -> usize {
        self.control.len() + self.queued
    }

    /// The next event for the Gateway: acknowledgements first, then one
    /// from the origin whose turn it is.
    pub(crate) fn next(&mut self) -> Option<XmppEvent> {
        if let Some(ev) = self.control.pop_front() {
            return Some(ev);
        }
        let key = self.turn.pop_front()?;
        let q = self.queues.get_mut(&key)?;
        let ev = q.pop_front();
        if q.is_empty() {
            self.queues.remove(&key);
        } else {
            self.turn.push_back(key);
        }
        if ev.is_some() {
            self.queued -= 1;
        }
        ev
    }

    /// Everything still waiting, in turn order (at a stop).
    pub(crate) fn drain(&mut self) -> Vec<XmppEvent> {
        std::iter::from_fn(|| self.next()).collect()
    }
}

/// Chats from non-users answered per second: the core's token bucket at
/// the strangers' rates, read on tokio's clock (so paused time in tests
/// moves it).
pub(crate) struct StrangerBudget(sms_gateway_core::rate::Bucket);

impl Default for StrangerBudget {
    fn default() -> Self {
        StrangerBudget(sms_gateway_core::rate::Bucket::full(crate::STRANGER_BURST))
    }
}

impl StrangerBudget {
    /// Takes one answer from the budget; false when it is spent.
    pub(crate) fn take(&mut self, now: tokio::time::Instant) -> bool {
        self.0
            .take(
                1.0,
                crate::STRANGER_ANSWERS_PER_SEC,
                crate::STRANGER_BURST,
                now.into_std(),
            )
            .is_ok()
    }
}

impl crate::XmppProcess {
    /// Whom `ev` comes from, for its share.
    fn origin(&self, ev: &XmppEvent) -> Option<Origin> {
        use sms_gateway_core::UserChange;
        let from: String = match ev {
            XmppEvent::Delivered(_) => return None,
            XmppEvent::Chat(c) => c.from.clone(),
            XmppEvent::Subscription { from, .. } | XmppEvent::Join { from, .. } => from.clone(),
            XmppEvent::Users {
                change:
                    UserChange::Put { jid, .. }
                    | UserChange::Approve { jid }
                    | UserChange::Remove { jid }
                    | UserChange::CallerId { jid, .. },
                ..
            } => jid.to_string(),
            _ => String::new(),
        };
        let bare = from.split('/').next().unwrap_or_default();
        Some(match self.users.get_text(bare) {
            Some(user) => Origin::user(user.jid.as_str()),
            None => Origin::stranger(&bare.rsplit('@').next().unwrap_or_default().to_lowercase()),
        })
    }

    /// Queues `ev` for the Gateway in its origin's share, or refuses what
    /// it came from when that share is full (never waits for the Gateway).
    pub(crate) async fn hand_on(
        &self,
        link: &mut Link,
        outbox: &mut Outbox,
        ev: XmppEvent,
    ) -> Result<(), Error> {
        // Nothing waits and the Gateway has room: the event goes straight
        // on, as the session loop would hand it on at once anyway, without
        // a queue made and dropped for its origin (#30). Order holds: only
        // an empty inbox is passed by.
        if outbox.inbox.is_empty() {
            if let Some(permit) = outbox
                .to_gateway
                .as_ref()
                .and_then(|tx| tx.try_reserve().ok())
            {
                permit.send(ev);
                return Ok(());
            }
        }
        let Some(origin) = self.origin(&ev) else {
            outbox.inbox.control(ev);
            self.queued(outbox);
            return Ok(());
        };
        match outbox.inbox.offer(&origin, ev) {
            Ok(()) => {
                self.queued(outbox);
                Ok(())
            }
            Err(ev) => {
                self.metrics.refused("queue_full");
                for s in self.refusal(*ev) {
                    self.send(link, s).await?;
                }
                Ok(())
            }
        }
    }

    /// Something was queued: the wait for the Gateway starts now if
    /// nothing waited before.
    fn queued(&self, outbox: &mut Outbox) {
        if outbox.inbox_since.is_none() {
            outbox.inbox_since = Some(tokio::time::Instant::now());
        }
    }

    /// The Gateway took an event.
    pub(crate) fn progressed(&self, outbox: &mut Outbox) {
        outbox.inbox_since = (!outbox.inbox.is_empty()).then(tokio::time::Instant::now);
        if outbox.stalled {
            outbox.stalled = false;
            self.metrics.stall("gateway_input", false);
            tracing::info!("the Gateway takes from the XMPP link again");
        }
    }

    /// What tells the sender of a refused event that it was not taken.
    fn refusal(&self, ev: XmppEvent) -> Vec<Stanza> {
        use tokio_xmpp::parsers::presence::Presence;
        const BUSY: &str = "The gateway is busy with your earlier requests; this one was not taken. Try again in a moment.";
        match ev {
            XmppEvent::Chat(c) => {
                let out = OutgoingStanza::Error {
                    from: c.to,
                    to: c.from,
                    id: c.id,
                    condition: sms_gateway_core::ErrorCondition::ResourceConstraint,
                    text: BUSY.into(),
                };
                outgoing_to_stanza(&out, String::new).into_iter().collect()
            }
            XmppEvent::Join {
                from, room, nick, ..
            } => {
                self.left_room(&from, &room);
                let (Some(to), Some(room)) = (jid(&from), jid(&format!("{room}/{nick}"))) else {
                    return vec![];
                };
                let mut e = Presence::new(PresenceType::Error)
                    .with_from(room)
                    .with_to(to);
                e.payloads.push(
                    translate::stanza_error(
                        ErrorType::Wait,
                        DefinedCondition::ResourceConstraint,
                        BUSY.to_owned(),
                    )
                    .into(),
                );
                vec![e.into()]
            }
            XmppEvent::Users { ticket, .. } => self.done(ticket, Err(BUSY.into())),
            // A subscription only updates what is announced after a restart.
            _ => vec![],
        }
    }

    /// A chat from someone who is not a user: answered here, without the
    /// Gateway or the store, within a budget shared by all non-users;
    /// past it, with a bare `resource-constraint`, counted.
    /// Takes one answer from the budget all non-users share; false past it.
    pub(crate) fn stranger_within_budget(&self) -> bool {
        self.strangers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(tokio::time::Instant::now())
    }

    /// A non-user's command chat to the gateway's address (#31): answered
    /// within the strangers' budget, past it refused as their chats are.
    pub(crate) async fn answer_chat_command(
        &self,
        link: &mut Link,
        outbox: &mut Outbox,
        c: &sms_gateway_core::ChatMessage,
    ) -> Result<(), Error> {
        let Ok(from) = tokio_xmpp::jid::Jid::new(&c.from) else {
            return Ok(());
        };
        let from = from.to_bare();
        let known = self.users.get_any(&from).is_some() || self.admins.contains(&from);
        if !known && !self.stranger_within_budget() {
            self.metrics.refused("stranger_budget");
            let out = OutgoingStanza::Error {
                from: c.to.clone(),
                to: c.from.clone(),
                id: c.id.clone(),
                condition: sms_gateway_core::ErrorCondition::ResourceConstraint,
                text: String::new(),
            };
            return match outgoing_to_stanza(&out, String::new) {
                Ok(s) => self.send(link, s).await,
                Err(_) => Ok(()),
            };
        }
        let answer = self.chat_command(&from, c);
        self.carry_out(link, answer, outbox).await
    }

    pub(crate) async fn answer_stranger(
        &self,
        link: &mut Link,
        c: &sms_gateway_core::ChatMessage,
    ) -> Result<(), Error> {
        use sms_gateway_core::ErrorCondition;
        let (condition, text) = if self.stranger_within_budget() {
            self.metrics.refused("not_a_user");
            (
                ErrorCondition::RegistrationRequired,
                "You are not a user of this SMS gateway.".to_owned(),
            )
        } else {
            self.metrics.refused("stranger_budget");
            (ErrorCondition::ResourceConstraint, String::new())
        };
        let out = OutgoingStanza::Error {
            from: c.to.clone(),
            to: c.from.clone(),
            id: c.id.clone(),
            condition,
            text,
        };
        match outgoing_to_stanza(&out, String::new) {
            Ok(s) => self.send(link, s).await,
            Err(_) => Ok(()),
        }
    }

    /// At a stop: what still waits is handed to the Gateway if it takes it
    /// at once; chats it cannot take are counted as dropped, so their
    /// senders are told at the next start.
    pub(crate) async fn hand_over_at_stop(
        &self,
        outbox: &mut Outbox,
        to_gateway: &mpsc::Sender<XmppEvent>,
    ) {
        for ev in outbox.inbox.drain() {
            let chat = matches!(ev, XmppEvent::Chat(_));
            if to_gateway.try_send(ev).is_err() && chat {
                self.dropped_at_close.fetch_add(1, Ordering::Relaxed);
            }
        }
        outbox.inbox_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered(n: u64) -> XmppEvent {
        XmppEvent::Delivered(n)
    }

    #[test]
    fn origins_take_turns_and_acknowledgements_go_first() {
        let mut inbox = Inbox::default();
        let noisy = Origin::user("noisy@example.com");
        let quiet = Origin::user("quiet@example.com");
        for n in 0..100 {
            inbox.offer(&noisy, delivered(n)).unwrap();
        }
        inbox.offer(&quiet, delivered(1000)).unwrap();
        inbox.control(delivered(7));
        assert_eq!(inbox.next(), Some(delivered(7)));
        assert_eq!(inbox.next(), Some(delivered(0)));
        // The quiet user's one event comes second, not 101st.
        assert_eq!(inbox.next(), Some(delivered(1000)));
        assert_eq!(inbox.next(), Some(delivered(1)));
        assert_eq!(inbox.len(), 98);
        assert_eq!(inbox.drain().len(), 98);
        assert!(inbox.is_empty());
    }

    #[test]
    fn a_full_share_refuses_only_its_origin() {
        let mut inbox = Inbox::default();
        let stranger = Origin::stranger("evil.example");
        for n in 0..PER_STRANGER_DOMAIN as u64 {
            inbox.offer(&stranger, delivered(n)).unwrap();
        }
        assert!(inbox.offer(&stranger, delivered(99)).is_err());
        inbox
            .offer(&Origin::user("alice@example.com"), delivered(1))
            .unwrap();
    }

    #[test]
    fn the_whole_inbox_is_bounded() {
        let mut inbox = Inbox::default();
        let mut refused = 0;
        for n in 0..(MAX_QUEUED as u64 + 100) {
            let who = Origin::user(&format!("u{}@example.com", n % 1000));
            if inbox.offer(&who, delivered(n)).is_err() {
                refused += 1;
            }
        }
        assert_eq!(inbox.len(), MAX_QUEUED);
        assert_eq!(refused, 100);
    }
}
