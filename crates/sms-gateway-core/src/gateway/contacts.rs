//! What the Gateway keeps of each user's contacts, and the users' own
//! changes (registration, commands, settings).
//!
//! Per (user, contact) it remembers, in the store ([`ENTRY_CONTACT`]):
//! - the last other form of the contact's address the user wrote to
//!   (`5557654321@…` rather than `+15557654321@…`), so the user is told
//!   once per form that the contact's one address is the E.164 one, which
//!   every reply comes from (#28: one person, one conversation);
//! - whether the user is subscribed to the contact's presence, so the
//!   contact is announced available again after a restart;
//! - the name last given to the user's roster (XEP-0356), so it is given
//!   once, and again only when caller ID learns a different one;
//! - whether the contact has opted out of the user's texts (texted STOP, or
//!   a send failed with the carrier's opt-out code), so a chat to them is
//!   refused at once, until they text START (#31).

use super::{Action, Gateway, User};
use crate::directory::{Settings, StoredUser};
use crate::message::{OutgoingStanza, UserChange};
use crate::phone::PhoneNumber;
use crate::store::{StoreError, Transaction, ENTRY_CONTACT, ENTRY_SETTINGS, ENTRY_USER};
use serde::{Deserialize, Serialize};

/// The most contacts kept per user: past it, new ones are not remembered
/// (texts still go and come; the JID form, subscription and roster name of
/// those contacts are not kept). A user subscribing to numbers by the
/// million cannot grow the store without bound.
pub(crate) const MAX_CONTACTS: usize = 10_000;

/// What is kept of one contact of one user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Contact {
    /// The last local part other than the number's E.164 form the user
    /// wrote to (and was told about).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    local: Option<String>,
    /// The user is subscribed to the contact's presence.
    #[serde(default)]
    subscribed: bool,
    /// The name given to the user's roster (`Some(None)`: given, nameless).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rostered: Option<Option<String>>,
    /// The contact opted out of texts from the user's number.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    opted_out: bool,
}

impl Contact {
    /// The user wrote to `local@…` for `number`: whether to tell them the
    /// contact's one address (a form other than the E.164 one, and not the
    /// form they were last told about).
    fn written_as(&mut self, local: &str, number: &PhoneNumber) -> bool {
        if local == number.as_str() || self.local.as_deref() == Some(local) {
            return false;
        }
        self.local = Some(local.to_owned());
        true
    }
}

/// The store key of (user, contact); the gateway's own JID has no number.
fn key(user: &str, number: Option<&PhoneNumber>) -> String {
    match number {
        // Joined, not format!ted: this runs for every text (#30).
        Some(n) => [user, "|", n.as_str()].concat(),
        None => [user, "|"].concat(),
    }
}

impl Gateway {
    /// Reads the stored users, settings and contacts (at start), and
    /// returns the presence that tells each user its subscribed contacts
    /// (and the gateway) are available.
    pub fn load_people(&self) -> Result<Vec<Action>, StoreError> {
        self.routing.users.load(
            &self.store.entries(ENTRY_USER)?,
            &self.store.entries(ENTRY_SETTINGS)?,
        );
        self.load_rooms()?;
        let mut actions = vec![];
        let mut state = self.state();
        for (k, v) in self.store.entries(ENTRY_CONTACT)? {
            let Ok(contact) = serde_json::from_str::<Contact>(&v) else {
                tracing::error!(key = %k, "skipping an unreadable contact in the store");
                continue;
            };
            if contact.subscribed {
                if let Some((user, number)) = k.split_once('|') {
                    let from = match PhoneNumber::parse(number, None) {
                        Ok(n) => self.routing.contact_jid(&n),
                        Err(_) => self.routing.domain.clone(),
                    };
                    actions.push(Action::Xmpp(OutgoingStanza::Presence {
                        from,
                        to: user.to_owned(),
                        available: true,
                    }));
                }
            }
            if let Some((user, _)) = k.split_once('|') {
                *state.contacts_per_user.entry(user.to_owned()).or_default() += 1;
            }
            state.opted_out += usize::from(contact.opted_out);
            state.contacts.insert(k, contact);
        }
        Ok(actions)
    }

