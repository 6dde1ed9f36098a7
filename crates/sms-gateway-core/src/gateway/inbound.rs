//! Texts from the phone network become chats: stored before the webhook is
//! answered, their media fetched, then delivered.

use super::{Action, Gateway};
use crate::message::{Fetched, InboundRejected, InboundSms, Media, OutgoingStanza, PstnCommand};
use crate::store::{StoreExt, Transaction};
use crate::time::unix_now;

impl Gateway {
    /// Takes an inbound text: refused when nobody has its number; stored
    /// (the webhook is answered 2xx only after this); a repeat of one already
    /// taken (a carrier's retry) becomes nothing. The chats it becomes.
    pub fn on_inbound(
        &self,
        tx: &mut dyn Transaction,
        account: &str,
        sms: &InboundSms,
    ) -> Result<Vec<Action>, InboundRejected> {
        // Check the route before storing: a text nobody can get is refused.
        let count = |outcome| {
            self.routing
                .metrics
                .count(crate::metrics::Counted::TextsReceived, account, outcome)
        };
        let Some(user) = self.routing.users.by_number(account, &sms.to) else {
            count("refused");
            return Err(InboundRejected::UnknownNumber(sms.to.to_string()));
        };
        match tx.insert_inbound(account, sms, unix_now()) {
            Ok(Some(id)) => {
                count("new");
                if sms.group(&user.number).is_some() {
                    self.routing.metrics.count(
                        crate::metrics::Counted::GroupTexts,
                        account,
                        "received",
                    );
                }
                // A group text's sender is a participant of a room, not a
                // contact of the user's roster.
                let mut actions = if sms.group(&user.number).is_some() {
                    vec![]
                } else {
                    self.note_contact(tx, &user, &sms.from, None).1
                };
                match self.fetch_command(account, id, sms) {
                    // The webhook is answered once the text is stored; its
                    // media are fetched after, and the chats follow them.
                    Some(fetch) => actions.push(fetch),
                    None => actions.extend(self.inbound_chats(tx, account, sms, id)?),
                }
                // STOP or START: the carrier acts on it; the user is told
                // after the text itself (#31).
                if sms.group(&user.number).is_none() {
                    if let Some(word) = crate::failure::opt_keyword(&sms.body) {
                        actions.extend(self.on_opt_word(tx, &user, &sms.from, word, &sms.body));
                    }
                }
                Ok(actions)
            }
            Ok(None) => {
                count("repeat");
                tracing::info!(%account, id = %sms.id, "a repeated webhook: already taken");
                Ok(vec![])
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot store an inbound text");
                Err(InboundRejected::Unavailable)
            }
        }
    }

    /// `number` texted an opt-out (or opt-in) word to `user`: remembered,
    /// and the user told what it means, from the contact's address.
    fn on_opt_word(
        &self,
        tx: &mut dyn Transaction,
        user: &super::User,
        number: &crate::phone::PhoneNumber,
        word: crate::failure::OptKeyword,
        said: &str,
    ) -> Vec<Action> {
        use crate::failure::OptKeyword;
        let out = word == OptKeyword::Out;
        if !self.set_opted_out(tx, user.jid.as_str(), number, out) {
            return vec![];
        }
        let said = said.trim();
        let body = if out {
            format!(
                "{number} has opted out of texts from your number (they texted {said}): their carrier no longer delivers them, so the gateway will not send your chats to them. They can opt back in by texting START to your number."
            )
        } else {
            format!("{number} has opted back in (they texted {said}): your texts reach them again.")
        };
        vec![Action::Xmpp(OutgoingStanza::Chat {
            from: self.routing.contact_jid(number),
            to: user.jid.to_string(),
            body,
            media_url: None,
            nick: None,
            inbound_id: None,
            stable_id: None,
        })]
    }

    /// The command that fetches stored text `id`'s media, if it has media
    /// not yet fetched (and media are fetched at all).
    pub(super) fn fetch_command(&self, account: &str, id: u64, sms: &InboundSms) -> Option<Action> {
        if !self.routing.fetch_media || sms.media.iter().all(|m| m.fetched.is_some()) {
            return None;
        }
        let user = self.routing.users.by_number(account, &sms.to)?;
        Some(Action::Pstn(PstnCommand::FetchMedia {
            account: account.to_owned(),
            id,
            user: user.jid.to_string(),
            sms: sms.clone(),
            retry_until: unix_now() + self.retry_deadline.as_secs(),
        }))
    }

