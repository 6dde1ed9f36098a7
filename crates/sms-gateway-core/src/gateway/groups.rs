//! Group texts as group chats: each group a user is in is a room (XEP-0045)
//! hosted by the gateway, named by its participants ([`crate::group`]).
//!
//! Per (user, room) the Gateway keeps, in the store ([`ENTRY_ROOM`]), the
//! participants, their nicks, the subject and the last [`HISTORY`] lines,
//! so a user who joins an hour after a text arrived still reads it: an
//! inbound group text is written into the room's history in the same
//! transaction that delivers it (as `groupchat` to the user's sessions in
//! the room, or as an invitation when none is there).

use super::{Action, Gateway, User};
use crate::message::{InboundSms, OutgoingStanza, RoomLine, Speaker};
use crate::phone::PhoneNumber;
use crate::store::{StoreError, Transaction, ENTRY_ROOM};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The most rooms kept per user: past it, a new room is still served but
/// not remembered (its history lives only in the user's client).
pub(crate) const MAX_ROOMS: usize = 1000;
/// The most lines of history kept per room.
pub(crate) const HISTORY: usize = 100;

/// What is kept of one room of one user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Room {
    /// The phone participants, sorted.
    participants: Vec<PhoneNumber>,
    /// The local part the user's client uses, when not the canonical one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    local: Option<String>,
    /// Each participant's nick in the room, in the order of `participants`.
    #[serde(default)]
    nicks: Vec<String>,
    /// The MMS subject last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    /// The last lines, oldest first.
    #[serde(default)]
    history: VecDeque<RoomLine>,
}

impl Room {
    fn nick_of(&self, number: &PhoneNumber) -> String {
        self.participants
            .iter()
            .position(|n| n == number)
            .and_then(|i| self.nicks.get(i))
            .cloned()
            .unwrap_or_else(|| number.to_string())
    }

    /// Adds `lines` to the history unless the first is there already (a
    /// stored text delivered again after a restart).
    fn remember(&mut self, lines: &[RoomLine]) {
        let Some(first) = lines.first() else { return };
        if self.history.iter().any(|l| l.id == first.id) {
            return;
        }
        self.history.extend(lines.iter().cloned());
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
    }
}

fn key(user: &str, local: &str) -> String {
    format!("{user}|{local}")
}

impl Gateway {
    /// Reads the stored rooms (at start).
    pub fn load_rooms(&self) -> Result<(), StoreError> {
        let entries = self.store.entries(ENTRY_ROOM)?;
        let mut state = self.state();
        for (k, v) in entries {
            let Ok(room) = serde_json::from_str::<Room>(&v) else {
                tracing::error!(key = %k, "skipping an unreadable room in the store");
                continue;
            };
            if let Some((user, _)) = k.split_once('|') {
                *state.rooms_per_user.entry(user.to_owned()).or_default() += 1;
            }
            state.rooms.insert(k, room);
        }
        Ok(())
    }

    /// The room's JID for the user: the form their client uses.
    fn room_jid(&self, room: &Room) -> String {
        match &room.local {
            Some(local) => format!("{local}@{}", self.routing.domain),
            None => format!(
                "{}@{}",
                crate::group::room_local(&room.participants),
                self.routing.domain
            ),
        }
    }

    /// The participants' nicks for `user`: each one's caller-ID name, or
    /// its number; a name two participants share gets the number too.
    fn nicks_for(&self, user: &User, participants: &[PhoneNumber]) -> Vec<String> {
        let names: Vec<Option<String>> = participants
            .iter()
            .map(|n| {
                if user.caller_id {
                    self.routing
                        .users
                        .names()
                        .name_now(n, &user.number)
                        .flatten()
                } else {
                    None
                }
            })
            .collect();
        participants
            .iter()
            .zip(&names)
            .map(|(n, name)| match name {
                Some(name) if names.iter().filter(|o| o.as_ref() == Some(name)).count() == 1 => {
                    name.clone()
                }
                Some(name) => format!("{name} ({n})"),
                None => n.to_string(),
            })
            .collect()
    }