    fn put_contact(
        &self,
        tx: &mut dyn Transaction,
        k: &str,
        contact: &Contact,
    ) -> Result<(), StoreError> {
        let user = k.split_once('|').map(|(u, _)| u).unwrap_or(k);
        {
            let mut state = self.state();
            if !state.contacts.contains_key(k) {
                let n = state.contacts_per_user.entry(user.to_owned()).or_default();
                if *n >= MAX_CONTACTS {
                    tracing::warn!(%user, max = MAX_CONTACTS, "a user has too many contacts; a new one is not remembered");
                    return Ok(());
                }
                *n += 1;
            }
        }
        let json = serde_json::to_string(contact).expect("a contact serialises");
        tx.put_entry(ENTRY_CONTACT, k, Some(&json))?;
        let mut state = self.state();
        let was = state.contacts.insert(k.to_owned(), contact.clone());
        let was = was.is_some_and(|c| c.opted_out);
        state.opted_out = state.opted_out + usize::from(contact.opted_out) - usize::from(was);
        Ok(())
    }

    /// Changes what is kept of contact `k` with `change`, storing it if it
    /// changed; what is kept now.
    fn change_contact(
        &self,
        tx: &mut dyn Transaction,
        k: &str,
        change: impl FnOnce(&mut Contact),
    ) -> Contact {
        let old = self.state().contacts.get(k).cloned();
        let mut contact = old.clone().unwrap_or_default();
        change(&mut contact);
        if old.as_ref() != Some(&contact) {
            if let Err(e) = self.put_contact(tx, k, &contact) {
                tracing::error!(error = %e, "cannot store a contact");
            }
        }
        contact
    }

    /// Notes that `user` and `number` are in touch (the user wrote to
    /// `local@…`, or the number texted the user): remembers the JID form,
    /// and asks for a roster item when the contact is new to the user's
    /// roster or its name has changed. Returns the contact's JID for this
    /// user, and the roster item if any.
    pub(crate) fn note_contact(
        &self,
        tx: &mut dyn Transaction,
        user: &User,
        number: &PhoneNumber,
        local: Option<&str>,
    ) -> (String, Vec<Action>) {
        // Never waits: a name still being looked up comes with a later text.
        let name = if user.caller_id {
            self.routing.users.names().name_now(number, &user.number)
        } else {
            Some(None)
        };
        let k = key(user.jid.as_str(), Some(number));
        let mut renamed = None;
        let mut tell = false;
        self.change_contact(tx, &k, |contact| {
            if let Some(local) = local {
                tell = contact.written_as(local, number);
            }
            // A contact new to the roster goes in at once, with the name
            // if it is known yet; a name learned later (the lookup was
            // still running) renames it.
            let name = match (name, &contact.rostered) {
                (Some(name), _) => Some(name),
                (None, None) => Some(None),
                (None, Some(_)) => None,
            };
            if let Some(name) = name.filter(|n| contact.rostered.as_ref() != Some(n)) {
                contact.rostered = Some(name.clone());
                renamed = Some(name);
            }
        });
        let jid = self.routing.contact_jid(number);
        let mut actions: Vec<Action> = renamed
            .map(|name| {
                Action::Xmpp(OutgoingStanza::RosterItem {
                    contact: jid.clone(),
                    user: user.jid.to_string(),
                    name,
                })
            })
            .into_iter()
            .collect();
        // Written to another form of the address: the text goes, and the
        // user is told, in that window, where the contact's conversation
        // is (once per form). A `redirect` error instead would make them
        // type the text again; every reply comes from the one address.
        if let (true, Some(local)) = (tell, local) {
            actions.push(Action::Xmpp(OutgoingStanza::Chat {
                from: format!("{local}@{}", self.routing.domain),
                to: user.jid.to_string(),
                body: format!(
                    "Your text is on its way. This contact's address is {jid}: replies come from there, so write to that address to keep one conversation."
                ),
                media_url: None,
                nick: None,
                inbound_id: None,
                stable_id: None,
            }));
        }
        (jid, actions)
    }

    /// Whether `number` has opted out of `user`'s texts.
    pub(crate) fn opted_out(&self, user: &str, number: &PhoneNumber) -> bool {
        let state = self.state();
        state.opted_out > 0
            && state
                .contacts
                .get(&key(user, Some(number)))
                .is_some_and(|c| c.opted_out)
    }

    /// Marks (`out`) or clears `number`'s opt-out of `user`'s texts, kept in
    /// the store; whether it changed.
    pub(crate) fn set_opted_out(
        &self,
        tx: &mut dyn Transaction,
        user: &str,
        number: &PhoneNumber,
        out: bool,
    ) -> bool {
        let mut changed = false;
        self.change_contact(tx, &key(user, Some(number)), |c| {
            changed = c.opted_out != out;
            c.opted_out = out;
        });
        if changed {
            tracing::info!(%user, %number, opted_out = out, "a contact's opt-out changed");
        }
        changed
    }

