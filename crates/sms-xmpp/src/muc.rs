//! Group texts as group chats: the rooms (XEP-0045) the gateway hosts, one
//! per group of numbers (`+15551112222,+15553334444@sms.example.com`).
//!
//! The XMPP process keeps who is in which room (each user session and its
//! nick); the Gateway keeps each room's participants, subject and history.
//! A session joins with presence to `room/nick`; it then gets the phone
//! participants' presence, its own (status 110), the history and the
//! subject, in XEP-0045's order. A line for a user who has no session in
//! the room becomes an invitation instead (XEP-0249 and XEP-0045's
//! mediated one), and waits in the history.
//!
//! Joined sessions are kept in memory only: after a restart a client that
//! believes it is still in a room learns otherwise from its self-ping
//! (XEP-0410), which is answered `not-acceptable`, and joins again.

use super::*;
use sms_gateway_core::{RoomLine, Speaker};
use tokio_xmpp::jid::BareJid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::message::Lang;
use tokio_xmpp::parsers::ns;

/// XEP-0045.
pub const MUC_NS: &str = "http://jabber.org/protocol/muc";
/// XEP-0045's occupant payloads.
pub const MUC_USER_NS: &str = "http://jabber.org/protocol/muc#user";
/// XEP-0249 direct invitations.
pub const CONFERENCE_NS: &str = "jabber:x:conference";
/// XEP-0033 extended addressing.
pub const ADDRESS_NS: &str = "http://jabber.org/protocol/address";
/// XEP-0203 delayed delivery.
pub const DELAY_NS: &str = "urn:xmpp:delay";
/// XEP-0359 stanza ids.
pub const SID_NS: &str = "urn:xmpp:sid:0";

/// What a room says of itself in `disco#info`.
pub const ROOM_FEATURES: &[&str] = &[
    ns::DISCO_INFO,
    MUC_NS,
    "muc_persistent",
    "muc_membersonly",
    "muc_nonanonymous",
    "muc_hidden",
    "muc_unsecured",
    SID_NS,
    ADDRESS_NS,
    ns::PING,
];

/// The most sessions in rooms, over all users and rooms: past it, a join
/// is refused (`resource-constraint`).
const MAX_OCCUPANTS: usize = 10_000;
/// The most sessions one user may have in group rooms, so one user cannot
/// take the whole gateway's [`MAX_OCCUPANTS`] from everyone else (#26).
pub(crate) const MAX_OCCUPANTS_PER_USER: usize = 200;

/// Who is in which room: (user's bare JID, room's bare JID) → each
/// session's full JID and nick.
#[derive(Default)]
pub(crate) struct Occupancy {
    rooms: HashMap<(String, String), HashMap<String, String>>,
    count: usize,
    /// Sessions in rooms, per user: one user's share of the whole (#26).
    per_user: HashMap<String, usize>,
}

impl Occupancy {
    /// Notes `session` in `room` as `nick`; false when full.
    fn join(&mut self, user: &str, room: &str, session: &str, nick: &str) -> bool {
        let sessions = self
            .rooms
            .entry((user.to_owned(), room.to_owned()))
            .or_default();
        if !sessions.contains_key(session) {
            let mine = self.per_user.get(user).copied().unwrap_or(0);
            if self.count >= MAX_OCCUPANTS || mine >= MAX_OCCUPANTS_PER_USER {
                if sessions.is_empty() {
                    self.rooms.remove(&(user.to_owned(), room.to_owned()));
                }
                return false;
            }
            self.count += 1;
            *self.per_user.entry(user.to_owned()).or_default() += 1;
        }
        sessions.insert(session.to_owned(), nick.to_owned());
        true
    }

    /// Takes `session` out of `room`; its nick, if it was in.
    fn leave(&mut self, user: &str, room: &str, session: &str) -> Option<String> {
        let k = (user.to_owned(), room.to_owned());
        let sessions = self.rooms.get_mut(&k)?;
        let nick = sessions.remove(session)?;
        self.count -= 1;
        if let Some(mine) = self.per_user.get_mut(user) {
            *mine -= 1;
            if *mine == 0 {
                self.per_user.remove(user);
            }
        }
        if sessions.is_empty() {
            self.rooms.remove(&k);
        }
        Some(nick)
    }

