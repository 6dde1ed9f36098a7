//! Presence from `…/sms` (one available presence per change; `unavailable`
//! at a clean stop), and answering users' presence requests.

use super::*;

impl XmppProcess {
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
}
