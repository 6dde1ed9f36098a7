//! Chats from users become texts: routing, checks, limits, splitting, and
//! the carrier's answer to each send.

use super::{Action, Gateway};
use crate::message::{
    ChatMessage, ErrorCondition, OutboundSms, OutgoingStanza, PstnCommand, RoomLine, Speaker,
};
use crate::phone::PhoneNumber;
use crate::provider::{ProviderError, ProviderErrorKind};
use crate::store::{ChatRecord, ChatState, Transaction};
use crate::text;
use crate::time::unix_now;

impl Gateway {
    /// Handles a chat from a user.
    pub fn on_chat(&self, tx: &mut dyn Transaction, chat: ChatMessage) -> Vec<Action> {
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
            None if !chat.addresses.is_empty() => "",
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
        // A reply to an alphanumeric sender id (`google@…`, a one-time
        // code's sender): no carrier can text it (#28).
        if self.routing.phone.parse(node).is_err() {
            if let Some(name) = crate::phone::PhoneNumber::sender_name(node) {
                return error(
                    ErrorCondition::NotAcceptable,
                    format!(
                        "{} is not a phone number: if it is a sender name (as one-time codes come from), it can send texts but cannot receive them.",
                        name.as_str()
                    ),
                );
            }
        }
        let target = match self.target(&chat, node, &user) {
            Ok(t) => t,
            Err(text) => return error(ErrorCondition::JidMalformed, text),
        };
        // The carrier would refuse it (and bill the attempt at some): no
        // API call (#31).
        if let Target::One { to } = &target {
            if self.opted_out(user.jid.as_str(), to) {
                return error(
                    ErrorCondition::Forbidden,
                    format!(
                        "Not sent: {to} has opted out of texts from your number (they texted STOP), so the carrier would not deliver it. They can opt back in by texting START to your number."
                    ),
                );
            }
        }
        for url in &chat.media {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return error(
                    ErrorCondition::BadRequest,
                    format!("Only http(s) media can be sent by MMS, not {url:?}."),
                );
            }
            if self.routing.relay_private_urls && crate::media::is_private_url(url) {
                if let Err(why) = crate::media::relay_allowed(url, &self.routing.relay_hosts) {
                    return error(
                        ErrorCondition::NotAcceptable,
                        format!(
                            "The media link {} points at a private address the gateway does not relay from: {why}.",
                            text::excerpt(url, 80)
                        ),
                    );
                }
            } else if crate::media::is_private_url(url) {
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
        let limits = &self.routing.limits();
        // What the carriers bill (#27): SMS segments (one request may carry
        // several: 160 GSM-7 characters, 153 each when split; 70 UCS-2
        // units, 67 when split), or one MMS per part when media go along.
        let billed: usize = if chat.media.is_empty() {
            texts.iter().map(|t| text::segments(t).max(1)).sum()
        } else {
            texts.len()
        };
        if billed > limits.max_parts {
            return error(
                ErrorCondition::NotAcceptable,
                format!(
                    "The text is too long: it would be {billed} SMS (segments, as carriers bill them), and this gateway sends at most {} per message (limits.max_parts). Send it in shorter pieces.",
                    limits.max_parts
                ),
            );
        }
        // A group goes as one group text per part where the carrier has
        // them; else, if the operator allows, as one text per participant.
        let fan_out = match &target {
            Target::One { .. } => false,
            Target::Group { participants, .. } => {
                let max = policy.limits.max_group;
                if max == 0 && !self.routing.groups_fan_out {
                    return error(
                        ErrorCondition::NotAcceptable,
                        format!(
                            "Not sent: the carrier of this gateway's account {:?} has no group texts (only Telnyx accounts do), and the operator has not set groups.fan_out to send them as separate texts.",
                            user.account
                        ),
                    );
                }
                if max > 0 && participants.len() > max {
                    return error(
                        ErrorCondition::NotAcceptable,
                        format!(
                            "Not sent: a group text on this account takes at most {max} numbers besides yours; this group has {}.",
                            participants.len()
                        ),
                    );
                }
                max == 0
            }
        };
        // A group text is billed once per recipient, fanned out or not.
        let copies = match &target {
            Target::Group { participants, .. } => participants.len().max(1),
            Target::One { .. } => 1,
        };
        let cost = u32::try_from(billed * copies).unwrap_or(u32::MAX);
        let now = std::time::Instant::now();
        let allowed = {
            let mut state = self.state();
            let rates = state.rates.get_or_insert_with(|| {
                crate::rate::Buckets::new(limits.texts_per_minute, limits.texts_burst)
            });
            // A reload may have changed the rate; each bucket keeps its tokens.
            rates.set_rate(limits.texts_per_minute, limits.texts_burst);
            rates.take(user.jid.as_str(), cost, now)
        };
        if let (Ok(()), Some(per_day)) = (&allowed, limits.texts_per_day) {
            let today = {
                let mut state = self.state();
                let days = state
                    .day_rates
                    .get_or_insert_with(|| crate::rate::Buckets::daily(per_day));
                days.set_daily(per_day);
                days.take(user.jid.as_str(), cost, now)
            };
            if let Err(wait) = today {
                return error(
                    ErrorCondition::ResourceConstraint,
                    format!(
                        "Not sent: you are over this gateway's limit of {per_day} SMS a day (limits.texts_per_day). Try again in {} min.",
                        wait.as_secs().div_ceil(60).max(1)
                    ),
                );
            }
        }
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
        let (contact_jid, mut actions, parts) = match &target {
            Target::One { to } => {
                let (jid, actions) = self.note_contact(tx, &user, to, Some(node));
                let parts = parts_to(&user.number, &texts, &chat.media, to, &[]);
                (jid, actions, parts)
            }
            Target::Group {
                participants,
                local,
            } => {
                let line = RoomLine {
                    id: chat.id.clone().unwrap_or_else(|| self.next_line_id()),
                    from: Speaker::User,
                    number: None,
                    body: chat.body.clone(),
                    media_url: chat.media.first().cloned(),
                    at: unix_now(),
                };
                let (jid, mut actions) =
                    self.group_said(tx, &user, participants, local, line, chat.groupchat);
                let parts = if fan_out {
                    actions.push(self.group_notice(
                        tx,
                        &user,
                        participants,
                        format!(
                            "Sent as {} separate texts: this account's carrier has no group texts. Each number gets it alone, and replies come one to one.",
                            participants.len()
                        ),
                    ));
                    participants
                        .iter()
                        .flat_map(|to| parts_to(&user.number, &texts, &chat.media, to, &[]))
                        .collect()
                } else {
                    let (to, cc) = participants.split_first().expect("a group has two");
                    parts_to(&user.number, &texts, &chat.media, to, cc)
                };
                (jid, actions, parts)
            }
        };
        let group = parts.first().is_some_and(|p| !p.cc.is_empty());
        let chat = ChatRecord {
            created: unix_now(),
            account: user.account.clone(),
            user_full_jid: chat.from.clone(),
            contact_jid,
            stanza_id: chat.id.clone(),
            receipt: chat.receipt_requested,
            parts,
            state: ChatState::Sending,
            group,
        };
        // Stored before anything else happens: it survives a crash from here on.
        let ticket = match tx.insert_chat(&chat) {
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
        actions.push(self.send_command(ticket, &chat));
        let mut state = self.state();
        state.sending.insert(ticket, chat);
        self.routing
            .metrics
            .chats_sending
            .set(state.sending.len() as i64);
        actions
    }

    /// Whom a chat is for: one number, or a group (named by the room's
    /// JID, or by XEP-0033 addresses).
    fn target(&self, chat: &ChatMessage, node: &str, user: &super::User) -> Result<Target, String> {
        let local = if chat.addresses.is_empty() {
            node.to_owned()
        } else {
            // Extended addressing: every address at this gateway's domain
            // is a participant; the others (the user's own server) are not
            // ours to reach.
            let domain = format!("@{}", self.routing.domain);
            chat.addresses
                .iter()
                .filter_map(|a| a.split('/').next())
                .filter_map(|a| a.strip_suffix(&domain))
                .collect::<Vec<_>>()
                .join(",")
        };
        if crate::group::is_group(&local) || chat.groupchat || !chat.addresses.is_empty() {
            let participants =
                crate::group::participants(&local, &self.routing.phone, &user.number)?;
            return Ok(Target::Group {
                participants,
                local: if chat.addresses.is_empty() {
                    local
                } else {
                    String::new()
                },
            });
        }
        self.routing
            .phone
            .parse(node)
            .map(|to| Target::One { to })
            .map_err(|e| format!("{e}."))
    }

    pub(super) fn send_command(&self, ticket: u64, chat: &ChatRecord) -> Action {
        Action::Pstn(PstnCommand::Send {
            account: chat.account.clone(),
            parts: chat.parts.clone(),
            ticket,
            retry_until: chat.created + self.retry_deadline.as_secs(),
        })
    }

    pub(super) fn on_send_result(
        &self,
        tx: &mut dyn Transaction,
        ticket: u64,
        ids: Vec<String>,
        error: Option<ProviderError>,
    ) -> Vec<Action> {
        let mut state = self.state();
        let Some(mut chat) = state.sending.remove(&ticket) else {
            tracing::warn!(ticket, "send result for an unknown ticket");
            return vec![];
        };
        let metrics = &self.routing.metrics;
        metrics.chats_sending.set(state.sending.len() as i64);
        let outcome = match &error {
            None => "accepted",
            Some(e) if e.kind == ProviderErrorKind::Rejected => "refused",
            Some(_) => "failed",
        };
        metrics.count(crate::metrics::Counted::TextsSent, &chat.account, outcome);
        if chat.group && error.is_none() {
            metrics.count(crate::metrics::Counted::GroupTexts, &chat.account, "sent");
        }
        let Some(e) = error else {
            tracing::debug!(ids = ?ids, account = %chat.account, "text accepted by the carrier");
            chat.state = ChatState::Sent {
                ids: ids.clone(),
                undelivered: ids.len(),
            };
            // The texts are gone; what is left is what a report needs.
            chat.parts = Vec::new();
            if let Err(e) = tx.update_chat(ticket, &chat) {
                // Its reports will find nothing: no receipt, no error.
                tracing::error!(error = %e, "cannot store a sent chat");
            }
            let mut actions = vec![];
            let shared = self.store.member().is_some();
            for id in ids {
                let key = (chat.account.clone(), id);
                let mut early = state.early.remove(&key);
                if early.is_none() && shared {
                    // Or it reached another instance.
                    early = tx.take_early(&key.0, &key.1).unwrap_or_else(|e| {
                        tracing::error!(error = %e, "cannot look for an early delivery report");
                        None
                    });
                }
                if let Some(status) = early {
                    actions.extend(self.apply_status(tx, &key, status, None));
                }
            }
            return actions;
        };
        drop(state);
        if let Err(e) = tx.delete_chat(ticket) {
            tracing::error!(error = %e, "cannot forget a chat");
        }
        tracing::warn!(account = %chat.account, error = %e, "text not sent");
        self.routing
            .activity
            .carrier_error(unix_now(), &chat.account, &format!("not sent: {e}"));
        let failure = e.code.as_deref().and_then(crate::failure::kind_of);
        if failure == Some(crate::failure::FailureKind::OptedOut) && !chat.group {
            // The carrier says the contact opted out (a STOP we never saw,
            // or one sent to another number of a Telnyx profile): refused at
            // once from now on.
            if let (Some(part), Some(user)) =
                (chat.parts.first(), chat.user_full_jid.split('/').next())
            {
                self.set_opted_out(tx, user, &part.to, true);
            }
        }
        let condition = match e.kind {
            _ if failure == Some(crate::failure::FailureKind::OptedOut) => {
                ErrorCondition::Forbidden
            }
            ProviderErrorKind::Rejected => ErrorCondition::NotAcceptable,
            ProviderErrorKind::Unauthorized => ErrorCondition::InternalServerError,
            ProviderErrorKind::RateLimited
            | ProviderErrorKind::CarrierError
            | ProviderErrorKind::Network
            | ProviderErrorKind::Timeout => ErrorCondition::RemoteServerTimeout,
        };
        let parts = chat.parts.len();
        let why = crate::failure::readable(e.code.as_deref(), &e.to_string());
        let mut text = if parts > 1 && !ids.is_empty() {
            format!(
                "Only part of the text was sent: parts 1 to {} of {parts} went out, part {} did not: {why}",
                ids.len(),
                ids.len() + 1
            )
        } else {
            format!("Not sent: {why}")
        };
        if !text.ends_with('.') {
            text.push('.');
        }
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
}

/// The texts of a chat from `from` to `to` (and `cc`, a group's others),
/// one per part; the media go with the first.
fn parts_to(
    from: &PhoneNumber,
    texts: &[String],
    media: &[String],
    to: &PhoneNumber,
    cc: &[PhoneNumber],
) -> Vec<OutboundSms> {
    texts
        .iter()
        .enumerate()
        .map(|(i, body)| OutboundSms {
            from: from.clone(),
            to: to.clone(),
            body: body.clone(),
            media: if i == 0 { media.to_vec() } else { vec![] },
            cc: cc.to_vec(),
        })
        .collect()
}

/// Whom a chat is for.
enum Target {
    /// One number.
    One { to: PhoneNumber },
    /// A group: its participants (sorted), and the room's local part as
    /// the user wrote it (empty when addressed by XEP-0033).
    Group {
        participants: Vec<PhoneNumber>,
        local: String,
    },
}
