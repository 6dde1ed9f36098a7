//! The protocol duties the XMPP process answers itself: IQs (XEP-0100,
//! vCards, upload-slot answers), presence, unreadable stanzas, names.

use super::*;
use translate::{gateway_answer, gateway_prompt, reply, vcard};

impl XmppProcess {
    /// Sends a query for [`upload::Uploads`], keeping where its answer goes.
    pub(crate) async fn send_query(&self, link: &mut Link, q: upload::Query) -> Result<(), Error> {
        // Its answer is believed: an id nobody can guess (#27).
        let id = sms_gateway_core::random_id();
        let iq = Iq::Get {
            from: jid(&self.domain),
            to: Some(q.to.clone()),
            id: id.clone(),
            payload: q.payload,
        };
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, (q.to, q.reply));
        self.send(link, iq).await
    }

    /// The answer to a query we sent, if `iq` is one: handed on.
    pub(crate) fn answered(&self, iq: &Iq) -> bool {
        let (id, from) = match iq {
            Iq::Result { id, from, .. } | Iq::Error { id, from, .. } => (id, from),
            _ => return false,
        };
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        // Only the entity asked may answer: a server bouncing the query
        // for an entity that does not exist answers from that entity's
        // address too. Anyone else on its domain is not believed (#27).
        let asked = pending
            .get(id)
            .is_some_and(|(to, _)| from.as_ref() == Some(to));
        if !asked {
            return false;
        }
        let Some((_, reply)) = pending.remove(id) else {
            return false;
        };
        let answer = match iq {
            Iq::Result { payload, .. } => Ok(payload.clone()),
            Iq::Error { error, .. } => Err(translate::describe_error(error)),
            _ => unreachable!("matched above"),
        };
        let _ = reply.send(answer);
        true
    }

    /// `name` if it is the first time `contact` writes to `user` with a
    /// name (the Gateway looks names up; the XMPP process only remembers
    /// to whom it has given each).
    pub(crate) fn first_nick(&self, contact: &str, user: &str, name: &str) -> Option<String> {
        let key = (user.to_lowercase(), contact.to_lowercase());
        let mut sent = self.nicks_sent.lock().unwrap_or_else(|p| p.into_inner());
        if sent.contains(&key) {
            return None;
        }
        sent.put(key, ());
        Some(name.to_owned())
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn on_invalid(
        &self,
        link: &mut Link,
        kind: &str,
        from: Option<String>,
        to: Option<String>,
        id: Option<String>,
        type_: Option<String>,
        error: String,
    ) -> Result<(), Error> {
        tracing::warn!(%kind, ?from, %error, "a stanza we cannot read");
        // Errors and responses are never answered; presence is not answered either.
        let answerable = match kind {
            "message" => type_.as_deref() != Some("error"),
            "iq" => matches!(type_.as_deref(), Some("get" | "set")),
            _ => false,
        };
        let (Some(from), true) = (from.as_deref().and_then(jid), answerable) else {
            return Ok(());
        };
        let to = to.as_deref().and_then(jid);
        let err = translate::stanza_error(
            ErrorType::Modify,
            DefinedCondition::BadRequest,
            format!("This {kind} could not be read: {error}"),
        );
        let stanza: Stanza = if kind == "iq" {
            Iq::Error {
                from: to,
                to: Some(from),
                id: id.unwrap_or_default(),
                payload: None,
                error: err,
            }
            .into()
        } else {
            let mut m = Message::error(from);
            m.from = to;
            m.id = id.map(Id);
            m.payloads.push(err.into());
            m.into()
        };
        self.send(link, stanza).await
    }

    /// The IQs that need our configuration: the XEP-0100 prompt and vCards.
    pub(crate) async fn answer_own_iq(&self, iq: &Iq) -> Option<Iq> {
        let (payload, is_get) = match iq {
            Iq::Get { payload, .. } => (payload, true),
            Iq::Set { payload, .. } => (payload, false),
            _ => return None,
        };
        if payload.is("query", translate::GATEWAY_NS) {
            if is_get {
                return Some(reply(iq, Ok(Some(gateway_prompt()))));
            }
            // Only users may make the gateway parse what they typed: the
            // answer is of no use to anyone else.
            if iq.from().and_then(|f| self.user_number(f)).is_none() {
                return Some(reply(
                    iq,
                    Err(translate::stanza_error(
                        ErrorType::Auth,
                        DefinedCondition::RegistrationRequired,
                        format!("Only users of {} can look up numbers.", self.domain),
                    )),
                ));
            }
            let typed = payload
                .get_child("prompt", translate::GATEWAY_NS)
                .map(|p| p.text())
                .unwrap_or_default();
            let answer = match self.phone.parse(&typed) {
                Ok(n) => Ok(Some(gateway_answer(&format!("{n}@{}", self.domain)))),
                Err(e) => Err(translate::stanza_error(
                    ErrorType::Modify,
                    DefinedCondition::NotAcceptable,
                    format!("{e}."),
                )),
            };
            return Some(reply(iq, answer));
        }
        if is_get && payload.is("pubsub", people::PUBSUB_NS) {
            return self.answer_pubsub(iq, payload);
        }
        if is_get && payload.is("vCard", translate::VCARD_NS) {
            let to = iq.to()?;
            let Some(contact) = self.contact_number(to) else {
                return Some(reply(iq, Ok(Some(vcard_for_domain()))));
            };
            // Not waited for: a vCard asked for again later has the name.
            let name = match iq.from() {
                Some(f) => self
                    .user_number(f)
                    .and_then(|n| self.name_for(&contact, &n, &f.to_bare())),
                None => None,
            };
            return Some(reply(
                iq,
                Ok(Some(vcard(contact.as_str(), name.as_deref()))),
            ));
        }
        None
    }
}