    /// Changes `user`'s room of `participants` with `change` and stores it;
    /// the room as it is now.
    fn change_room(
        &self,
        tx: &mut dyn Transaction,
        user: &User,
        participants: &[PhoneNumber],
        change: impl FnOnce(&mut Room),
    ) -> Room {
        let user_key = user.jid.as_str();
        let k = key(user_key, &crate::group::room_local(participants));
        let mut state = self.state();
        let mut room = state.rooms.get(&k).cloned().unwrap_or_else(|| Room {
            participants: participants.to_vec(),
            ..Room::default()
        });
        if room.nicks.len() != room.participants.len() {
            drop(state);
            room.nicks = self.nicks_for(user, participants);
            state = self.state();
        }
        change(&mut room);
        let known = state.rooms.contains_key(&k);
        let count = state.rooms_per_user.get(user_key).copied().unwrap_or(0);
        if !known && count >= MAX_ROOMS {
            tracing::warn!(user = %user_key, max = MAX_ROOMS, "a user has too many group rooms; a new one is not remembered");
            return room;
        }
        let json = serde_json::to_string(&room).expect("a room serialises");
        match tx.put_entry(ENTRY_ROOM, &k, Some(&json)) {
            Ok(()) => {
                if !known {
                    *state.rooms_per_user.entry(user_key.to_owned()).or_default() += 1;
                }
                state.rooms.insert(k, room.clone());
            }
            Err(e) => tracing::error!(error = %e, "cannot store a group room"),
        }
        room
    }

    /// A session joins a room: the occupants, the history (at most
    /// `max_history` lines) and the subject. The XMPP process has checked
    /// that the sender is a user and the room names a group.
    pub(crate) fn on_join(
        &self,
        tx: &mut dyn Transaction,
        from: &str,
        room_jid: &str,
        nick: &str,
        max_history: Option<usize>,
    ) -> Vec<Action> {
        let Some(user) = self.routing.user(from) else {
            return vec![];
        };
        let local = room_jid.split_once('@').map_or(room_jid, |(l, _)| l);
        let Ok(participants) = crate::group::participants(local, &self.routing.phone, &user.number)
        else {
            return vec![];
        };
        let canonical = crate::group::room_local(&participants);
        // Names learned since are shown from this join on.
        let nicks = self.nicks_for(&user, &participants);
        let room = self.change_room(tx, &user, &participants, |room| {
            room.local = (local != canonical).then(|| local.to_owned());
            room.nicks = nicks;
        });
        let skip = room
            .history
            .len()
            .saturating_sub(max_history.unwrap_or(HISTORY));
        vec![Action::Xmpp(OutgoingStanza::RoomJoined {
            room: room_jid.to_owned(),
            to: from.to_owned(),
            nick: nick.to_owned(),
            occupants: room.nicks.clone(),
            history: room.history.iter().skip(skip).cloned().collect(),
            subject: room.subject.clone().unwrap_or_default(),
        })]
    }

    /// The user's own line in a group (reflected when `reflect`, and kept
    /// in the history), and the room's JID.
    pub(super) fn group_said(
        &self,
        tx: &mut dyn Transaction,
        user: &User,
        participants: &[PhoneNumber],
        local: &str,
        line: RoomLine,
        reflect: bool,
    ) -> (String, Vec<Action>) {
        let canonical = crate::group::room_local(participants);
        let room = self.change_room(tx, user, participants, |room| {
            // Addressed by XEP-0033 (no room JID): the form stays.
            if !local.is_empty() {
                room.local = (local != canonical).then(|| local.to_owned());
            }
            room.remember(std::slice::from_ref(&line));
        });
        let jid = self.room_jid(&room);
        let actions = if reflect {
            vec![Action::Xmpp(OutgoingStanza::Group {
                room: jid.clone(),
                user: user.jid.to_string(),
                line,
                inbound_id: None,
            })]
        } else {
            vec![]
        };
        (jid, actions)
    }