    /// Stored text `id`'s media have been fetched: kept so (a restart does
    /// not fetch them again), and delivered.
    pub(super) fn on_media_fetched(
        &self,
        tx: &mut dyn Transaction,
        account: &str,
        id: u64,
        sms: &InboundSms,
    ) -> Vec<Action> {
        if let Err(e) = tx.update_inbound(id, sms) {
            // Delivered all the same; after a restart, fetched again.
            tracing::error!(error = %e, id, "cannot record fetched media in the store");
        }
        match self.inbound_chats(tx, account, sms, id) {
            Ok(actions) => actions,
            Err(e) => {
                tracing::warn!(%account, error = %e, "an inbound text has nobody to go to now");
                if let Err(e) = tx.inbound_delivered(id) {
                    tracing::error!(error = %e, id, "cannot drop an undeliverable inbound text");
                }
                vec![]
            }
        }
    }

    /// The chats stored inbound text `inbound_id` becomes (the last one
    /// carrying its id), or why it cannot be delivered. A group text
    /// becomes lines of its room, kept in the room's history.
    pub(super) fn inbound_chats(
        &self,
        tx: &mut dyn Transaction,
        account: &str,
        sms: &InboundSms,
        inbound_id: u64,
    ) -> Result<Vec<Action>, InboundRejected> {
        let user = self
            .routing
            .users
            .by_number(account, &sms.to)
            .ok_or_else(|| InboundRejected::UnknownNumber(sms.to.to_string()))?;
        if self.store.member().is_some() && !self.routing.metrics.link_is_up() {
            // One of several instances, without a link now (standing by,
            // or reconnecting): the text goes to one that has a link.
            match tx.release_inbound(inbound_id) {
                Ok(()) => {
                    tracing::debug!(
                        id = inbound_id,
                        "no XMPP link here: handed to an instance with one"
                    );
                    return Ok(vec![]);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot hand an inbound text to another instance: it waits for this one's link")
                }
            }
        }
        if self.store.member().is_none() {
            // The link is down (or texts held meanwhile are going out):
            // the text waits in the store rather than in the channel to the
            // XMPP process, which would fill and stop the Gateway taking
            // webhooks (#26). Released, in order, when the link is back.
            let mut state = self.state();
            if state.releasing || self.routing.metrics.link_lost() {
                state.held.insert(inbound_id);
                self.routing.metrics.queue("held_inbound", state.held.len());
                return Ok(vec![]);
            }
        }
        self.deliver_inbound(tx, &user, sms, inbound_id)
    }

    /// The chats of stored inbound text `inbound_id` for `user`, now.
    fn deliver_inbound(
        &self,
        tx: &mut dyn Transaction,
        user: &crate::directory::User,
        sms: &InboundSms,
        inbound_id: u64,
    ) -> Result<Vec<Action>, InboundRejected> {
        if let Some(participants) = sms.group(&user.number) {
            return Ok(self.group_lines(tx, user, &participants, sms, inbound_id));
        }
        let user_jid = user.jid.to_string();
        let (from, nick) = self.sender(user, sms);
        let mut actions = Vec::with_capacity(1 + sms.media.len());
        // Its words went ahead of its media (`on_media_slow`): the media alone.
        let went_ahead = {
            let mut state = self.state();
            let at = state.went_ahead.iter().position(|&i| i == inbound_id);
            at.and_then(|at| state.went_ahead.remove(at)).is_some()
        };
        if !sms.body.is_empty() && !went_ahead {
            actions.push(OutgoingStanza::Chat {
                from: from.clone(),
                to: user_jid.clone(),
                body: sms.body.clone(),
                media_url: None,
                nick: nick.clone(),
                inbound_id: None,
                stable_id: Some(sms.id.clone()),
            });
        }
        let count = sms.media.len();
        for (i, m) in sms.media.iter().enumerate() {
            let (body, media_url) = media_line(i, count, m);
            actions.push(OutgoingStanza::Chat {
                from: from.clone(),
                to: user_jid.clone(),
                body,
                media_url,
                nick: nick.clone(),
                inbound_id: None,
                // As a group text's media lines are (see `group_lines`).
                stable_id: Some(format!("{}/{i}", sms.id)),
            });
        }
        if let Some(OutgoingStanza::Chat {
            inbound_id: last, ..
        }) = actions.last_mut()
        {
            *last = Some(inbound_id);
        }
        Ok(actions.into_iter().map(Action::Xmpp).collect())
    }
}

/// How many held texts are read from the store and handed on at a time.
pub(crate) const RELEASE_BATCH: usize = 500;

impl Gateway {
    /// Starts releasing the texts held while the link was down: false if a
    /// release runs already, or there is nothing to release.
    pub(crate) fn begin_release(&self) -> bool {
        let mut state = self.state();
        if state.releasing || state.held.is_empty() || self.routing.metrics.link_lost() {
            return false;
        }
        state.releasing = true;
        true
    }

