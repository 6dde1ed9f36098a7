//! What users see around their texts: presence clients believe, names in
//! rosters and vCards, registration (XEP-0077) and ad-hoc commands
//! (XEP-0050).
//!
//! - **Presence** comes from a full JID (`+15557654321@sms.example.com/sms`,
//!   and `sms.example.com/sms`): clients that track availability per
//!   resource (Gajim) show a bare JID's presence as offline. One available
//!   presence per change: a subscription, a probe (the user logging in), a
//!   start; `unavailable` from all of them at a clean stop.
//! - **Names**: where the user's server grants the component roster access
//!   (XEP-0356, advertised in a `<privilege/>` message at login), contacts
//!   are put in the user's roster with their caller-ID name in the group
//!   "SMS"; vCard4 (XEP-0292, over PubSub) and vcard-temp answer with the
//!   name either way.
//! - **Registration and commands**: forms on the gateway's JID; what they
//!   change goes to the Gateway ([`XmppEvent::Users`]), which stores it and
//!   answers ([`OutgoingStanza::Done`]); the IQ is answered then.

use super::*;
use jid::BareJid;
use sms_gateway_core::{Origin, StoredUser, UserChange};
use tokio_xmpp::jid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::message::Lang;
use tokio_xmpp::parsers::ns;

/// The resource contacts and the gateway send presence from.
pub const RESOURCE: &str = "sms";
/// The roster group contacts are put in.
pub const GROUP: &str = "SMS";
/// XEP-0050.
pub const COMMANDS_NS: &str = "http://jabber.org/protocol/commands";
/// XEP-0077.
pub const REGISTER_NS: &str = "jabber:iq:register";
/// XEP-0004.
pub const DATA_NS: &str = "jabber:x:data";
/// RFC 6121 rosters.
pub const ROSTER_NS: &str = "jabber:iq:roster";
/// XEP-0292's vCard4 and its PubSub node.
pub const VCARD4_NS: &str = "urn:ietf:params:xml:ns:vcard-4.0";
/// XEP-0292's PubSub node.
pub const VCARD4_NODE: &str = "urn:xmpp:vcard4";
/// XEP-0060.
pub const PUBSUB_NS: &str = "http://jabber.org/protocol/pubsub";
/// XEP-0356, in the versions servers speak (ejabberd 23: 1; Prosody's
/// mod_privilege: 2).
pub const PRIVILEGE_NS: [&str; 2] = ["urn:xmpp:privilege:1", "urn:xmpp:privilege:2"];

/// An attribute name.
fn nc(name: &'static str) -> tokio_xmpp::minidom::rxml::NcName {
    tokio_xmpp::minidom::rxml::NcName::try_from(name).expect("a valid attribute name")
}

/// How many (user, contact) pairs are remembered as announced available.
const ANNOUNCED: usize = 100_000;
/// When a user approves a contact's request (`subscribed`), the server
/// probes the contact at once (Prosody does); the contact is announced
/// already, so that one probe, if it comes within this time, is not
/// answered. Every other probe (a user's new session) is.
const PROBE_AFTER_APPROVAL: Duration = Duration::from_secs(30);
/// How many registrations and commands may wait for the Gateway at once.
const WAITING: usize = 1024;

/// The commands, by node: (node, name, for admins only).
pub const COMMANDS: &[(&str, &str, bool)] = &[
    ("new-chat", "New chat by number", false),
    ("new-group", "New group text", false),
    ("settings", "My settings", false),
    ("unregister", "Unregister", false),
    ("add-user", "Add user", true),
    ("remove-user", "Remove user", true),
    ("list-users", "List users", true),
    ("pending", "Pending registrations", true),
    ("status", "Gateway status", true),
];

/// A registration or command waiting for the Gateway's answer.
pub(crate) struct Waiting {
    /// Who asked, answered when the Gateway has done (or refused) it.
    asker: Asker,
    /// For a command: its node and session.
    command: Option<(String, String)>,
    /// What to say when it is done.
    done: String,
    /// Stanzas to send as well when it is done (notices to admins).
    then: Vec<Stanza>,
}

/// Who asked for a change: a request (registration, a command), answered
/// with its result, or a chat to the gateway's address, answered in chat.
// Kept inside a boxed `Waiting`, one per request in flight: the size is
// paid once per request, not per variant moved around.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Asker {
    /// An IQ: registration (XEP-0077) or an ad-hoc command (XEP-0050).
    Iq(Iq),
    /// A command written in chat (#31), by this user.
    Chat(BareJid),
}

/// What the gateway knows of its users' servers and what it has said.
#[derive(Default)]
pub(crate) struct People {
    /// (user, contact) pairs announced available, and when, for
    /// `unavailable` at stop and quiet probes.
    announced: HashMap<(String, String), tokio::time::Instant>,
    /// Servers that granted roster access (XEP-0356), with the namespace.
    roster_access: HashMap<String, &'static str>,
    /// Roster items sent and not yet answered, by IQ id: (contact, user, name).
    roster_sets: HashMap<String, (String, String, Option<String>)>,
    /// (user, contact) pairs whose subscription the user just approved,
    /// and when: the server's probe that follows is not answered.
    approved: HashMap<(String, String), tokio::time::Instant>,
    /// Registrations and commands waiting for the Gateway, by ticket.
    waiting: HashMap<u64, Box<Waiting>>,
    next_ticket: u64,
}

/// Who asks: a stranger, a user, or an admin (who may also be a user).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Stranger,
    User,
    Admin,
}

/// The values of a submitted data form, by field.
fn form_values(form: &Element) -> HashMap<String, Vec<String>> {
    let mut out = HashMap::new();
    for f in form.children().filter(|c| c.is("field", DATA_NS)) {
        if let Some(var) = f.attr("var") {
            let values = f
                .children()
                .filter(|v| v.is("value", DATA_NS))
                .map(|v| v.text().trim().to_owned())
                .collect();
            out.insert(var.to_owned(), values);
        }
    }
    out
}

fn first<'a>(values: &'a HashMap<String, Vec<String>>, var: &str) -> Option<&'a str> {
    values
        .get(var)
        .and_then(|v| v.first())
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

/// A data form field.
pub(crate) struct Field<'a> {
    var: &'a str,
    type_: &'a str,
    label: &'a str,
    values: Vec<String>,
    options: Vec<(String, String)>,
    required: bool,
}

impl<'a> Field<'a> {
    fn new(var: &'a str, type_: &'a str, label: &'a str) -> Self {
        Field {
            var,
            type_,
            label,
            values: vec![],
            options: vec![],
            required: false,
        }
    }
    fn value(mut self, v: impl Into<String>) -> Self {
        self.values.push(v.into());
        self
    }
    fn options(mut self, o: Vec<(String, String)>) -> Self {
        self.options = o;
        self
    }
    fn required(mut self) -> Self {
        self.required = true;
        self
    }
}

/// An XEP-0004 form of `type_` (`form` or `result`).
fn form(type_: &str, title: &str, instructions: &str, fields: Vec<Field>) -> Element {
    let clean = |s: &str| translate::xml_safe(s).into_owned();
    let mut x = Element::builder("x", DATA_NS)
        .attr(nc("type"), type_)
        .append(Element::builder("title", DATA_NS).append(clean(title)));
    if !instructions.is_empty() {
        x = x.append(Element::builder("instructions", DATA_NS).append(clean(instructions)));
    }
    for f in fields {
        let mut e = Element::builder("field", DATA_NS)
            .attr(nc("var"), f.var)
            .attr(nc("type"), f.type_);
        if !f.label.is_empty() {
            e = e.attr(nc("label"), f.label);
        }
        if f.required {
            e = e.append(Element::builder("required", DATA_NS));
        }
        for (label, value) in f.options {
            e = e.append(
                Element::builder("option", DATA_NS)
                    .attr(nc("label"), clean(&label))
                    .append(Element::builder("value", DATA_NS).append(clean(&value))),
            );
        }
        for v in f.values {
            e = e.append(Element::builder("value", DATA_NS).append(clean(&v)));
        }
        x = x.append(e);
    }
    x.build()
}