    /// The user's sessions in the room, with their nicks.
    fn sessions(&self, user: &str, room: &str) -> Vec<(String, String)> {
        self.rooms
            .get(&(user.to_owned(), room.to_owned()))
            .map(|s| s.iter().map(|(j, n)| (j.clone(), n.clone())).collect())
            .unwrap_or_default()
    }

    fn nick(&self, user: &str, room: &str, session: &str) -> Option<String> {
        self.rooms
            .get(&(user.to_owned(), room.to_owned()))?
            .get(session)
            .cloned()
    }
}

/// The longest id written on a room's line (a client's stanza id or a
/// carrier's is far shorter; a hostile one is cut).
const MAX_ID: usize = 256;

/// A line's id as written: XML-safe, at most [`MAX_ID`] characters.
pub(crate) fn line_id(id: &str) -> String {
    let end = id.char_indices().nth(MAX_ID).map_or(id.len(), |(i, _)| i);
    translate::xml_safe(&id[..end]).into_owned()
}

/// An XEP-0082 timestamp for Unix seconds.
fn stamp(at: u64) -> String {
    chrono::DateTime::from_timestamp(i64::try_from(at).unwrap_or(0), 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// `<x xmlns='…muc#user'>` with an item and status codes.
fn muc_user(jid: Option<&Jid>, available: bool, codes: &[u16]) -> Element {
    let mut item = Element::builder("item", MUC_USER_NS)
        .attr(nc("affiliation"), "member")
        .attr(nc("role"), if available { "participant" } else { "none" });
    if let Some(j) = jid {
        item = item.attr(nc("jid"), j.to_string());
    }
    let mut x = Element::builder("x", MUC_USER_NS).append(item.build());
    for c in codes {
        x = x.append(
            Element::builder("status", MUC_USER_NS)
                .attr(nc("code"), c.to_string())
                .build(),
        );
    }
    x.build()
}

fn nc(name: &'static str) -> tokio_xmpp::minidom::rxml::NcName {
    name.try_into().expect("a valid XML name")
}

impl XmppProcess {
    fn occupancy(&self) -> std::sync::MutexGuard<'_, Occupancy> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The nick session `from` has in the room `to` names, if it is in.
    fn session_nick(&self, from: &Jid, to: &Jid) -> Option<String> {
        self.occupancy().nick(
            from.to_bare().as_str(),
            to.to_bare().as_str(),
            &from.to_string(),
        )
    }

    /// Whether `to` is one of our group rooms (or an occupant in one).
    pub(crate) fn is_room(&self, to: &Jid) -> bool {
        to.domain().as_str() == self.domain
            && to
                .node()
                .is_some_and(|n| sms_gateway_core::group::is_group(n.as_str()))
    }

    /// `room/nick`, or the room itself when the nick cannot be a resource.
    fn occupant(&self, room: &str, nick: &str) -> Option<Jid> {
        let safe = translate::xml_safe(nick);
        jid(&format!("{room}/{safe}")).or_else(|| jid(room))
    }

    /// Presence to a room: a join (with `<x xmlns='…muc'/>`), a leave, or
    /// a change of status. Joins are checked here (a user, a group the
    /// room's JID names) and refused with a presence error; the Gateway
    /// then answers a good one with the room's state.
    pub(crate) fn answer_room_presence(&self, p: &Presence) -> (Vec<Stanza>, Option<XmppEvent>) {
        let (Some(from), Some(to)) = (p.from.as_ref(), p.to.as_ref()) else {
            return (vec![], None);
        };
        let room = to.to_bare();
        let user = from.to_bare();
        let refuse = |type_, cond, text: String| {
            let mut e = Presence::new(PresenceType::Error)
                .with_from(to.clone())
                .with_to(from.clone());
            e.payloads
                .push(translate::stanza_error(type_, cond, text).into());
            (vec![Stanza::from(e)], None)
        };
        match p.type_ {
            PresenceType::Unavailable | PresenceType::Error => {
                let nick = self
                    .occupancy()
                    .leave(user.as_str(), room.as_str(), &from.to_string());
                if p.type_ == PresenceType::Error {
                    return (vec![], None);
                }
                let Some(nick) = nick else {
                    return (vec![], None);
                };
                let Some(me) = self.occupant(room.as_str(), &nick) else {
                    return (vec![], None);
                };
                let mut bye = Presence::unavailable().with_from(me).with_to(from.clone());
                bye.payloads.push(muc_user(Some(from), false, &[110]));
                (vec![bye.into()], None)
            }
            PresenceType::None => {
                let Some(number) = self.user_number(from) else {
                    return refuse(
                        ErrorType::Auth,
                        DefinedCondition::RegistrationRequired,
                        format!("Only users of {} can join its group texts.", self.domain),
                    );
                };
                let local = to.node().map(|n| n.as_str().to_owned()).unwrap_or_default();
                if let Err(why) =
                    sms_gateway_core::group::participants(&local, &self.phone, &number)
                {
                    return refuse(ErrorType::Modify, DefinedCondition::JidMalformed, why);
                }
                let Some(nick) = to.resource().map(|r| r.as_str().to_owned()) else {
                    return refuse(
                        ErrorType::Modify,
                        DefinedCondition::JidMalformed,
                        "Join with a nick: room@domain/nick.".into(),
                    );
                };
                let session = from.to_string();
                let joining = p.payloads.iter().find(|x| x.is("x", MUC_NS));
                let known = self
                    .occupancy()
                    .nick(user.as_str(), room.as_str(), &session);
                if joining.is_none() && known.is_some() {
                    // A change of status (away, back): nothing to tell.
                    return (vec![], None);
                }
                if !self
                    .occupancy()
                    .join(user.as_str(), room.as_str(), &session, &nick)
                {
                    return refuse(
                        ErrorType::Wait,
                        DefinedCondition::ResourceConstraint,
                        "You (or the gateway) have too many sessions in group texts; leave one and try again.".into(),
                    );
                }
                let max_history = joining
                    .and_then(|x| x.get_child("history", MUC_NS))
                    .and_then(|h| h.attr("maxstanzas"))
                    .and_then(|n| n.parse().ok());
                (
                    vec![],
                    Some(XmppEvent::Join {
                        from: session,
                        room: room.to_string(),
                        nick,
                        max_history,
                    }),
                )
            }
            // Subscriptions to a room: there is nobody to subscribe to.
            _ => (vec![], None),
        }
    }

    /// A message to a room: a `groupchat` from a session that is not in
    /// it, or a private message to an occupant, is refused; anything else
    /// goes on to the Gateway (`None`).
    pub(crate) fn check_room_message(&self, m: &Message) -> Option<Stanza> {
        let (from, to) = (m.from.as_ref()?, m.to.as_ref()?);
        if !self.is_room(to) || m.type_ == MessageType::Error {
            return None;
        }
        let refuse = |cond, text: String| {
            let mut e = Message::error(from.clone());
            e.from = Some(to.to_bare().into());
            e.id = m.id.clone();
            Some(Stanza::from(e.with_payload(translate::stanza_error(
                ErrorType::Modify,
                cond,
                text,
            ))))
        };
        if to.resource().is_some() {
            return refuse(
                DefinedCondition::FeatureNotImplemented,
                "Private messages in a group text are not supported: write to the participant's number at this gateway.".into(),
            );
        }
        if m.type_ == MessageType::Groupchat && self.session_nick(from, to).is_none() {
            return refuse(
                DefinedCondition::NotAcceptable,
                "Join the room before writing to it.".into(),
            );
        }
        None
    }

    /// The answer to an IQ to a room or an occupant: `disco#info` says what
    /// the room is; a ping to an occupant (XEP-0410) says whether the
    /// session is in the room.
    pub(crate) fn answer_room_iq(&self, iq: &Iq) -> Option<Iq> {
        let to = iq.to()?;
        if !self.is_room(to) {
            return None;
        }
        let (payload, is_get) = match iq {
            Iq::Get { payload, .. } => (payload, true),
            Iq::Set { payload, .. } => (payload, false),
            _ => return None,
        };
        let answer = if is_get && payload.is("ping", ns::PING) {
            let from = iq.from()?;
            let in_room = self
                .session_nick(from, to)
                .is_some_and(|n| to.resource().is_none_or(|r| r.as_str() == n));
            if in_room {
                Ok(None)
            } else {
                Err(translate::stanza_error(
                    ErrorType::Modify,
                    DefinedCondition::NotAcceptable,
                    "Not in this room.",
                ))
            }
        } else if is_get && payload.is("query", ns::DISCO_INFO) && to.resource().is_none() {
            let name = self.room_name(iq.from(), to);
            Ok(Some(
                tokio_xmpp::parsers::disco::DiscoInfoResult {
                    node: payload.attr("node").map(str::to_owned),
                    identities: vec![tokio_xmpp::parsers::disco::Identity::new(
                        "conference",
                        "text",
                        "en",
                        translate::xml_safe(&name).into_owned(),
                    )],
                    features: ROOM_FEATURES.iter().map(|f| f.to_string()).collect(),
                    extensions: vec![],
                }
                .into(),
            ))
        } else if is_get && payload.is("query", ns::DISCO_ITEMS) {
            Ok(Some(
                tokio_xmpp::parsers::disco::DiscoItemsResult {
                    node: payload.attr("node").map(str::to_owned),
                    items: vec![],
                    rsm: None,
                }
                .into(),
            ))
        } else {
            Err(translate::stanza_error(
                ErrorType::Cancel,
                DefinedCondition::FeatureNotImplemented,
                "A group text's room answers disco and ping only.",
            ))
        };
        Some(translate::reply(iq, answer))
    }

    /// What a room is called for the user asking: its participants' names
    /// (caller ID) or numbers, `Jane Roe, +15551112222`.
    fn room_name(&self, asker: Option<&Jid>, room: &Jid) -> String {
        let local = room.node().map(|n| n.as_str()).unwrap_or_default();
        let user = asker.map(|a| a.to_bare());
        let number = asker.and_then(|a| self.user_number(a));
        let (Some(user), Some(number)) = (user, number) else {
            return format!("SMS group {local}");
        };
        match sms_gateway_core::group::participants(local, &self.phone, &number) {
            Ok(numbers) => numbers
                .iter()
                .map(|n| {
                    self.name_for(n, &number, &user)
                        .unwrap_or_else(|| n.to_string())
                })
                .collect::<Vec<_>>()
                .join(", "),
            Err(_) => format!("SMS group {local}"),
        }
    }

    /// A line as a `groupchat` message to `session` (whose nick is
    /// `nick`); `history` adds its time (XEP-0203).
    fn line_message(
        &self,
        room: &str,
        session: &Jid,
        nick: &str,
        line: &RoomLine,
        history: bool,
    ) -> Option<Message> {
        let from = match &line.from {
            Speaker::Participant(n) => self.occupant(room, n)?,
            Speaker::User => self.occupant(room, nick)?,
            _ => jid(room)?,
        };
        let mut m = Message::new(Some(session.clone()));
        m.type_ = MessageType::Groupchat;
        m.from = Some(from);
        let id = line_id(&line.id);
        m.id = Some(Id(id.clone()));
        if !line.body.is_empty() {
            m = m.with_body(Lang::new(), translate::xml_safe(&line.body).into_owned());
        }
        if let Some(url) = &line.media_url {
            m = m.with_payload(tokio_xmpp::parsers::oob::Oob {
                url: translate::xml_safe(url).into_owned(),
                desc: None,
            });
        }
        if line.from == Speaker::User {
            // The reflection of the user's own message: clients that
            // match reflections by XEP-0359 origin-id (Profanity) find it.
            m.payloads.push(
                Element::builder("origin-id", SID_NS)
                    .attr(nc("id"), id.as_str())
                    .build(),
            );
        }
        m.payloads.push(
            Element::builder("stanza-id", SID_NS)
                .attr(nc("id"), id.as_str())
                .attr(nc("by"), room)
                .build(),
        );
        if let Some(number) = &line.number {
            // XEP-0033: who said it, for clients that show the number.
            m.payloads.push(
                Element::builder("addresses", ADDRESS_NS)
                    .append(
                        Element::builder("address", ADDRESS_NS)
                            .attr(nc("type"), "ofrom")
                            .attr(nc("jid"), format!("{number}@{}", self.domain))
                            .build(),
                    )
                    .build(),
            );
        }
        if history {
            m.payloads.push(
                Element::builder("delay", DELAY_NS)
                    .attr(nc("from"), room)
                    .attr(nc("stamp"), stamp(line.at))
                    .build(),
            );
        }
        Some(m)
    }

    /// The stanzas for a room: a session's join, or a line for a user.
    pub(crate) fn room_stanzas(&self, out: &OutgoingStanza) -> Option<Vec<Stanza>> {
        match out {
            OutgoingStanza::RoomJoined {
                room,
                to,
                nick,
                occupants,
                history,
                subject,
            } => {
                let session = jid(to)?;
                let mut out: Vec<Stanza> = vec![];
                for n in occupants {
                    let mut p = Presence::available()
                        .with_from(self.occupant(room, n)?)
                        .with_to(session.clone());
                    p.payloads.push(muc_user(None, true, &[]));
                    out.push(p.into());
                }
                let mut me = Presence::available()
                    .with_from(self.occupant(room, nick)?)
                    .with_to(session.clone());
                // 110: this is you; 100: everyone sees your JID.
                me.payloads
                    .push(muc_user(Some(&session), true, &[100, 110]));
                out.push(me.into());
                for line in history {
                    out.extend(
                        self.line_message(room, &session, nick, line, true)
                            .map(Stanza::from),
                    );
                }
                // The subject comes last: it tells the client the join is done.
                // None set: the room's name instead, since an empty one
                // reads as "Changed by Unknown" (Gajim) or "Room subject
                // cleared" (Profanity) (#28).
                let subject = match jid(room) {
                    Some(r) if subject.trim().is_empty() => self.room_name(Some(&session), &r),
                    _ => subject.clone(),
                };
                let mut s = Message::new(Some(session));
                s.type_ = MessageType::Groupchat;
                s.from = jid(room);
                s.id = Some(Id(self.new_id()));
                s.subjects
                    .insert(Lang::new(), translate::xml_safe(&subject).into_owned());
                out.push(s.into());
                Some(out)
            }
            OutgoingStanza::Group {
                room, user, line, ..
            } => {
                let sessions = self.occupancy().sessions(user, room);
                if !sessions.is_empty() {
                    return Some(
                        sessions
                            .iter()
                            .filter_map(|(s, nick)| {
                                self.line_message(room, &jid(s)?, nick, line, false)
                            })
                            .map(Stanza::from)
                            .collect(),
                    );
                }
                // Nobody there: the user's own lines and the room's notices
                // wait in the history; a participant's line invites.
                let Speaker::Participant(nick) = &line.from else {
                    return Some(vec![]);
                };
                Some(self.invitations(room, user, nick, line))
            }
            _ => None,
        }
    }

    /// Invitations to `room` for `user`: XEP-0249's direct one from the
    /// gateway and XEP-0045's mediated one from the room, each saying
    /// what was written.
    fn invitations(&self, room: &str, user: &str, nick: &str, line: &RoomLine) -> Vec<Stanza> {
        let (Some(to), Some(room_jid), Some(me)) = (jid(user), jid(room), jid(&self.domain)) else {
            return vec![];
        };
        let reason = translate::xml_safe(&format!(
            "{}: {}",
            sms_gateway_core::text::preview(nick, 64),
            sms_gateway_core::text::preview(&line.body, 100)
        ))
        .into_owned();
        let mut direct = Message::new(Some(to.clone()));
        direct.type_ = MessageType::Normal;
        direct.from = Some(me);
        direct.id = Some(Id(self.new_id()));
        direct.payloads.push(
            Element::builder("x", CONFERENCE_NS)
                .attr(nc("jid"), room)
                .attr(nc("reason"), reason.as_str())
                .build(),
        );
        let mut mediated = Message::new(Some(to));
        mediated.type_ = MessageType::Normal;
        mediated.from = Some(room_jid);
        mediated.id = Some(Id(self.new_id()));
        let inviter = line
            .number
            .as_ref()
            .map(|n| format!("{n}@{}", self.domain))
            .unwrap_or_else(|| self.domain.clone());
        mediated.payloads.push(
            Element::builder("x", MUC_USER_NS)
                .append(
                    Element::builder("invite", MUC_USER_NS)
                        .attr(nc("from"), inviter)
                        .append(
                            Element::builder("reason", MUC_USER_NS)
                                .append(reason.as_str())
                                .build(),
                        )
                        .build(),
                )
                .build(),
        );
        vec![direct.into(), mediated.into()]
    }

    /// A direct invitation (XEP-0249) to `room` for `user`, from the
    /// gateway: the answer to *New group text*.
    pub(crate) fn invite_to(&self, room: &str, user: &BareJid) -> Stanza {
        let mut m = Message::new(Some(user.clone().into()));
        m.type_ = MessageType::Normal;
        m.from = jid(&self.domain);
        m.id = Some(Id(self.new_id()));
        m.payloads.push(
            Element::builder("x", CONFERENCE_NS)
                .attr(nc("jid"), room)
                .attr(nc("reason"), "A new group text")
                .build(),
        );
        m.into()
    }

    /// `unavailable` to every session in a room, for a clean stop (status
    /// 332: the service is shutting down).
    pub(crate) fn room_goodbyes(&self) -> Vec<Presence> {
        let rooms = std::mem::take(&mut *self.occupancy()).rooms;
        let mut out = vec![];
        for ((_, room), sessions) in rooms {
            for (session, nick) in sessions {
                let (Some(from), Some(to)) = (self.occupant(&room, &nick), jid(&session)) else {
                    continue;
                };
                let mut p = Presence::unavailable().with_from(from).with_to(to.clone());
                p.payloads.push(muc_user(Some(&to), false, &[110, 332]));
                out.push(p);
            }
        }
        out
    }

    /// For the fuzz target: the answers to a stanza sent to a room (as
    /// the XML written back), then the stanzas of a join and of an
    /// invitation whose nicks, text, ids and subject are all `text`.
    #[doc(hidden)]
    pub fn room_for_fuzzing(&self, stanza: Option<Stanza>, text: &str) -> Vec<String> {
        let mut out: Vec<Stanza> = vec![];
        match stanza {
            Some(Stanza::Presence(p)) if p.to.as_ref().is_some_and(|t| self.is_room(t)) => {
                out.extend(self.answer_room_presence(&p).0);
            }
            Some(Stanza::Message(m)) => out.extend(self.check_room_message(&m)),
            Some(Stanza::Iq(iq)) => out.extend(self.answer_room_iq(&iq).map(Stanza::from)),
            _ => {}
        }
        let room = "+15551112222,+15553334444@sms.example.com";
        let line = RoomLine {
            id: text.into(),
            from: Speaker::Participant(text.into()),
            number: None,
            body: text.into(),
            media_url: Some(text.into()),
            at: u64::MAX,
        };
        for o in [
            OutgoingStanza::RoomJoined {
                room: room.into(),
                to: "alice@example.com/r".into(),
                nick: text.into(),
                occupants: vec![text.into()],
                history: vec![line.clone()],
                subject: text.into(),
            },
            OutgoingStanza::Group {
                room: room.into(),
                user: "nobody@example.com".into(),
                line,
                inbound_id: None,
            },
        ] {
            out.extend(self.room_stanzas(&o).unwrap_or_default());
        }
        out.into_iter().map(translate::written).collect()
    }

    /// Takes session `from` out of `room` (a join the Gateway never took).
    pub(crate) fn left_room(&self, from: &str, room: &str) {
        if let Some(session) = jid(from) {
            let user = session.to_bare();
            self.occupancy().leave(user.as_str(), room, from);
        }
    }

    /// Whether `user` (bare) has a session in `room`: for tests.
    #[cfg(test)]
    pub(crate) fn in_room(&self, user: &BareJid, room: &str) -> bool {
        !self.occupancy().sessions(user.as_str(), room).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occupancy_counts_sessions_and_is_bounded() {
        let mut o = Occupancy::default();
        assert!(o.join("u", "r", "u/a", "me"));
        assert!(o.join("u", "r", "u/a", "me2"));
        assert!(o.join("u", "r", "u/b", "me"));
        assert_eq!(o.count, 2);
        assert_eq!(o.leave("u", "r", "u/a").as_deref(), Some("me2"));
        assert_eq!(o.leave("u", "r", "u/a"), None);
        assert_eq!(o.sessions("u", "r").len(), 1);
        // One user's share: the rest stays for everyone else (#26).
        for i in 0..MAX_OCCUPANTS_PER_USER - 1 {
            assert!(o.join("u", &format!("r{i}"), "u/a", "n"));
        }
        assert!(!o.join("u", "one-more", "u/a", "n"));
        assert!(o.join("v", "r", "v/a", "n"));
        // The whole gateway's bound.
        let mut users = 0;
        while o.count < MAX_OCCUPANTS {
            users += 1;
            for i in 0..MAX_OCCUPANTS_PER_USER {
                if o.count == MAX_OCCUPANTS {
                    break;
                }
                assert!(o.join(&format!("w{users}"), &format!("r{i}"), "s", "n"));
            }
        }
        assert!(!o.join("x", "r", "x/a", "n"));
        assert!(!o.rooms.contains_key(&("x".into(), "r".into())));
        // Leaving gives the share back.
        assert!(o.leave("u", "r0", "u/a").is_some());
        assert_eq!(o.per_user["u"], MAX_OCCUPANTS_PER_USER - 1);
    }

    const ROOM: &str = "+15551112222,+15553334444@sms.example.com";

    fn presence(from: &str, to: &str, type_: &str, payload: &str) -> Presence {
        let t = if type_.is_empty() {
            String::new()
        } else {
            format!(" type='{type_}'")
        };
        Presence::try_from(
            format!("<presence xmlns='jabber:component:accept'{t} from='{from}' to='{to}'>{payload}</presence>")
                .parse::<Element>()
                .unwrap(),
        )
        .unwrap()
    }

    fn xml(s: &Stanza) -> String {
        translate::written(match s {
            Stanza::Message(m) => Stanza::Message(m.clone()),
            Stanza::Presence(p) => Stanza::Presence(p.clone()),
            Stanza::Iq(i) => Stanza::Iq(i.clone()),
        })
    }

    fn alice() -> tokio_xmpp::jid::BareJid {
        tokio_xmpp::jid::BareJid::new("alice@example.com").unwrap()
    }

    #[tokio::test]
    async fn joining_leaving_and_what_strangers_and_bad_rooms_get() {
        let p = crate::people::tests::process("");
        let join = format!("<x xmlns='{MUC_NS}'><history maxstanzas='5'/></x>");
        // A stranger, and a room naming one number: presence errors.
        let (out, ev) = p.answer_room_presence(&presence(
            "eve@evil.example/x",
            &format!("{ROOM}/eve"),
            "",
            &join,
        ));
        assert!(
            ev.is_none() && xml(&out[0]).contains("registration-required"),
            "{}",
            xml(&out[0])
        );
        let (out, ev) = p.answer_room_presence(&presence(
            "alice@example.com/x",
            "+15551112222,pizza@sms.example.com/a",
            "",
            &join,
        ));
        assert!(
            ev.is_none()
                && xml(&out[0]).contains("jid-malformed")
                && xml(&out[0]).contains("pizza")
        );
        // A user joins: the Gateway is asked for the room's state.
        let (out, ev) = p.answer_room_presence(&presence(
            "alice@example.com/x",
            &format!("{ROOM}/alice"),
            "",
            &join,
        ));
        assert!(out.is_empty());
        assert_eq!(
            ev,
            Some(XmppEvent::Join {
                from: "alice@example.com/x".into(),
                room: ROOM.into(),
                nick: "alice".into(),
                max_history: Some(5),
            })
        );
        assert!(p.in_room(&alice(), ROOM));
        // The state: occupants, self-presence (110), history, subject last.
        let line = RoomLine {
            id: "g1".into(),
            from: Speaker::Participant("Jane Roe".into()),
            number: Some(sms_gateway_core::PhoneNumber::parse("+15553334444", None).unwrap()),
            body: "hi".into(),
            media_url: None,
            at: 1_795_773_600,
        };
        let out = p
            .room_stanzas(&OutgoingStanza::RoomJoined {
                room: ROOM.into(),
                to: "alice@example.com/x".into(),
                nick: "alice".into(),
                occupants: vec!["+15551112222".into(), "Jane Roe".into()],
                history: vec![line.clone()],
                subject: "Dinner".into(),
            })
            .unwrap();
        let out: Vec<String> = out.iter().map(xml).collect();
        assert_eq!(out.len(), 5, "{out:#?}");
        assert!(
            out[0].contains(&format!("from='{ROOM}/+15551112222'")),
            "{}",
            out[0]
        );
        assert!(
            out[2].contains("code='110'") && out[2].contains(&format!("from='{ROOM}/alice'")),
            "{}",
            out[2]
        );
        assert!(
            out[3].contains("type='groupchat'")
                && out[3].contains("stamp='2026-11-27T10:00:00Z'")
                && out[3].contains(&format!("from='{ROOM}/Jane Roe'")),
            "{}",
            out[3]
        );
        assert!(out[4].contains("<subject>Dinner</subject>"), "{}", out[4]);
        // No subject set: the room's name, never an empty one (#28).
        let out = p
            .room_stanzas(&OutgoingStanza::RoomJoined {
                room: ROOM.into(),
                to: "alice@example.com/x".into(),
                nick: "alice".into(),
                occupants: vec![],
                history: vec![],
                subject: String::new(),
            })
            .unwrap();
        let subject = xml(out.last().unwrap());
        assert!(
            subject.contains("<subject>") && subject.contains("+15551112222"),
            "{subject}"
        );
        // A line now goes to the session; the user's own under its nick.
        let to_room = |line: RoomLine| {
            p.room_stanzas(&OutgoingStanza::Group {
                room: ROOM.into(),
                user: "alice@example.com".into(),
                line,
                inbound_id: Some(1),
            })
            .unwrap()
            .iter()
            .map(xml)
            .collect::<Vec<_>>()
        };
        let out = to_room(line.clone());
        assert!(
            out.len() == 1
                && out[0].contains("to='alice@example.com/x'")
                && !out[0].contains("delay"),
            "{out:?}"
        );
        let mine = RoomLine {
            id: "m1".into(),
            from: Speaker::User,
            number: None,
            ..line.clone()
        };
        let out = to_room(mine.clone());
        assert!(
            out[0].contains("id='m1'") && out[0].contains(&format!("from='{ROOM}/alice'")),
            "{out:?}"
        );
        // Groupchat from the session goes on; a private message does not.
        let msg = |to: &str, t: &str| {
            Message::try_from(
                format!("<message xmlns='jabber:component:accept' type='{t}' from='alice@example.com/x' to='{to}' id='q'><body>x</body></message>")
                    .parse::<Element>()
                    .unwrap(),
            )
            .unwrap()
        };
        assert!(p.check_room_message(&msg(ROOM, "groupchat")).is_none());
        let pm = p
            .check_room_message(&msg(&format!("{ROOM}/Jane Roe"), "chat"))
            .unwrap();
        assert!(xml(&pm).contains("feature-not-implemented"));
        // Self-ping (XEP-0410) says whether the session is in.
        let ping = |to: &str| {
            Iq::try_from(
                format!("<iq xmlns='jabber:component:accept' type='get' id='p' from='alice@example.com/x' to='{to}'><ping xmlns='urn:xmpp:ping'/></iq>")
                    .parse::<Element>()
                    .unwrap(),
            )
            .unwrap()
        };
        assert!(matches!(
            p.answer_room_iq(&ping(&format!("{ROOM}/alice"))),
            Some(Iq::Result { .. })
        ));
        // Leaving: the session is out, a line invites, a groupchat is refused.
        let (out, _) = p.answer_room_presence(&presence(
            "alice@example.com/x",
            &format!("{ROOM}/alice"),
            "unavailable",
            "",
        ));
        assert!(xml(&out[0]).contains("code='110'"));
        assert!(!p.in_room(&alice(), ROOM));
        assert!(matches!(
            p.answer_room_iq(&ping(&format!("{ROOM}/alice"))),
            Some(Iq::Error { .. })
        ));
        let out = to_room(line);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(
            out[0].contains("jabber:x:conference") && out[0].contains("Jane Roe: hi"),
            "{}",
            out[0]
        );
        assert!(
            out[1].contains("<invite") && out[1].contains(&format!("from='{ROOM}'")),
            "{}",
            out[1]
        );
        assert!(
            to_room(mine).is_empty(),
            "the user's own line just waits in the history"
        );
        assert!(
            xml(&p.check_room_message(&msg(ROOM, "groupchat")).unwrap()).contains("not-acceptable")
        );
        // disco#info says what the room is.
        let info = p
            .answer_room_iq(&Iq::try_from(
                format!("<iq xmlns='jabber:component:accept' type='get' id='d' from='alice@example.com/x' to='{ROOM}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
                    .parse::<Element>()
                    .unwrap(),
            ).unwrap())
            .unwrap();
        let info = xml(&Stanza::Iq(info));
        // Named by its participants (their caller-ID names when known).
        assert!(info.contains("name='+15551112222, +15553334444'"), "{info}");
        for f in [
            "muc_persistent",
            "muc_membersonly",
            "muc_nonanonymous",
            "muc_hidden",
            "category='conference'",
        ] {
            assert!(info.contains(f), "{f}: {info}");
        }
    }

    /// Found by the fuzz target: a text of thousands of `<a>` as a line's
    /// id, nick and body made an id attribute our own XML reader refuses.
    #[tokio::test]
    async fn long_hostile_ids_and_nicks_are_cut_and_read_back() {
        let p = crate::people::tests::process("");
        let text = format!("<message from='a@b/c'>{}", "<a>".repeat(3000));
        for a in p.room_for_fuzzing(None, &text) {
            a.parse::<Element>()
                .unwrap_or_else(|e| panic!("{e}: {}", &a[..a.len().min(300)]));
        }
    }

    #[test]
    fn stamps_are_xep_0082() {
        assert_eq!(stamp(1_795_773_600), "2026-11-27T10:00:00Z");
    }
}