    /// Caller ID has just found `contact`'s name for the user(s) whose
    /// number is `user_number`: the contact is renamed in the rosters of
    /// those who are in touch with it.
    pub(crate) fn on_name_learned(
        &self,
        tx: &mut dyn Transaction,
        contact: &PhoneNumber,
        user_number: &PhoneNumber,
    ) -> Vec<Action> {
        let mut actions = vec![];
        for user in self.routing.users.users() {
            let in_touch = self
                .state()
                .contacts
                .contains_key(&key(user.jid.as_str(), Some(contact)));
            if user.number == *user_number && in_touch {
                actions.extend(self.note_contact(tx, &user, contact, None).1);
            }
        }
        actions
    }

    /// A user's presence subscription to a contact (or the gateway) began
    /// or ended.
    pub(crate) fn on_subscription(
        &self,
        tx: &mut dyn Transaction,
        from: &str,
        to: &str,
        subscribed: bool,
    ) -> Vec<Action> {
        let Some(user) = self.routing.user(from) else {
            return vec![];
        };
        let number = match to.split_once('@') {
            Some((local, _)) => match self.routing.phone.parse(local) {
                Ok(n) => Some((n, local)),
                Err(_) => return vec![],
            },
            None => None,
        };
        let k = key(user.jid.as_str(), number.as_ref().map(|(n, _)| n));
        self.change_contact(tx, &k, |contact| {
            contact.subscribed = subscribed;
            if let (Some((n, local)), true) = (&number, subscribed) {
                contact.written_as(local, n);
            }
        });
        vec![]
    }

    /// A change to the users; the answer goes back with `ticket`.
    pub(crate) fn on_users(
        &self,
        tx: &mut dyn Transaction,
        change: UserChange,
        ticket: u64,
    ) -> Vec<Action> {
        // A user who may text now gets the gateway in the roster (XEP-0100:
        // the gateway is a contact too, and shows online).
        let welcome = match &change {
            UserChange::Put { jid, user } if user.approved => Some(jid.to_string()),
            UserChange::Approve { jid } => Some(jid.to_string()),
            _ => None,
        };
        let result = self.change_users(tx, change);
        if let Err(e) = &result {
            tracing::info!(reason = %e, "a change to the users was refused");
        }
        let ok = result.is_ok();
        let mut actions = vec![Action::Xmpp(OutgoingStanza::Done { ticket, result })];
        if let Some(user) = welcome.filter(|_| ok) {
            actions.push(Action::Xmpp(OutgoingStanza::RosterItem {
                contact: self.routing.domain.clone(),
                user,
                name: Some("SMS gateway".into()),
            }));
        }
        actions
    }

    fn change_users(&self, tx: &mut dyn Transaction, change: UserChange) -> Result<(), String> {
        let users = &self.routing.users;
        match change {
            UserChange::Put { jid, user } => {
                store_user(tx, users, &jid, &user)?;
                tracing::info!(%jid, number = %user.number, account = %user.account, approved = user.approved, "user stored");
            }
            UserChange::Approve { jid } => {
                let Some(u) = users.get_any(&jid) else {
                    return Err(format!("{jid} has no registration."));
                };
                let stored = StoredUser {
                    number: u.number.clone(),
                    account: u.account.clone(),
                    approved: true,
                };
                store_user(tx, users, &jid, &stored)?;
                tracing::info!(%jid, "registration approved");
            }
            UserChange::Remove { jid } => {
                users.remove_stored(&jid).map_err(|e| e.0)?;
                tx.put_entry(ENTRY_USER, jid.as_str(), None)
                    .map_err(store_failed)?;
                tx.put_entry(ENTRY_SETTINGS, jid.as_str(), None)
                    .map_err(store_failed)?;
                tracing::info!(%jid, "user removed");
            }
            UserChange::CallerId { jid, on } => {
                users.set_caller_id(&jid, on).map_err(|e| e.0)?;
                let json =
                    serde_json::to_string(&Settings { caller_id: on }).expect("settings serialise");
                tx.put_entry(ENTRY_SETTINGS, jid.as_str(), Some(&json))
                    .map_err(store_failed)?;
            }
        }
        Ok(())
    }
}

/// A store failure, logged, in words for the user.
fn store_failed(e: StoreError) -> String {
    tracing::error!(error = %e, "cannot store a change to the users");
    "The gateway could not store this change; try again later.".to_owned()
}

/// Puts `user` in the directory (which may refuse it, saying why) and in
/// the store.
fn store_user(
    tx: &mut dyn Transaction,
    users: &crate::directory::Directory,
    jid: &jid::BareJid,
    user: &StoredUser,
) -> Result<(), String> {
    users.put_stored(jid, user).map_err(|e| e.0)?;
    let json = serde_json::to_string(user).expect("a user serialises");
    tx.put_entry(ENTRY_USER, jid.as_str(), Some(&json))
        .map_err(store_failed)
}
