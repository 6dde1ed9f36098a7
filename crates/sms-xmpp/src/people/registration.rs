//! In-band registration (XEP-0077) on the gateway's JID: the form, the
//! free numbers, a registration asked of the Gateway, unregistering.

use super::*;
use tokio_xmpp::parsers::ibr::FormQuery;

impl XmppProcess {
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
                        DataFormType::Form,
                        "Your registration",
                        "",
                        vec![
                            Field::new("FORM_TYPE", FieldType::Hidden, "").value(REGISTER_NS),
                            Field::new("number", FieldType::Fixed, "Number").value(u.number.to_string()),
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
            // XEP-0077 with a data form, as xmpp-parsers writes it; the
            // legacy instructions for clients that do not read forms.
            let q = FormQuery {
                instructions: Some(instructions.clone()),
                form: data_form(
                    DataFormType::Form,
                    "Register with the SMS gateway",
                    &instructions,
                    vec![
                        Field::new("FORM_TYPE", FieldType::Hidden, "").value(REGISTER_NS),
                        Field::new("number", FieldType::ListSingle, "Phone number")
                            .value(free[0].1.clone())
                            .options(free)
                            .required(),
                    ],
                ),
            };
            return now(Ok(Some(q.into())));
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
        if let Some(e) = self.registration_refused(&bare) {
            return now(Err(e));
        }
        let Some(x) = payload.get_child("x", DATA_NS) else {
            return now(Err(bad(
                "Fill in the registration form: field 'number' is missing.",
            )));
        };
        let values = match form_values(x) {
            Ok(values) => values,
            Err(why) => return now(Err(bad(why))),
        };
        self.register(iq, &bare, first(&values, "number"))
    }

    /// What XEP-0100 has a gateway say to a user who unregisters: it goes
    /// offline, and ends the subscriptions both ways.
    pub(super) fn farewell(&self, user: &BareJid) -> Vec<Stanza> {
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

    /// Why `bare` may not register (or change its number) here, if so:
    /// registration is closed to its server, or it is a user of the config.
    /// For in-band registration and the `register` chat command alike.
    pub(crate) fn registration_refused(
        &self,
        bare: &BareJid,
    ) -> Option<tokio_xmpp::parsers::stanza_error::StanzaError> {
        let existing = self.users.get_any(bare);
        if existing.is_none() && !self.registration.open_to_domain(bare.domain().as_str()) {
            return Some(self.closed(bare));
        }
        if existing.is_some_and(|u| u.origin == Origin::Config) {
            return Some(error(
                ErrorType::Cancel,
                DefinedCondition::NotAllowed,
                "You are set up by the operator in the gateway's config; your number cannot be changed here.",
            ));
        }
        None
    }

    pub(super) fn closed(&self, bare: &BareJid) -> tokio_xmpp::parsers::stanza_error::StanzaError {
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
    pub(super) fn register(&self, iq: &Iq, bare: &BareJid, number: Option<&str>) -> Answer {
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
}
