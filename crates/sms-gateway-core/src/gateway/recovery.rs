//! Starting and stopping: what the store holds is resumed, and users hear
//! of an unclean stop.

use super::{Action, Gateway, User};
use crate::message::OutgoingStanza;
use crate::store::{ChatState, StoreError, StoreExt};
use crate::time::{unix_now, utc};
use std::collections::HashMap;
use std::time::Duration;

/// The store's run marker: 1 while a gateway runs, 0 after a clean stop.
const RUNNING: &str = "running";
/// When users were last told of an unclean stop (Unix seconds).
const NOTIFIED: &str = "notified_unclean_stop";
/// The shortest time between two such notices.
pub const NOTICE_INTERVAL: Duration = Duration::from_secs(3600);

impl Gateway {
    /// After a restart: the actions that finish what the store holds. Chats
    /// not yet accepted by the carrier are sent (again: one whose request was
    /// in flight when the program died may go out twice); inbound texts not
    /// yet taken by the XMPP server are delivered, in order. Old entries are
    /// expired first.
    pub fn recover(&self, keep: crate::store::Retention) -> Result<Vec<Action>, StoreError> {
        let (before, seen_before) = keep.cutoffs(unix_now());
        let removed = self.store.write(|tx| tx.expire(before, seen_before))?;
        if removed > 0 {
            tracing::info!(removed, "expired old entries from the store");
        }
        let chats = self.store.chats()?;
        let pending = self.store.pending_inbound()?;
        let mut actions = self.resume_chats(chats);
        let resent = actions.len();
        actions.extend(self.resume_inbound(pending)?);
        if !actions.is_empty() {
            tracing::info!(
                chats = resent,
                inbound = actions.len() - resent,
                "resuming what was pending before the restart"
            );
        }
        Ok(actions)
    }

    /// Sends again the chats of `chats` not yet accepted by the carrier
    /// (sent chats stay in the store until their reports come).
    fn resume_chats(&self, chats: Vec<(u64, crate::store::ChatRecord)>) -> Vec<Action> {
        let mut actions = vec![];
        let mut state = self.state();
        for (ticket, chat) in chats {
            if chat.state == ChatState::Sending {
                actions.push(self.send_command(ticket, &chat));
                state.sending.insert(ticket, chat);
            }
        }
        actions
    }

    /// Delivers stored inbound texts (fetching their media first where
    /// that is still to do), in order.
    fn resume_inbound(
        &self,
        pending: Vec<crate::store::PendingInbound>,
    ) -> Result<Vec<Action>, StoreError> {
        let mut actions = vec![];
        for p in pending {
            if let Some(fetch) = self.fetch_command(&p.account, p.id, &p.sms) {
                actions.push(fetch);
                continue;
            }
            match self
                .store
                .write(|tx| Ok(self.inbound_chats(tx, &p.account, &p.sms, p.id)))?
            {
                Ok(chats) => actions.extend(chats),
                Err(e) => {
                    tracing::warn!(account = %p.account, error = %e, "a stored inbound text has nobody to go to now");
                    self.store.write(|tx| tx.inbound_delivered(p.id))?;
                }
            }
        }
        Ok(actions)
    }