pub(crate) fn vcard_for_domain() -> tokio_xmpp::minidom::Element {
    tokio_xmpp::minidom::Element::builder("vCard", translate::VCARD_NS)
        .append(
            tokio_xmpp::minidom::Element::builder("FN", translate::VCARD_NS).append("SMS gateway"),
        )
        .build()
}

impl XmppProcess {
    /// Registration, commands and the commands' list: the requests the
    /// people module answers, if `iq` is one.
    pub(crate) fn answer_people(&self, iq: &Iq, outbox: &Outbox) -> Option<people::Answer> {
        let (payload, is_get) = match iq {
            Iq::Get { payload, .. } => (payload, true),
            Iq::Set { payload, .. } => (payload, false),
            _ => return None,
        };
        let on_domain = iq.to().is_none_or(|t| t.node().is_none());
        if !on_domain {
            return None;
        }
        if payload.is("query", people::REGISTER_NS) {
            return Some(self.answer_register(iq, payload, is_get));
        }
        if !is_get && payload.is("command", people::COMMANDS_NS) {
            self.status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .unacked = outbox.unacked_stanzas();
            return Some(self.answer_command(iq, payload));
        }
        if is_get
            && payload.is("query", tokio_xmpp::parsers::ns::DISCO_ITEMS)
            && payload.attr("node") == Some(people::COMMANDS_NS)
        {
            let items = self.command_items(iq.from());
            return Some(people::Answer::Now(vec![reply(iq, Ok(Some(items))).into()]));
        }
        None
    }

    /// Sends what answers now, or hands the change to the Gateway.
    pub(crate) async fn carry_out(
        &self,
        link: &mut Link,
        answer: people::Answer,
        outbox: &mut crate::outbox::Outbox,
    ) -> Result<(), Error> {
        match answer {
            people::Answer::Now(stanzas) => {
                for s in stanzas {
                    self.send(link, s).await?;
                }
                Ok(())
            }
            people::Answer::Ask(change, waiting) => {
                let ticket = self.wait_for(waiting);
                self.hand_on(link, outbox, XmppEvent::Users { change, ticket })
                    .await
            }
        }
    }
}