fn error(
    type_: ErrorType,
    cond: DefinedCondition,
    text: impl Into<String>,
) -> tokio_xmpp::parsers::stanza_error::StanzaError {
    translate::stanza_error(type_, cond, text)
}

fn bad(text: impl Into<String>) -> tokio_xmpp::parsers::stanza_error::StanzaError {
    error(ErrorType::Modify, DefinedCondition::BadRequest, text)
}

/// What to do with a request the people module answers.
pub(crate) enum Answer {
    /// Stanzas to send now (the reply first).
    Now(Vec<Stanza>),
    /// A change for the Gateway; the reply waits for its answer.
    Ask(UserChange, Box<Waiting>),
}

impl XmppProcess {
    fn people(&self) -> std::sync::MutexGuard<'_, People> {
        self.people.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `from` may run a command (`admin_only` or a user's): users
    /// run users' commands; admins run admins' commands, and users' ones
    /// only if they are users too.
    fn may_run(&self, from: Option<&Jid>, admin_only: bool) -> bool {
        match self.role(from) {
            Role::Stranger => false,
            Role::User => !admin_only,
            Role::Admin => {
                admin_only || from.is_some_and(|f| self.users.get(&f.to_bare()).is_some())
            }
        }
    }

    /// A chat from the gateway's own JID to `to`.
    pub(crate) fn notice(&self, to: &BareJid, text: &str) -> Stanza {
        let mut m = Message::chat(Jid::from(to.clone()));
        m.from = jid(&self.domain);
        m.id = Some(Id(self.new_id()));
        m.with_body(Lang::new(), translate::xml_safe(text).into_owned())
            .into()
    }

    fn role(&self, from: Option<&Jid>) -> Role {
        let Some(bare) = from.map(|f| f.to_bare()) else {
            return Role::Stranger;
        };
        if self.admins.contains(&bare) {
            Role::Admin
        } else if self.users.get(&bare).is_some() {
            Role::User
        } else {
            Role::Stranger
        }
    }

    /// `jid` (a contact or the domain) with the presence resource.
    pub(crate) fn full(&self, bare: &str) -> Option<Jid> {
        jid(&format!("{bare}/{RESOURCE}"))
    }

    /// Available (or not) presence from `from` (bare) to `to` (bare),
    /// remembered for the stop.
    pub(crate) fn presence(&self, from: &str, to: &str, available: bool) -> Option<Presence> {
        let (from_full, to) = (self.full(from)?, jid(to)?);
        let key = (to.to_string(), from.to_lowercase());
        {
            let mut people = self.people();
            if available {
                if people.announced.len() < ANNOUNCED || people.announced.contains_key(&key) {
                    people.announced.insert(key, tokio::time::Instant::now());
                }
            } else {
                people.announced.remove(&key);
            }
        }
        let p = if available {
            Presence::available()
        } else {
            Presence::unavailable()
        };
        Some(p.with_from(from_full).with_to(to))
    }

    /// `unavailable` from everything announced, for a clean stop.
    pub(crate) fn goodbyes(&self) -> Vec<Presence> {
        let pairs: Vec<(String, String)> =
            self.people().announced.drain().map(|(k, _)| k).collect();
        pairs
            .into_iter()
            .filter_map(|(user, contact)| {
                Some(
                    Presence::unavailable()
                        .with_from(self.full(&contact)?)
                        .with_to(jid(&user)?),
                )
            })
            .collect()
    }

    /// A server's `<privilege/>` message (XEP-0356), if `m` is one: roster
    /// access is noted for its domain.
    pub(crate) fn on_privilege(&self, m: &Message) -> bool {
        let Some(from) = m.from.as_ref() else {
            return false;
        };
        let Some((p, ns)) = PRIVILEGE_NS.iter().find_map(|&ns| {
            m.payloads
                .iter()
                .find(|p| p.is("privilege", ns))
                .map(|p| (p, ns))
        }) else {
            return false;
        };
        // Only a server (a domain JID) grants privileges.
        if from.node().is_some() || from.resource().is_some() {
            return true;
        }
        let roster = p.children().any(|perm| {
            perm.attr("access") == Some("roster")
                && matches!(perm.attr("type"), Some("set" | "both"))
        });
        let domain = from.to_string();
        let mut people = self.people();
        if roster {
            tracing::info!(server = %domain, "the server grants roster access (XEP-0356): contacts go to users' rosters with their names");
            people.roster_access.insert(domain, ns);
        } else {
            people.roster_access.remove(&domain);
        }
        true
    }

    /// The stanzas putting `contact` in `user`'s roster with `name`, and
    /// announcing it available, if `user`'s server granted roster access.
    pub(crate) fn roster_item(
        &self,
        contact: &str,
        user: &str,
        name: Option<&str>,
    ) -> Option<Vec<Stanza>> {
        let user_jid = jid(user)?;
        self.people()
            .roster_access
            .get(user_jid.domain().as_str())?;
        let mut item = Element::builder("item", ROSTER_NS)
            .attr(nc("jid"), contact)
            .attr(nc("subscription"), "both");
        if let Some(name) = name {
            item = item.attr(nc("name"), translate::xml_safe(name).into_owned());
        }
        item = item.append(Element::builder("group", ROSTER_NS).append(GROUP));
        let query = Element::builder("query", ROSTER_NS).append(item).build();
        // Its answer is believed: an id nobody can guess (#27).
        let id = sms_gateway_core::random_id();
        {
            let mut people = self.people();
            if people.roster_sets.len() >= WAITING {
                people.roster_sets.clear();
            }
            people.roster_sets.insert(
                id.clone(),
                (contact.to_owned(), user.to_owned(), name.map(str::to_owned)),
            );
        }
        let iq = Iq::Set {
            from: jid(&self.domain),
            to: Some(user_jid),
            id,
            payload: query,
        };
        let mut out: Vec<Stanza> = vec![iq.into()];
        out.extend(self.presence(contact, user, true).map(Stanza::from));
        Some(out)
    }

    /// The answer to a roster item we sent, if `iq` is one. A refusal
    /// (ejabberd before 23.10 fails every privileged roster set, its issue
    /// #3942) turns to the way that needs no privilege: the contact asks to
    /// be added, with its name, and the client offers it to the user. The
    /// server's grant is then not used again until it is given again.
    ///
    /// Taken, the user is subscribed to the contact (the item says
    /// `both`): the event tells the Gateway, which announces the contact
    /// again after a restart.
    pub(crate) fn roster_answer(&self, iq: &Iq) -> Option<(Vec<Stanza>, Option<XmppEvent>)> {
        let (id, from, refused) = match iq {
            Iq::Result { id, from, .. } => (id, from, false),
            Iq::Error { id, from, .. } => (id, from, true),
            _ => return None,
        };
        let (contact, user, name) = {
            let mut people = self.people();
            // Only the account the item was pushed to answers for it (#27):
            // an answer from anyone else is not taken for one.
            let (_, user, _) = people.roster_sets.get(id)?;
            if from.as_ref() != jid(user).as_ref() {
                return None;
            }
            people.roster_sets.remove(id)?
        };
        if !refused {
            let taken = XmppEvent::Subscription {
                from: user,
                to: contact,
                subscribed: true,
            };
            return Some((vec![], Some(taken)));
        }
        let domain = jid(&user)
            .map(|u| u.domain().to_string())
            .unwrap_or_default();
        if self.people().roster_access.remove(&domain).is_some() {
            tracing::warn!(server = %domain, "the server granted roster access but refused a roster item (ejabberd before 23.10 does: its issue #3942); contacts ask to be added instead");
        }
        Some((
            self.ask_to_be_added(&contact, &user, name.as_deref())
                .into_iter()
                .collect(),
            None,
        ))
    }

    /// A subscription request from `contact` to `user`, with its name: the
    /// client offers to add the contact.
    pub(crate) fn ask_to_be_added(
        &self,
        contact: &str,
        user: &str,
        name: Option<&str>,
    ) -> Option<Stanza> {
        let mut ask = Presence::subscribe()
            .with_from(jid(contact)?)
            .with_to(jid(user)?);
        if let Some(name) = name {
            ask.payloads.push(translate::nick(name));
        }
        Some(ask.into())
    }

    /// Presence from a user to a contact or to the gateway: answered as
    /// RFC 6121 asks, once per change; a subscription's start and end are
    /// reported to the Gateway (kept for restarts). Presence from anyone
    /// who is not a user gets no answer, so nothing tells who is one.
    pub(crate) fn answer_presence(&self, p: &Presence) -> (Vec<Presence>, Option<XmppEvent>) {
        let (Some(from), Some(to)) = (p.from.as_ref(), p.to.as_ref()) else {
            return (vec![], None);
        };
        let Some(user_number) = self.user_number(from) else {
            return (vec![], None);
        };
        let contact = self.contact_number(to);
        let me = to.to_bare();
        let user = from.to_bare();
        if to.node().is_some() && contact.is_none() {
            // Not a phone number: there is nobody there.
            return (
                vec![Presence::new(PresenceType::Unsubscribed)
                    .with_from(me)
                    .with_to(user)],
                None,
            );
        }
        let event = |subscribed| XmppEvent::Subscription {
            from: user.to_string(),
            to: me.to_string(),
            subscribed,
        };
        match p.type_ {
            PresenceType::Subscribe => {
                let mut out = vec![Presence::new(PresenceType::Subscribed)
                    .with_from(me.clone())
                    .with_to(user.clone())];
                out.extend(self.presence(me.as_str(), user.as_str(), true));
                if let Some(contact) = contact {
                    // Ask back, so the contact shows as reachable both ways.
                    let mut ask = Presence::subscribe()
                        .with_from(me.clone())
                        .with_to(user.clone());
                    if let Some(name) = self.name_for(&contact, &user_number, &user) {
                        ask.payloads.push(translate::nick(&name));
                    }
                    out.push(ask);
                }
                (out, Some(event(true)))
            }
            PresenceType::Subscribed => {
                let key = (user.to_string(), me.as_str().to_lowercase());
                let mut people = self.people();
                if people.announced.contains_key(&key) {
                    if people.approved.len() >= WAITING {
                        people.approved.clear();
                    }
                    people.approved.insert(key, tokio::time::Instant::now());
                }
                (vec![], None)
            }
            PresenceType::Probe => {
                let key = (user.to_string(), me.as_str().to_lowercase());
                let quiet = self
                    .people()
                    .approved
                    .remove(&key)
                    .is_some_and(|at| at.elapsed() < PROBE_AFTER_APPROVAL);
                let out = if quiet {
                    vec![]
                } else {
                    self.presence(me.as_str(), user.as_str(), true)
                        .into_iter()
                        .collect()
                };
                (out, Some(event(true)))
            }
            PresenceType::Unsubscribe => {
                let out = self
                    .presence(me.as_str(), user.as_str(), false)
                    .into_iter()
                    .collect();
                (out, Some(event(false)))
            }
            _ => (vec![], None),
        }
    }

    /// The contact's name for `user`, if known now and caller ID is on.
    pub(crate) fn name_for(
        &self,
        contact: &PhoneNumber,
        user_number: &PhoneNumber,
        user: &BareJid,
    ) -> Option<String> {
        if !self.users.get(user).is_some_and(|u| u.caller_id) {
            return None;
        }
        self.caller_id.name_now(contact, user_number).flatten()
    }

    /// vCard4 (XEP-0292) and nick over PubSub, for a contact.
    pub(crate) fn answer_pubsub(&self, iq: &Iq, payload: &Element) -> Option<Iq> {
        let items = payload.get_child("items", PUBSUB_NS)?;
        let node = items.attr("node")?;
        let to = iq.to()?;
        let name = match (self.contact_number(to), iq.from()) {
            (Some(contact), Some(from)) => match self.user_number(from) {
                Some(n) => self.name_for(&contact, &n, &from.to_bare()),
                None => None,
            },
            _ => Some("SMS gateway".to_owned()),
        };
        let number = self.contact_number(to);
        let item = match node {
            VCARD4_NODE => {
                let text = |name: &str, value: &str| {
                    Element::builder(name, VCARD4_NS)
                        .append(
                            Element::builder("text", VCARD4_NS)
                                .append(translate::xml_safe(value).into_owned()),
                        )
                        .build()
                };
                let shown = name
                    .clone()
                    .or_else(|| number.as_ref().map(|n| n.to_string()))?;
                let mut card = Element::builder("vcard", VCARD4_NS).append(text("fn", &shown));
                if let Some(name) = &name {
                    card = card.append(text("nickname", name));
                }
                if let Some(n) = &number {
                    card = card.append(
                        Element::builder("tel", VCARD4_NS)
                            .append(Element::builder("uri", VCARD4_NS).append(format!("tel:{n}"))),
                    );
                }
                Some(card.build())
            }
            translate::NICK_NS => name.as_deref().map(translate::nick),
            _ => None,
        };
        let Some(item) = item else {
            return Some(translate::reply(
                iq,
                Err(error(
                    ErrorType::Cancel,
                    DefinedCondition::ItemNotFound,
                    "Nothing is published here.",
                )),
            ));
        };
        let answer = Element::builder("pubsub", PUBSUB_NS)
            .append(
                Element::builder("items", PUBSUB_NS)
                    .attr(nc("node"), node)
                    .append(
                        Element::builder("item", PUBSUB_NS)
                            .attr(nc("id"), "current")
                            .append(item),
                    ),
            )
            .build();
        Some(translate::reply(iq, Ok(Some(answer))))
    }

    /// The commands `from` may run, as disco#items.
    pub(crate) fn command_items(&self, from: Option<&Jid>) -> Element {
        let mut q = Element::builder("query", ns::DISCO_ITEMS).attr(nc("node"), COMMANDS_NS);
        for (node, name, admin) in COMMANDS {
            if self.may_run(from, *admin) {
                q = q.append(
                    Element::builder("item", ns::DISCO_ITEMS)
                        .attr(nc("jid"), self.domain.as_str())
                        .attr(nc("node"), *node)
                        .attr(nc("name"), *name),
                );
            }
        }
        q.build()
    }

    /// Numbers free for registration: (label, value).
    pub(crate) fn free_numbers(&self) -> Vec<(String, String)> {
        self.offered
            .iter()
            .filter(|(account, n)| !self.users.number_taken(account, n))
            .map(|(account, n)| (format!("{n} ({account})"), n.to_string()))
            .collect()
    }

    /// Registration (XEP-0077), requests to the gateway's JID.
    pub(crate) fn answer_register(&self, iq: &Iq, payload: &Element, is_get: bool) -> Answer {
        let now = |r: Result<Option<Element>, _>| Answer::Now(vec![translate::reply(iq, r).into()]);
        let Some(from) = iq.from() else {
            return now(Err(bad("No sender.")));
        };
        let bare = from.to_bare();
        let existing = self.users.get_any(&bare);
        let open = self.registration.open_to_domain(bare.domain().as_str());
        if is_get {
            if let Some(u) = existing {
                let state = if u.approved() {
                    ""
                } else {
                    " It waits for an admin's approval."
                };
                let q = Element::builder("query", REGISTER_NS)
                    .append(Element::builder("registered", REGISTER_NS))
                    .append(Element::builder("instructions", REGISTER_NS).append(format!(
                        "You are registered with number {} (account {}).{state} To leave, unregister.",
                        u.number, u.account
                    )))
                    .append(form(
                        "form",
                        "Your registration",
                        "",
                        vec![
                            Field::new("FORM_TYPE", "hidden", "").value(REGISTER_NS),
                            Field::new("number", "fixed", "Number").value(u.number.to_string()),
                        ],
                    ))
                    .build();
                return now(Ok(Some(q)));
            }
            if !open {
                return now(Err(self.closed(&bare)));
            }
            let free = self.free_numbers();
            if free.is_empty() {
                return now(Err(error(
                    ErrorType::Wait,
                    DefinedCondition::ResourceConstraint,
                    "No number is free for registration now; ask the operator.",
                )));
            }
            let approval = if self.registration.approval {
                " An admin approves each registration."
            } else {
                ""
            };
            let instructions =
                format!("Pick the phone number your texts will come from.{approval}");
            let q = Element::builder("query", REGISTER_NS)
                .append(Element::builder("instructions", REGISTER_NS).append(instructions.clone()))
                .append(form(
                    "form",
                    "Register with the SMS gateway",
                    &instructions,
                    vec![
                        Field::new("FORM_TYPE", "hidden", "").value(REGISTER_NS),
                        Field::new("number", "list-single", "Phone number")
                            .value(free[0].1.clone())
                            .options(free)
                            .required(),
                    ],
                ))
                .build();
            return now(Ok(Some(q)));
        }
        if payload.get_child("remove", REGISTER_NS).is_some() {
            return match existing {
                None => now(Err(error(
                    ErrorType::Cancel,
                    DefinedCondition::ItemNotFound,
                    "You are not registered.",
                ))),
                Some(_) => self.ask(
                    iq,
                    None,
                    UserChange::Remove { jid: bare.clone() },
                    "You are unregistered.".into(),
                    self.farewell(&bare),
                ),
            };
        }
        if !open && existing.is_none() {
            return now(Err(self.closed(&bare)));
        }
        if existing
            .as_ref()
            .is_some_and(|u| u.origin == Origin::Config)
        {
            return now(Err(error(
                ErrorType::Cancel,
                DefinedCondition::NotAllowed,
                "You are set up by the operator in the gateway's config; your number cannot be changed here.",
            )));
        }
        let Some(x) = payload.get_child("x", DATA_NS) else {
            return now(Err(bad(
                "Fill in the registration form: field 'number' is missing.",
            )));
        };
        let values = form_values(x);
        self.register(iq, &bare, first(&values, "number"))
    }

    /// What XEP-0100 has a gateway say to a user who unregisters: it goes
    /// offline, and ends the subscriptions both ways.
    fn farewell(&self, user: &BareJid) -> Vec<Stanza> {
        let user_jid = Jid::from(user.clone());
        let mut out: Vec<Stanza> = self
            .presence(&self.domain, user.as_str(), false)
            .into_iter()
            .map(Stanza::from)
            .collect();
        for t in [PresenceType::Unsubscribe, PresenceType::Unsubscribed] {
            if let Some(me) = jid(&self.domain) {
                out.push(
                    Presence::new(t)
                        .with_from(me)
                        .with_to(user_jid.clone())
                        .into(),
                );
            }
        }
        out
    }

    fn closed(&self, bare: &BareJid) -> tokio_xmpp::parsers::stanza_error::StanzaError {
        error(
            ErrorType::Cancel,
            DefinedCondition::NotAllowed,
            format!(
                "Registration at {} is not open to users of {}; ask the operator.",
                self.domain,
                bare.domain()
            ),
        )
    }

    /// A registration for `number`, if it is one offered and free.
    fn register(&self, iq: &Iq, bare: &BareJid, number: Option<&str>) -> Answer {
        match self.registration(bare, number) {
            Ok((change, done, then)) => self.ask(iq, None, change, done, then),
            Err(why) => Answer::Now(vec![translate::reply(
                iq,
                Err(bad(format!("Field 'number': {why}"))),
            )
            .into()]),
        }
    }

    /// The change registering `bare` with `number` asks of the Gateway,
    /// what to say when it is done, and the admins' notices; or why not.
    pub(crate) fn registration(
        &self,
        bare: &BareJid,
        number: Option<&str>,
    ) -> Result<(UserChange, String, Vec<Stanza>), String> {
        let Some(typed) = number else {
            return Err("pick a number.".into());
        };
        let Ok(n) = PhoneNumber::parse(typed, None) else {
            return Err(format!("{typed:?} is not a phone number."));
        };
        let Some((account, _)) = self
            .offered
            .iter()
            .find(|(a, o)| *o == n && !self.users.number_taken(a, o))
        else {
            return Err(format!(
                "{n} is not offered for registration, or someone has it."
            ));
        };
        let approved = !self.registration.approval;
        let mut then = vec![];
        let done = if approved {
            format!("You are registered: your texts come from {n}. Write to +15557654321@{} (any number) to text it.", self.domain)
        } else {
            let ask = format!("{bare} asks to register with number {n} (account {account}). Approve or refuse it with the command \"Pending registrations\" on {}.", self.domain);
            then.extend(self.admins.iter().map(|admin| self.notice(admin, &ask)));
            format!("Your registration for {n} waits for an admin's approval; you will get a message when it is approved.")
        };
        Ok((
            UserChange::Put {
                jid: bare.clone(),
                user: StoredUser {
                    number: n,
                    account: account.clone(),
                    approved,
                },
            },
            done,
            then,
        ))
    }

    fn ask(
        &self,
        iq: &Iq,
        command: Option<(String, String)>,
        change: UserChange,
        done: String,
        then: Vec<Stanza>,
    ) -> Answer {
        if self.people().waiting.len() >= WAITING {
            return Answer::Now(vec![translate::reply(
                iq,
                Err(error(
                    ErrorType::Wait,
                    DefinedCondition::ResourceConstraint,
                    "The gateway is busy; try again in a moment.",
                )),
            )
            .into()]);
        }
        Answer::Ask(
            change,
            Box::new(Waiting {
                asker: Asker::Iq(iq.clone()),
                command,
                done,
                then,
            }),
        )
    }

    /// Asks the Gateway for `change` on behalf of a command written in
    /// chat by `user`: the answer comes in chat.
    pub(crate) fn ask_in_chat(
        &self,
        user: &BareJid,
        change: UserChange,
        done: String,
        then: Vec<Stanza>,
    ) -> Answer {
        if self.people().waiting.len() >= WAITING {
            return Answer::Now(vec![
                self.notice(user, "The gateway is busy; try again in a moment.")
            ]);
        }
        Answer::Ask(
            change,
            Box::new(Waiting {
                asker: Asker::Chat(user.clone()),
                command: None,
                done,
                then,
            }),
        )
    }

    /// Keeps `waiting` for the Gateway's answer; the ticket to send with it.
    pub(crate) fn wait_for(&self, waiting: Box<Waiting>) -> u64 {
        let mut people = self.people();
        people.next_ticket += 1;
        let t = people.next_ticket;
        people.waiting.insert(t, waiting);
        t
    }

    /// The Gateway's answer to `ticket`: the reply to what waited for it.
    pub(crate) fn done(&self, ticket: u64, result: Result<(), String>) -> Vec<Stanza> {
        let Some(w) = self.people().waiting.remove(&ticket) else {
            return vec![];
        };
        let ok = result.is_ok();
        let iq = match &w.asker {
            Asker::Iq(iq) => iq,
            Asker::Chat(user) => {
                let mut out = vec![match result {
                    Ok(()) => self.notice(user, &w.done),
                    Err(why) => self.notice(user, &format!("Not done: {why}")),
                }];
                if ok {
                    out.extend(w.then);
                }
                return out;
            }
        };
        let reply = match (&w.command, result) {
            (None, Ok(())) => translate::reply(iq, Ok(None)),
            (None, Err(why)) => translate::reply(
                iq,
                Err(error(
                    ErrorType::Cancel,
                    DefinedCondition::NotAcceptable,
                    why,
                )),
            ),
            (Some((node, session)), r) => {
                let (kind, text) = match r {
                    Ok(()) => ("info", w.done.clone()),
                    Err(why) => ("error", why),
                };
                translate::reply(iq, Ok(Some(completed(node, session, kind, &text, None))))
            }
        };
        let mut out = vec![reply.into()];
        if ok {
            if w.command.is_none() {
                // Registration: the user also reads what happens next.
                if let Some(to) = iq.from() {
                    out.push(self.notice(&to.to_bare(), &w.done));
                }
            }
            out.extend(w.then);
        }
        out
    }

    /// An ad-hoc command (XEP-0050) on the gateway's JID.
    pub(crate) fn answer_command(&self, iq: &Iq, payload: &Element) -> Answer {
        let now_err = |e| Answer::Now(vec![translate::reply(iq, Err(e)).into()]);
        let node = payload.attr("node").unwrap_or_default().to_owned();
        let Some(&(_, name, admin_only)) = COMMANDS.iter().find(|(n, _, _)| *n == node) else {
            return now_err(error(
                ErrorType::Cancel,
                DefinedCondition::ItemNotFound,
                format!("There is no command {node:?} here."),
            ));
        };
        let allowed = self.may_run(iq.from(), admin_only);
        if !allowed {
            let who = if admin_only { "admins" } else { "users" };
            return now_err(error(
                ErrorType::Auth,
                DefinedCondition::Forbidden,
                format!("\"{name}\" is for the {who} of {}.", self.domain),
            ));
        }
        let from = iq.from().expect("allowed").to_bare();
        let session = payload
            .attr("sessionid")
            .map(str::to_owned)
            .unwrap_or_else(|| self.new_id());
        let action = payload.attr("action").unwrap_or("execute");
        if action == "cancel" {
            let c = Element::builder("command", COMMANDS_NS)
                .attr(nc("node"), node.as_str())
                .attr(nc("sessionid"), session.as_str())
                .attr(nc("status"), "canceled")
                .build();
            return Answer::Now(vec![translate::reply(iq, Ok(Some(c))).into()]);
        }
        let submitted = payload
            .get_child("x", DATA_NS)
            .filter(|x| x.attr("type") == Some("submit"))
            .map(form_values);
        let Some(values) = submitted else {
            // The first step: the form (or, for reports, the answer).
            return Answer::Now(vec![self
                .command_first_step(iq, &node, &session, &from)
                .into()]);
        };
        self.command_submitted(iq, &node, &session, &from, &values)
    }

    fn executing(&self, node: &str, session: &str, x: Element) -> Element {
        Element::builder("command", COMMANDS_NS)
            .attr(nc("node"), node)
            .attr(nc("sessionid"), session)
            .attr(nc("status"), "executing")
            .append(
                Element::builder("actions", COMMANDS_NS)
                    .attr(nc("execute"), "complete")
                    .append(Element::builder("complete", COMMANDS_NS)),
            )
            .append(x)
            .build()
    }

    fn command_first_step(&self, iq: &Iq, node: &str, session: &str, from: &BareJid) -> Iq {
        let hidden = || Field::new("FORM_TYPE", "hidden", "").value(COMMANDS_NS);
        let accounts: Vec<(String, String)> = self
            .accounts
            .names()
            .into_iter()
            .map(|a| (a.clone(), a))
            .collect();
        let x = match node {
            "new-chat" => form(
                "form",
                "New chat by number",
                "Type the number as you would dial it; the contact is added to your contacts.",
                vec![
                    hidden(),
                    Field::new("number", "text-single", "Phone number").required(),
                ],
            ),
            "new-group" => form(
                "form",
                "New group text",
                "Type the numbers of the others in the group, separated by commas, as you would dial them; you are invited to the group's room.",
                vec![
                    hidden(),
                    Field::new("numbers", "text-single", "Phone numbers").required(),
                ],
            ),
            "settings" => {
                let Some(u) = self.users.get(from) else {
                    return translate::reply(iq, Err(bad("You are not a user.")));
                };
                // Clients show a fixed field's value and not its label
                // (Gajim, Profanity), so the value says what it is (#28).
                form(
                    "form",
                    "My settings",
                    "",
                    vec![
                        hidden(),
                        Field::new("number", "fixed", "Your number")
                            .value(format!("Your number: {}", u.number)),
                        Field::new("account", "fixed", "Carrier account")
                            .value(format!("Carrier account: {}", u.account)),
                        Field::new("caller_id", "boolean", "Show contacts' names (caller ID)")
                            .value(if u.caller_id { "1" } else { "0" }),
                    ],
                )
            }
            "unregister" => form(
                "form",
                "Unregister",
                "Your number goes back to the operator; texts to it no longer reach you.",
                vec![
                    hidden(),
                    Field::new("confirm", "boolean", "Unregister me")
                        .value("0")
                        .required(),
                ],
            ),
            "add-user" => form(
                "form",
                "Add user",
                "",
                vec![
                    hidden(),
                    Field::new("jid", "jid-single", "User's JID").required(),
                    Field::new("number", "text-single", "Their phone number (E.164)").required(),
                    Field::new("account", "list-single", "Carrier account")
                        .options(accounts)
                        .required(),
                ],
            ),
            "remove-user" => {
                let stored: Vec<(String, String)> = self
                    .users
                    .users()
                    .into_iter()
                    .chain(self.users.waiting())
                    .filter(|u| u.origin != Origin::Config)
                    .map(|u| (format!("{} ({})", u.jid, u.number), u.jid.to_string()))
                    .collect();
                if stored.is_empty() {
                    return translate::reply(iq, Ok(Some(completed(node, session, "info", "No user can be removed here: users of the config are removed in the config.", None))));
                }
                form(
                    "form",
                    "Remove user",
                    "Users of the config are removed in the config.",
                    vec![
                        hidden(),
                        Field::new("jid", "list-single", "User")
                            .options(stored)
                            .required(),
                    ],
                )
            }
            "pending" => {
                let waiting: Vec<(String, String)> = self
                    .users
                    .waiting()
                    .into_iter()
                    .map(|u| {
                        (
                            format!("{} ({}, {})", u.jid, u.number, u.account),
                            u.jid.to_string(),
                        )
                    })
                    .collect();
                if waiting.is_empty() {
                    return translate::reply(
                        iq,
                        Ok(Some(completed(
                            node,
                            session,
                            "info",
                            "No registration waits.",
                            None,
                        ))),
                    );
                }
                form(
                    "form",
                    "Pending registrations",
                    "",
                    vec![
                        hidden(),
                        Field::new("jid", "list-single", "Registration")
                            .options(waiting)
                            .required(),
                        Field::new("decision", "list-single", "Decision")
                            .options(vec![
                                ("Approve".into(), "approve".into()),
                                ("Refuse".into(), "refuse".into()),
                            ])
                            .value("approve")
                            .required(),
                    ],
                )
            }
            "list-users" => {
                let lines: Vec<String> = self
                    .users
                    .users()
                    .into_iter()
                    .chain(self.users.waiting())
                    .map(|u| {
                        let origin = match u.origin {
                            Origin::Config => "config",
                            Origin::Stored { approved: true } => "registered",
                            _ => "waiting for approval",
                        };
                        format!("{} {} {} ({origin})", u.jid, u.number, u.account)
                    })
                    .collect();
                let mut f = Field::new("users", "text-multi", "Users");
                for l in lines {
                    f = f.value(l);
                }
                let x = form("result", "Users", "", vec![hidden(), f]);
                return translate::reply(
                    iq,
                    Ok(Some(completed(
                        node,
                        session,
                        "info",
                        "The users of this gateway.",
                        Some(x),
                    ))),
                );
            }
            "status" => {
                let s = self
                    .status
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                let mut errors = Field::new("carrier_errors", "text-multi", "Last carrier errors");
                let recent = self.activity.recent_errors();
                if recent.is_empty() {
                    errors = errors.value("none since the start");
                }
                for e in recent {
                    errors = errors.value(e);
                }
                let roster = self
                    .people()
                    .roster_access
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ");
                let x = form(
                    "result",
                    "Gateway status",
                    "",
                    vec![
                        hidden(),
                        Field::new("link", "text-single", "XMPP link").value(s.link.clone()),
                        Field::new(
                            "unacked",
                            "text-single",
                            "Stanzas written, not yet acknowledged",
                        )
                        .value(s.unacked.to_string()),
                        Field::new("users", "text-single", "Users")
                            .value(self.users.users().len().to_string()),
                        Field::new("waiting", "text-single", "Registrations waiting")
                            .value(self.users.waiting().len().to_string()),
                        Field::new("roster", "text-single", "Servers granting roster access")
                            .value(if roster.is_empty() {
                                "none".into()
                            } else {
                                roster
                            }),
                        errors,
                    ],
                );
                return translate::reply(
                    iq,
                    Ok(Some(completed(node, session, "info", "", Some(x)))),
                );
            }
            _ => return translate::reply(iq, Err(bad("Unknown command."))),
        };
        translate::reply(iq, Ok(Some(self.executing(node, session, x))))
    }

    /// A user starts a chat with the number they typed: the contact's
    /// address, what to tell them, and the roster push (or subscription
    /// request) that puts the contact in their roster; or why not.
    pub(crate) fn start_chat(
        &self,
        from: &BareJid,
        typed: &str,
    ) -> Result<(String, String, Vec<Stanza>), String> {
        let n = self.phone.parse(typed).map_err(|e| format!("{e}."))?;
        let contact = format!("{n}@{}", self.domain);
        let user = self.users.get(from).ok_or("You are not a user.")?;
        let name = self.name_for(&n, &user.number, from);
        let mut out = vec![];
        let text = match self.roster_item(&contact, from.as_str(), name.as_deref()) {
            Some(stanzas) => {
                out.extend(stanzas);
                format!("{contact} is in your contacts now: write to it to text {n}.")
            }
            None => {
                // No roster access: the contact asks to be added, and the
                // client offers to.
                out.extend(self.ask_to_be_added(&contact, from.as_str(), name.as_deref()));
                format!("{contact} asks to be added to your contacts: accept it, and write to it to text {n}.")
            }
        };
        Ok((contact, text, out))
    }

    fn command_submitted(
        &self,
        iq: &Iq,
        node: &str,
        session: &str,
        from: &BareJid,
        values: &HashMap<String, Vec<String>>,
    ) -> Answer {
        let refuse = |t: String| Answer::Now(vec![translate::reply(iq, Err(bad(t))).into()]);
        let cmd = Some((node.to_owned(), session.to_owned()));
        let parse_jid = |var: &str| -> Result<BareJid, String> {
            let v = first(values, var).ok_or_else(|| format!("Field '{var}' is required."))?;
            sms_gateway_core::config::normalize_bare_jid(v)
                .and_then(|t| BareJid::new(&t).ok())
                .ok_or_else(|| {
                    format!("Field '{var}': {v:?} is not a bare JID such as alice@example.com.")
                })
        };
        match node {
            "new-chat" => {
                let Some(typed) = first(values, "number") else {
                    return refuse("Field 'number' is required.".into());
                };
                let (contact, text, mut out) = match self.start_chat(from, typed) {
                    Ok(started) => started,
                    Err(e) => return refuse(format!("Field 'number': {e}")),
                };
                let x = form(
                    "result",
                    "New chat",
                    "",
                    vec![Field::new("jid", "jid-single", "Write to").value(contact.clone())],
                );
                out.insert(
                    0,
                    translate::reply(
                        iq,
                        Ok(Some(completed(node, session, "info", &text, Some(x)))),
                    )
                    .into(),
                );
                Answer::Now(out)
            }
            "new-group" => {
                let Some(typed) = first(values, "numbers") else {
                    return refuse("Field 'numbers' is required.".into());
                };
                let user = self.users.get(from).expect("a user ran it");
                let numbers =
                    match sms_gateway_core::group::participants(typed, &self.phone, &user.number) {
                        Ok(n) => n,
                        Err(e) => return refuse(format!("Field 'numbers': {e}")),
                    };
                let room = format!(
                    "{}@{}",
                    sms_gateway_core::group::room_local(&numbers),
                    self.domain
                );
                let x = form(
                    "result",
                    "New group text",
                    "",
                    vec![Field::new("jid", "jid-single", "Group chat").value(room.clone())],
                );
                let text = format!("Join {room} (you are invited): what you write there goes to all of them as one group text.");
                Answer::Now(vec![
                    translate::reply(
                        iq,
                        Ok(Some(completed(node, session, "info", &text, Some(x)))),
                    )
                    .into(),
                    self.invite_to(&room, from),
                ])
            }
            "settings" => {
                let on = match first(values, "caller_id") {
                    Some("1" | "true") => true,
                    Some("0" | "false") | None => false,
                    Some(v) => {
                        return refuse(format!("Field 'caller_id': {v:?} is not a boolean."))
                    }
                };
                let done = format!("Caller ID is {}.", if on { "on" } else { "off" });
                self.ask(
                    iq,
                    cmd,
                    UserChange::CallerId {
                        jid: from.clone(),
                        on,
                    },
                    done,
                    vec![],
                )
            }
            "unregister" => match first(values, "confirm") {
                Some("1" | "true") => self.ask(
                    iq,
                    cmd,
                    UserChange::Remove { jid: from.clone() },
                    "You are unregistered.".into(),
                    self.farewell(from),
                ),
                _ => refuse("Field 'confirm': check it to unregister.".into()),
            },
            "add-user" => {
                let jid = match parse_jid("jid") {
                    Ok(j) => j,
                    Err(e) => return refuse(e),
                };
                let Some(typed) = first(values, "number") else {
                    return refuse("Field 'number' is required.".into());
                };
                let number = match PhoneNumber::parse(typed, None) {
                    Ok(n) => n,
                    Err(e) => return refuse(format!("Field 'number': {e}.")),
                };
                let Some(account) = first(values, "account").filter(|a| self.accounts.contains(a))
                else {
                    return refuse(format!(
                        "Field 'account': pick one of {}.",
                        self.accounts.names().join(", ")
                    ));
                };
                let done = format!("{jid} is a user, with number {number} on {account}.");
                self.ask(
                    iq,
                    cmd,
                    UserChange::Put {
                        jid,
                        user: StoredUser {
                            number,
                            account: account.to_owned(),
                            approved: true,
                        },
                    },
                    done,
                    vec![],
                )
            }
            "remove-user" => match parse_jid("jid") {
                Ok(jid) => {
                    let done = format!("{jid} is no longer a user.");
                    self.ask(iq, cmd, UserChange::Remove { jid }, done, vec![])
                }
                Err(e) => refuse(e),
            },
            "pending" => {
                let jid = match parse_jid("jid") {
                    Ok(j) => j,
                    Err(e) => return refuse(e),
                };
                if self.users.get_any(&jid).is_none_or(|u| u.approved()) {
                    return refuse(format!("Field 'jid': {jid} has no registration waiting."));
                }
                let tell = |text: String| vec![self.notice(&jid, &text)];
                match first(values, "decision") {
                    Some("approve") => self.ask(
                        iq,
                        cmd,
                        UserChange::Approve { jid: jid.clone() },
                        format!("{jid} is approved."),
                        tell(format!(
                            "Your registration with {} is approved: you can text now.",
                            self.domain
                        )),
                    ),
                    Some("refuse") => self.ask(
                        iq,
                        cmd,
                        UserChange::Remove { jid: jid.clone() },
                        format!("{jid}'s registration is refused."),
                        tell(format!(
                            "Your registration with {} was refused by an admin.",
                            self.domain
                        )),
                    ),
                    _ => refuse("Field 'decision': approve or refuse.".into()),
                }
            }
            // Reports have no second step.
            _ => Answer::Now(vec![self
                .command_first_step(iq, node, session, from)
                .into()]),
        }
    }
}

/// A completed command, with a note and maybe a result form.
fn completed(node: &str, session: &str, kind: &str, text: &str, x: Option<Element>) -> Element {
    let mut c = Element::builder("command", COMMANDS_NS)
        .attr(nc("node"), node)
        .attr(nc("sessionid"), session)
        .attr(nc("status"), "completed");
    if !text.is_empty() {
        c = c.append(
            Element::builder("note", COMMANDS_NS)
                .attr(nc("type"), kind)
                .append(translate::xml_safe(text).into_owned()),
        );
    }
    if let Some(x) = x {
        c = c.append(x);
    }
    c.build()
}

/// What *Gateway status* shows of the link, kept up to date by the session.
#[derive(Debug, Clone, Default)]
pub(crate) struct Status {
    pub(crate) link: String,
    pub(crate) unacked: usize,
}

impl XmppProcess {
    /// The answer to a registration or command request from anyone, as the
    /// XML written back (the Gateway's part left out): for the fuzz target.
    #[doc(hidden)]
    pub fn answer_request_for_fuzzing(&self, iq: &Iq) -> Vec<String> {
        let outbox = Outbox::default();
        match self.answer_people(iq, &outbox) {
            Some(Answer::Now(stanzas)) => stanzas.into_iter().map(translate::written).collect(),
            // Handed to the Gateway: nothing is written yet.
            Some(Answer::Ask(..)) => vec![],
            None => vec![],
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A process for the test config, with `extra` TOML at its end.
    pub(crate) fn process(extra: &str) -> XmppProcess {
        let config = Config::from_toml(&format!(
            r#"
[xmpp]
server = "127.0.0.1:5347"
domain = "sms.example.com"
secret = "s"
[http]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1/"
[phone]
default_prefix = "+1"
[providers.main]
type = "sandbox"
token = "sandbox-test-token"
registration_numbers = ["+15550002222", "+15550003333"]
[[users]]
jid = "alice@example.com"
number = "+15550001111"
provider = "main"
[admins]
jids = ["root@example.com"]
{extra}
"#
        ))
        .unwrap();
        let mut registry = sms_gateway_core::ProviderRegistry::new();
        registry.register("sandbox", sms_gateway_core::SandboxProvider::from_config);
        let providers = config.validate(&registry).unwrap();
        XmppProcess::new(&config, &providers)
    }

    fn iq(xml: &str) -> Iq {
        Iq::try_from(xml.parse::<Element>().unwrap()).unwrap()
    }

    fn answer(p: &XmppProcess, xml: &str) -> Vec<String> {
        p.answer_request_for_fuzzing(&iq(xml))
    }

    const REGISTER_GET: &str = "<iq xmlns='jabber:component:accept' type='get' id='r' from='bob@example.com/x' to='sms.example.com'><query xmlns='jabber:iq:register'/></iq>";

    fn register_set(from: &str, number: &str) -> String {
        format!("<iq xmlns='jabber:component:accept' type='set' id='r' from='{from}' to='sms.example.com'><query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'><field var='number'><value>{number}</value></field></x></query></iq>")
    }

    #[tokio::test]
    async fn registration_is_closed_unless_the_domain_is_open() {
        let closed = process("");
        let a = answer(&closed, REGISTER_GET);
        assert!(
            a[0].contains("not-allowed") && a[0].contains("not open to users of example.com"),
            "{a:?}"
        );
        let a = answer(&closed, &register_set("bob@example.com/x", "+15550002222"));
        assert!(a[0].contains("not-allowed"), "{a:?}");
        let open = process("[registration]\nopen_to = [\"Example.com\"]\n");
        let a = answer(&open, REGISTER_GET);
        assert!(
            a[0].contains("+15550002222") && a[0].contains("+15550003333"),
            "{a:?}"
        );
        // A configured user sees the registration, and cannot change it here.
        let a = answer(&open, &REGISTER_GET.replace("bob@", "alice@"));
        assert!(
            a[0].contains("<registered/>") && a[0].contains("+15550001111"),
            "{a:?}"
        );
        let a = answer(&open, &register_set("alice@example.com/x", "+15550002222"));
        assert!(a[0].contains("not-allowed"), "{a:?}");
        // Bad input names the field; a good one goes to the Gateway.
        for bad in ["", "call me", "+15550009999"] {
            let a = answer(&open, &register_set("bob@example.com/x", bad));
            assert!(
                a[0].contains("bad-request") && a[0].contains("number"),
                "{bad}: {a:?}"
            );
        }
        let a = answer(&open, &register_set("bob@example.com/x", "+1 555 000 2222"));
        assert!(a.is_empty(), "handed to the Gateway: {a:?}");
    }

    fn command(from: &str, node: &str, form: &str) -> String {
        format!("<iq xmlns='jabber:component:accept' type='set' id='c' from='{from}' to='sms.example.com'><command xmlns='http://jabber.org/protocol/commands' node='{node}'>{form}</command></iq>")
    }

    #[tokio::test]
    async fn commands_are_for_users_and_admins_and_name_bad_fields() {
        let p = process("");
        for (from, node, allowed) in [
            ("mallory@evil.example/x", "new-chat", false),
            ("alice@example.com/x", "new-chat", true),
            ("alice@example.com/x", "list-users", false),
            ("root@example.com/x", "list-users", true),
            ("root@example.com/x", "settings", false),
            ("alice@example.com/x", "no-such", false),
        ] {
            let a = answer(&p, &command(from, node, ""));
            assert_eq!(
                !a[0].contains("type=\"error\"") && !a[0].contains("type='error'"),
                allowed,
                "{from} {node}: {a:?}"
            );
        }
        let a = answer(&p, &command("mallory@evil.example/x", "new-chat", ""));
        assert!(a[0].contains("forbidden"), "{a:?}");
        // My settings: each fixed value says what it is (#28).
        let a = answer(&p, &command("alice@example.com/x", "settings", ""));
        assert!(a[0].contains("<value>Your number: +1"), "{a:?}");
        assert!(a[0].contains("<value>Carrier account: "), "{a:?}");
        let form = |fields: &str| format!("<x xmlns='jabber:x:data' type='submit'>{fields}</x>");
        let a = answer(
            &p,
            &command(
                "alice@example.com/x",
                "new-chat",
                &form("<field var='number'><value>555 765 4321</value></field>"),
            ),
        );
        assert!(
            a[0].contains("+15557654321@sms.example.com") && a[0].contains("completed"),
            "{a:?}"
        );
        assert!(
            a.iter()
                .any(|s| s.contains("type=\"subscribe\"") || s.contains("type='subscribe'")),
            "without roster access the contact asks to be added: {a:?}"
        );
        // New group text: the numbers as dialled, the room's JID back, and
        // an invitation to it; a bad number is named.
        let a = answer(
            &p,
            &command(
                "alice@example.com/x",
                "new-group",
                &form("<field var='numbers'><value>555 333 4444, (555) 111-2222</value></field>"),
            ),
        );
        let room = "+15551112222,+15553334444@sms.example.com";
        assert!(a[0].contains(room) && a[0].contains("completed"), "{a:?}");
        assert!(
            a[1].contains("jabber:x:conference") && a[1].contains(room),
            "{a:?}"
        );
        let a = answer(
            &p,
            &command(
                "alice@example.com/x",
                "new-group",
                &form("<field var='numbers'><value>555 333 4444, pizza</value></field>"),
            ),
        );
        assert!(
            a[0].contains("bad-request") && a[0].contains("pizza"),
            "{a:?}"
        );
        let a = answer(
            &p,
            &command(
                "root@example.com/x",
                "add-user",
                &form("<field var='jid'><value>not a jid@@</value></field>"),
            ),
        );
        assert!(
            a[0].contains("bad-request") && a[0].contains("'jid'"),
            "{a:?}"
        );
        let a = answer(&p, &command("root@example.com/x", "add-user", &form("<field var='jid'><value>dave@example.com</value></field><field var='number'><value>+15550004444</value></field><field var='account'><value>nope</value></field>")));
        assert!(a[0].contains("'account'") && a[0].contains("main"), "{a:?}");
        let a = answer(&p, &command("root@example.com/x", "list-users", ""));
        assert!(
            a[0].contains("alice@example.com +15550001111 main (config)"),
            "{a:?}"
        );
        let a = answer(
            &p,
            &command(
                "alice@example.com/x",
                "unregister",
                &form("<field var='confirm'><value>0</value></field>"),
            ),
        );
        assert!(a[0].contains("'confirm'"), "{a:?}");
    }

    #[tokio::test]
    async fn a_servers_privilege_message_grants_roster_pushes_and_a_refusal_takes_it_back() {
        let p = process("");
        let m = |xml: &str| Message::try_from(xml.parse::<Element>().unwrap()).unwrap();
        assert!(p
            .roster_item(
                "+15557654321@sms.example.com",
                "alice@example.com",
                Some("Jane")
            )
            .is_none());
        // Only a server may grant it.
        assert!(p.on_privilege(&m("<message xmlns='jabber:component:accept' from='mallory@example.com' to='sms.example.com'><privilege xmlns='urn:xmpp:privilege:2'><perm access='roster' type='both'/></privilege></message>")));
        assert!(p
            .roster_item(
                "+15557654321@sms.example.com",
                "alice@example.com",
                Some("Jane")
            )
            .is_none());
        assert!(p.on_privilege(&m("<message xmlns='jabber:component:accept' from='example.com' to='sms.example.com'><privilege xmlns='urn:xmpp:privilege:1'><perm access='roster' type='both'/></privilege></message>")));
        let out = p
            .roster_item(
                "+15557654321@sms.example.com",
                "alice@example.com",
                Some("Jane"),
            )
            .unwrap();
        let Stanza::Iq(set) = &out[0] else { panic!() };
        let xml = String::from(&Element::from(set.clone()));
        assert!(
            xml.contains("name=\"Jane\"") || xml.contains("name='Jane'"),
            "{xml}"
        );
        assert!(xml.contains("<group>SMS</group>"), "{xml}");
        // Refused (ejabberd 23.01): the contact asks to be added instead,
        // and the grant is not used again.
        let refused = Iq::Error {
            from: jid("alice@example.com"),
            to: jid("sms.example.com"),
            id: set.id().to_owned(),
            payload: None,
            error: translate::stanza_error(
                ErrorType::Cancel,
                DefinedCondition::InternalServerError,
                "x",
            ),
        };
        let (fallback, _) = p.roster_answer(&refused).unwrap();
        assert!(
            matches!(&fallback[..], [Stanza::Presence(p)] if p.type_ == PresenceType::Subscribe)
        );
        assert!(p
            .roster_item("+15557654321@sms.example.com", "alice@example.com", None)
            .is_none());
    }

    #[tokio::test]
    async fn one_available_presence_per_change_and_one_per_login() {
        let p = process("");
        let presence = |type_: &str| {
            let t = if type_.is_empty() {
                String::new()
            } else {
                format!(" type='{type_}'")
            };
            Presence::try_from(
                format!("<presence xmlns='jabber:component:accept'{t} from='alice@example.com/x' to='+15557654321@sms.example.com'/>")
                    .parse::<Element>()
                    .unwrap(),
            )
            .unwrap()
        };
        let available = |out: &[Presence]| {
            out.iter()
                .filter(|p| p.type_ == PresenceType::None)
                .inspect(|p| {
                    assert_eq!(
                        p.from.as_ref().map(|f| f.to_string()).as_deref(),
                        Some("+15557654321@sms.example.com/sms")
                    )
                })
                .count()
        };
        let (out, event) = p.answer_presence(&presence("subscribe"));
        assert_eq!(available(&out), 1);
        assert!(matches!(
            event,
            Some(XmppEvent::Subscription {
                subscribed: true,
                ..
            })
        ));
        // Approving the contact's request, and the server's probe after it:
        // nothing new to say.
        assert_eq!(available(&p.answer_presence(&presence("subscribed")).0), 0);
        assert_eq!(available(&p.answer_presence(&presence("probe")).0), 0);
        // The user's own presence needs no answer; a later login's probe does.
        assert_eq!(available(&p.answer_presence(&presence("")).0), 0);
        assert_eq!(available(&p.answer_presence(&presence("probe")).0), 1);
        assert_eq!(available(&p.answer_presence(&presence("probe")).0), 1);
        // A stop says unavailable once per announced pair.
        let bye = p.goodbyes();
        assert_eq!(bye.len(), 1);
        assert_eq!(bye[0].type_, PresenceType::Unavailable);
    }
}
