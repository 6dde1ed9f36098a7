//! vCard4 over PubSub (XEP-0292): the contact's name and number.

use super::*;

impl XmppProcess {
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
}