    /// The next held texts (at most [`RELEASE_BATCH`]), oldest first, as
    /// chats. Empty when none is left (the release is then over) or the
    /// link is lost again (they wait for its return).
    pub(crate) fn next_released(&self) -> Vec<Action> {
        let ids: std::collections::BTreeSet<u64> = {
            let mut state = self.state();
            if self.routing.metrics.link_lost() || state.held.is_empty() {
                state.releasing = false;
                return vec![];
            }
            let mut ids = std::collections::BTreeSet::new();
            while ids.len() < RELEASE_BATCH {
                match state.held.pop_first() {
                    Some(id) => ids.insert(id),
                    None => break,
                };
            }
            self.routing.metrics.queue("held_inbound", state.held.len());
            ids
        };
        // Only this batch's range of ids is read: a backlog of N costs N
        // rows read in all, not N for every batch.
        let (Some(&first), Some(&last)) = (ids.first(), ids.last()) else {
            return vec![];
        };
        let pending = match self.store.pending_inbound_between(first, last) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot read held inbound texts; they wait for a restart");
                return vec![];
            }
        };
        let mut actions = vec![];
        let released = self.store.write(|tx| {
            for p in pending.iter().filter(|p| ids.contains(&p.id)) {
                let Some(user) = self.routing.users.by_number(&p.account, &p.sms.to) else {
                    tx.inbound_delivered(p.id)?;
                    continue;
                };
                if let Ok(chats) = self.deliver_inbound(tx, &user, &p.sms, p.id) {
                    actions.extend(chats);
                }
            }
            Ok(())
        });
        if let Err(e) = released {
            tracing::error!(error = %e, "cannot release held inbound texts; they wait for a restart");
        }
        if actions.is_empty() {
            // Delivered meanwhile (or gone): go on with the next ones.
            return self.next_released();
        }
        tracing::info!(
            texts = ids.len(),
            "texts held while the XMPP link was down go out"
        );
        actions
    }

    /// Who a one-to-one text is from, as the user sees it: the contact's
    /// JID and, once caller ID knows it, name (never waiting for it: a name
    /// still being looked up comes with a later text).
    fn sender(&self, user: &crate::directory::User, sms: &InboundSms) -> (String, Option<String>) {
        let nick = if user.caller_id {
            self.routing
                .users
                .names()
                .name_now(&sms.from, &sms.to)
                .flatten()
        } else {
            None
        };
        // The contact's one address, whatever form the user wrote to (#28).
        (self.routing.contact_jid(&sms.from), nick)
    }

    /// Stored text `id`'s media are still being fetched after
    /// `media.wait_secs` (#28): its words go now, with a line saying the
    /// media follow; each arrives when fetched, or a line says it failed.
    /// A group text waits for its media (its lines are the room's history).
    pub(super) fn on_media_slow(&self, account: &str, id: u64, sms: &InboundSms) -> Vec<Action> {
        const REMEMBERED: usize = 10_000;
        let Some(user) = self.routing.users.by_number(account, &sms.to) else {
            return vec![];
        };
        if sms.group(&user.number).is_some() {
            return vec![];
        }
        let (from, nick) = self.sender(&user, sms);
        let pending = sms.media.iter().filter(|m| m.fetched.is_none()).count();
        let mut actions = vec![];
        if !sms.body.is_empty() {
            actions.push(OutgoingStanza::Chat {
                from: from.clone(),
                to: user.jid.to_string(),
                body: sms.body.clone(),
                media_url: None,
                nick: nick.clone(),
                inbound_id: None,
                stable_id: Some(sms.id.clone()),
            });
        }
        actions.push(OutgoingStanza::Chat {
            from,
            to: user.jid.to_string(),
            body: if pending == 1 {
                "[An attachment is on its way: it follows when the carrier lets the gateway fetch it.]".to_owned()
            } else {
                format!("[{pending} attachments are on their way: each follows when the carrier lets the gateway fetch it.]")
            },
            media_url: None,
            nick,
            inbound_id: None,
            stable_id: Some(format!("{}/coming", sms.id)),
        });
        let mut state = self.state();
        if state.went_ahead.len() >= REMEMBERED {
            state.went_ahead.pop_front();
        }
        state.went_ahead.push_back(id);
        actions.into_iter().map(Action::Xmpp).collect()
    }
}

/// What media item `i` of `count` shows the user: its URL (also as
/// out-of-band data), or why it could not be fetched.
pub(super) fn media_line(i: usize, count: usize, m: &Media) -> (String, Option<String>) {
    match &m.fetched {
        Some(Fetched::Served { url }) => (url.clone(), Some(url.clone())),
        Some(Fetched::Failed { reason }) => (crate::media::failure_line(i, count, m, reason), None),
        // `media.store = "link"`: the carrier's own URL.
        None => (m.url.clone(), Some(m.url.clone())),
    }
}
