//! Roster items (XEP-0356): the server's grant, pushes with names in the
//! group "SMS", their answers, and subscription requests where there is
//! no grant.

use super::*;

impl XmppProcess {
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
}