    /// Where the store is shared by several instances (`[cluster]`), every
    /// third of a lease: renews this instance's lease and takes over what
    /// instances that are gone left undone. Their chats not yet accepted
    /// by the carrier are sent (one in flight when its instance died may
    /// go out twice, as after a `kill -9` of a single gateway); their
    /// inbound texts are delivered through this instance's link; and the
    /// users whose chats a dead instance had taken are told, as after an
    /// unclean stop, naming the last one it took.
    pub fn adopt(&self) -> Vec<Action> {
        let orphans = match self.store.adopt(self.routing.metrics.link_is_up()) {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "cannot renew this instance's lease in the store");
                return vec![];
            }
        };
        if orphans.is_empty() {
            return vec![];
        }
        let me = self.store.member().map(|m| m.instance.as_str());
        for dead in &orphans.dead {
            if Some(dead.as_str()) == me {
                tracing::warn!(instance = %dead, "this instance's last run ended without a clean stop (killed or crashed)");
            } else {
                tracing::warn!(instance = %dead, "an instance's lease lapsed: taking over its work");
            }
        }
        if !orphans.dead.is_empty() {
            // The dead instance's users come here now: those who
            // registered through it since this one started are read again.
            match (
                self.store.entries(crate::store::ENTRY_USER),
                self.store.entries(crate::store::ENTRY_SETTINGS),
            ) {
                (Ok(users), Ok(settings)) => self.routing.users.load(&users, &settings),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!(error = %e, "cannot read the registered users again")
                }
            }
        }
        let mut actions = self.resume_chats(orphans.chats);
        let resent = actions.len();
        match self.resume_inbound(orphans.inbound) {
            Ok(a) => actions.extend(a),
            // Taken, not delivered: they stay this instance's, and are
            // delivered at its next start, or by whoever takes its work.
            Err(e) => tracing::error!(error = %e, "cannot deliver the inbound texts taken over"),
        }
        let inbound = actions.len() - resent;
        let mut told = 0;
        for last in orphans.last_chats {
            told += 1;
            actions.push(Action::Xmpp(OutgoingStanza::Chat {
                from: self.routing.domain.clone(),
                to: last.user.clone(),
                body: format!(
                    "One of the SMS gateway's instances stopped unexpectedly. The last chat it received from you was to {} on {}: \"{}\". Anything you sent after that may not have reached the gateway: if it gets no answer, please send it again.",
                    last.contact_jid.split('@').next().unwrap_or(&last.contact_jid),
                    utc(last.created),
                    last.preview
                ),
                media_url: None,
                nick: None,
                inbound_id: None,
                stable_id: None,
            }));
        }
        tracing::info!(
            dead = ?orphans.dead,
            chats = resent,
            inbound,
            users_told = told,
            "took over the work of instances that are gone"
        );
        actions
    }

    /// At the start of a run: marks the store as in use and, if the last
    /// run never ended (the program was killed or crashed), tells each user
    /// what the gateway last received from them. XEP-0114 has no
    /// acknowledgements, so chats the server had handed over but the
    /// gateway had not yet stored are gone without a trace; the notice
    /// makes that loss visible, and names where it starts. Not repeated
    /// within [`NOTICE_INTERVAL`] (a crash loop must not flood anyone).
    pub fn start_run(&self) -> Vec<Action> {
        if self.store.member().is_some() {
            // Several instances share the store: an instance that died is
            // found by its lease, and only its users are told ([`Self::adopt`]).
            return vec![];
        }
        let unclean = match self.store.meta(RUNNING) {
            Ok(v) => v == Some(1),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the store's run marker");
                false
            }
        };
        if let Err(e) = self.store.write(|tx| tx.set_meta(RUNNING, 1)) {
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
        let _ = self.store.write(|tx| tx.set_meta(NOTIFIED, now));
        let last: HashMap<String, crate::store::LastChat> = match self.store.last_chats() {
            Ok(l) => l.into_iter().map(|l| (l.user.clone(), l)).collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the users' last chats");
                HashMap::new()
            }
        };
        let mut users: Vec<std::sync::Arc<User>> = self.routing.users.users();
        users.sort_by_key(|u| u.jid.to_string());
        users
            .into_iter()
            .map(|u| {
                let body = match last.get(u.jid.as_str()) {
                    Some(l) => format!(
                        "The SMS gateway restarted after an unexpected stop. The last chat it received from you was to {} on {}: \"{}\". Anything you sent after that did not reach it: please send it again.",
                        l.contact_jid.split('@').next().unwrap_or(&l.contact_jid),
                        utc(l.created),
                        l.preview
                    ),
                    None => "The SMS gateway restarted after an unexpected stop. It has no chat from you on record: anything you sent just before did not reach it; please send it again.".to_owned(),
                };
                Action::Xmpp(OutgoingStanza::Chat {
                    from: self.routing.domain.clone(),
                    to: u.jid.to_string(),
                    body,
                    media_url: None,
                    nick: None,
                    inbound_id: None,
                    stable_id: None,
                })
            })
            .collect()
    }

    /// At a clean stop: the next start has nothing to report.
    pub fn end_run(&self) {
        if self.store.member().is_some() {
            if let Err(e) = self.store.leave() {
                tracing::error!(error = %e, "cannot give this instance's lease up in the store");
            }
            return;
        }
        if let Err(e) = self.store.write(|tx| tx.set_meta(RUNNING, 0)) {
            tracing::error!(error = %e, "cannot mark a clean stop in the store");
        }
    }
}