    /// A notice from the room itself to the user.
    pub(super) fn group_notice(
        &self,
        tx: &mut dyn Transaction,
        user: &User,
        participants: &[PhoneNumber],
        text: String,
    ) -> Action {
        let line = RoomLine {
            id: format!("notice-{}", self.next_line_id()),
            from: Speaker::Room,
            number: None,
            body: text,
            media_url: None,
            at: crate::time::unix_now(),
        };
        let room = self.change_room(tx, user, participants, |room| {
            room.remember(std::slice::from_ref(&line));
        });
        Action::Xmpp(OutgoingStanza::Group {
            room: self.room_jid(&room),
            user: user.jid.to_string(),
            line,
            inbound_id: None,
        })
    }

    /// An id for a line the gateway makes, unique across runs.
    pub(super) fn next_line_id(&self) -> String {
        let mut state = self.state();
        state.lines += 1;
        format!("{}-{}", crate::message::run_tag(), state.lines)
    }

    /// `user`'s room of `participants` as kept, or a new one.
    fn peek_room(&self, user: &User, participants: &[PhoneNumber]) -> Room {
        let k = key(user.jid.as_str(), &crate::group::room_local(participants));
        if let Some(room) = self.state().rooms.get(&k) {
            return room.clone();
        }
        Room {
            participants: participants.to_vec(),
            nicks: self.nicks_for(user, participants),
            ..Room::default()
        }
    }

    /// The lines stored inbound group text `inbound_id` becomes in its
    /// room (the last carrying its id), kept in the room's history.
    pub(super) fn group_lines(
        &self,
        tx: &mut dyn Transaction,
        user: &User,
        participants: &[PhoneNumber],
        sms: &InboundSms,
        inbound_id: u64,
    ) -> Vec<Action> {
        let at = crate::time::unix_now();
        let mut lines = Vec::with_capacity(1 + sms.media.len());
        let mut room = self.peek_room(user, participants);
        let nick = room.nick_of(&sms.from);
        let line = |id: String, body: String, media_url: Option<String>| RoomLine {
            id,
            from: Speaker::Participant(nick.clone()),
            number: Some(sms.from.clone()),
            body,
            media_url,
            at,
        };
        if !sms.body.is_empty() {
            lines.push(line(sms.id.clone(), sms.body.clone(), None));
        }
        for (i, m) in sms.media.iter().enumerate() {
            let (body, url) = super::inbound::media_line(i, sms.media.len(), m);
            lines.push(line(format!("{}/{i}", sms.id), body, url));
        }
        if lines.is_empty() {
            // Nothing to show (an MMS of a subject alone): the subject is.
            lines.push(line(
                sms.id.clone(),
                sms.subject.clone().unwrap_or_default(),
                None,
            ));
        }
        let subject = sms.subject.clone().filter(|s| !s.trim().is_empty());
        if subject.is_some() || !room.history.iter().any(|l| l.id == lines[0].id) {
            room = self.change_room(tx, user, participants, |room| {
                if subject.is_some() {
                    room.subject = subject;
                }
                room.remember(&lines);
            });
        }
        let jid = self.room_jid(&room);
        let last = lines.len() - 1;
        lines
            .into_iter()
            .enumerate()
            .map(|(i, line)| {
                Action::Xmpp(OutgoingStanza::Group {
                    room: jid.clone(),
                    user: user.jid.to_string(),
                    line,
                    inbound_id: (i == last).then_some(inbound_id),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str) -> RoomLine {
        RoomLine {
            id: id.into(),
            from: Speaker::User,
            number: None,
            body: id.into(),
            media_url: None,
            at: 0,
        }
    }

    #[test]
    fn history_is_bounded_and_a_repeat_is_kept_once() {
        let mut room = Room::default();
        for i in 0..HISTORY + 10 {
            room.remember(&[line(&i.to_string())]);
        }
        assert_eq!(room.history.len(), HISTORY);
        assert_eq!(room.history[0].id, "10");
        room.remember(&[line("50")]);
        assert_eq!(room.history.len(), HISTORY);
        assert_eq!(room.history.back().unwrap().id, (HISTORY + 9).to_string());
    }
}
