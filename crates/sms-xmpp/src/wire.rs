//! Message stanzas written without xso's derived serialiser (#30).
//!
//! Every chat the gateway writes is a `<message/>`. xmpp-parsers' derived
//! `AsXml` for `Stanza` is a state machine of nested enums which is moved
//! whole for every item it gives (measured with callgrind: some 30,000
//! instructions per round trip, half of them `memcpy`). [`MessageXml`]
//! gives the same items from a small state, deferring to the derived code
//! only for the parts it does not spell out (`<thread/>` and the payloads,
//! which are minidom elements). The stream's encoder still escapes and
//! checks every name and text, so what it can write is what xso could; a
//! test writes a range of messages both ways and compares the bytes.

use std::borrow::Cow;
use std::collections::btree_map;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::message::{Lang, Message, Thread};
use tokio_xmpp::parsers::ns;
use xso::exports::rxml::{Namespace, NcNameStr};
use xso::{error::Error, AsOptionalXmlText, AsXml, Item};

/// A message, to be written by [`MessageItems`].
pub struct MessageXml<'a>(pub &'a Message);

impl AsXml for MessageXml<'_> {
    type ItemIter<'x>
        = MessageItems<'x>
    where
        Self: 'x;

    fn as_xml_iter(&self) -> Result<MessageItems<'_>, Error> {
        Ok(MessageItems {
            message: self.0,
            step: Step::Head,
            texts: self.0.bodies.iter(),
            text: None,
            subjects: false,
            inner: None,
            payloads: self.0.payloads.iter(),
        })
    }
}

/// Where [`MessageItems`] is.
#[derive(Clone, Copy)]
enum Step {
    Head,
    From,
    To,
    Id,
    Type,
    HeadEnd,
    /// `<body/>`s, then `<subject/>`s.
    Texts,
    Thread,
    Payloads,
    Foot,
    Done,
}

/// Where a `<body/>` or `<subject/>` is.
#[derive(Clone, Copy)]
enum TextStep {
    Lang,
    HeadEnd,
    Text,
    Foot,
}

/// The items of a message, as xso's derived serialiser gives them.
pub struct MessageItems<'x> {
    message: &'x Message,
    step: Step,
    /// The bodies, then the subjects.
    texts: btree_map::Iter<'x, Lang, String>,
    text: Option<(&'x Lang, &'x String, TextStep)>,
    /// `texts` is on the subjects.
    subjects: bool,
    /// The thread's or a payload's own items.
    inner: Option<Inner<'x>>,
    payloads: std::slice::Iter<'x, Element>,
}

enum Inner<'x> {
    Thread(<Thread as AsXml>::ItemIter<'x>),
    Payload(<Element as AsXml>::ItemIter<'x>),
}

const MESSAGE_NS: Namespace<'static> = Namespace::from_str(ns::DEFAULT_NS);

fn name(s: &'static str) -> Cow<'static, NcNameStr> {
    // The names below are constants, valid NCNames (the tests write each).
    Cow::Borrowed(<&NcNameStr>::try_from(s).unwrap_or_else(|_| unreachable!("{s}")))
}

fn attribute<'x>(
    ns: Namespace<'static>,
    key: &'static str,
    value: Result<Option<Cow<'x, str>>, Error>,
) -> Option<Result<Item<'x>, Error>> {
    match value {
        Ok(Some(v)) => Some(Ok(Item::Attribute(ns, name(key), v))),
        Ok(None) => None,
        Err(e) => Some(Err(e)),
    }
}

impl<'x> Iterator for MessageItems<'x> {
    type Item = Result<Item<'x>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let m = self.message;
            let item = match self.step {
                Step::Head => {
                    self.step = Step::From;
                    Some(Ok(Item::ElementHeadStart(MESSAGE_NS, name("message"))))
                }
                Step::From => {
                    self.step = Step::To;
                    attribute(Namespace::NONE, "from", m.from.as_optional_xml_text())
                }
                Step::To => {
                    self.step = Step::Id;
                    attribute(Namespace::NONE, "to", m.to.as_optional_xml_text())
                }
                Step::Id => {
                    self.step = Step::Type;
                    attribute(Namespace::NONE, "id", m.id.as_optional_xml_text())
                }
                Step::Type => {
                    self.step = Step::HeadEnd;
                    attribute(Namespace::NONE, "type", m.type_.as_optional_xml_text())
                }
                Step::HeadEnd => {
                    self.step = Step::Texts;
                    Some(Ok(Item::ElementHeadEnd))
                }
                Step::Texts => self.next_text(),
                Step::Thread => match &mut self.inner {
                    Some(Inner::Thread(items)) => match items.next() {
                        None => {
                            self.inner = None;
                            self.step = Step::Payloads;
                            None
                        }
                        item => item,
                    },
                    _ => match &m.thread {
                        Some(thread) => match thread.as_xml_iter() {
                            Ok(items) => {
                                self.inner = Some(Inner::Thread(items));
                                None
                            }
                            Err(e) => Some(Err(e)),
                        },
                        None => {
                            self.step = Step::Payloads;
                            None
                        }
                    },
                },
                Step::Payloads => match &mut self.inner {
                    Some(Inner::Payload(items)) => match items.next() {
                        None => {
                            self.inner = None;
                            None
                        }
                        item => item,
                    },
                    _ => match self.payloads.next() {
                        Some(payload) => match payload.as_xml_iter() {
                            Ok(items) => {
                                self.inner = Some(Inner::Payload(items));
                                None
                            }
                            Err(e) => Some(Err(e)),
                        },
                        None => {
                            self.step = Step::Foot;
                            None
                        }
                    },
                },
                Step::Foot => {
                    self.step = Step::Done;
                    Some(Ok(Item::ElementFoot))
                }
                Step::Done => return None,
            };
            if item.is_some() {
                return item;
            }
        }
    }
}

impl<'x> MessageItems<'x> {
    /// The next item of the bodies and subjects; `None` to go on.
    fn next_text(&mut self) -> Option<Result<Item<'x>, Error>> {
        let Some((lang, text, step)) = self.text else {
            match self.texts.next() {
                Some((lang, text)) => {
                    self.text = Some((lang, text, TextStep::Lang));
                    let tag = if self.subjects { "subject" } else { "body" };
                    return Some(Ok(Item::ElementHeadStart(MESSAGE_NS, name(tag))));
                }
                None if !self.subjects => {
                    self.subjects = true;
                    self.texts = self.message.subjects.iter();
                }
                None => self.step = Step::Thread,
            }
            return None;
        };
        let (next, item) = match step {
            TextStep::Lang => (
                TextStep::HeadEnd,
                attribute(Namespace::XML, "lang", lang.as_optional_xml_text()),
            ),
            TextStep::HeadEnd => (TextStep::Text, Some(Ok(Item::ElementHeadEnd))),
            TextStep::Text => (TextStep::Foot, Some(Ok(Item::Text(Cow::Borrowed(text))))),
            TextStep::Foot => {
                self.text = None;
                return Some(Ok(Item::ElementFoot));
            }
        };
        self.text = Some((lang, text, next));
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_xmpp::jid::Jid;
    use tokio_xmpp::parsers::message::{Id, MessageType};
    use tokio_xmpp::Stanza;

    /// Writes items as the stream does: rxml's encoder, the stream's
    /// namespace declared up front.
    fn encode<'x>(items: impl Iterator<Item = Result<Item<'x>, Error>>) -> Result<Vec<u8>, String> {
        use xso::exports::rxml::writer::{Encoder, SimpleNamespaces, TrackNamespace};
        let mut enc = Encoder::<SimpleNamespaces>::new();
        enc.ns_tracker_mut()
            .declare_fixed(None, ns::DEFAULT_NS.into());
        let mut out = bytes::BytesMut::new();
        for item in items {
            let item = item.map_err(|e| e.to_string())?;
            enc.encode_into_bytes(item.as_rxml_item(), &mut out)
                .map_err(|e| e.to_string())?;
        }
        Ok(out.to_vec())
    }

    fn both_ways(m: &Message) -> (Result<Vec<u8>, String>, Result<Vec<u8>, String>) {
        let stanza = Stanza::Message(m.clone());
        let derived = encode(stanza.as_xml_iter().unwrap());
        let ours = encode(MessageXml(m).as_xml_iter().unwrap());
        (derived, ours)
    }

    fn jid(s: &str) -> Jid {
        Jid::new(s).unwrap()
    }

    #[test]
    fn messages_are_written_as_xmpp_parsers_writes_them() {
        let mut all = vec![Message::new(None)];
        let mut m = Message::chat(jid("alice@example.com/phone"));
        m.from = Some(jid("+15557654321@sms.example.com"));
        m.id = Some(Id("a<b>&'\"c".into()));
        m.bodies
            .insert(Lang::new(), "hello <world> & \"you\" ✓ 🙂".into());
        all.push(m.clone());
        m.bodies.insert(Lang::from("de"), "hallo".into());
        m.bodies.insert(Lang::from("en"), String::new());
        m.subjects.insert(Lang::new(), "sub".into());
        m.subjects.insert(Lang::from("fr"), "sujet".into());
        all.push(m.clone());
        m.thread = Some(Thread {
            parent: Some("p".into()),
            id: "t1".into(),
        });
        m.payloads.push(
            Element::builder("origin-id", "urn:xmpp:sid:0")
                .attr("id".try_into().unwrap(), "x1")
                .build(),
        );
        m.payloads
            .push(Element::builder("request", "urn:xmpp:receipts").build());
        m.payloads.push(
            Element::builder("x", "jabber:x:oob")
                .append(
                    Element::builder("url", "jabber:x:oob")
                        .append("https://e/x?a=1&b=2")
                        .build(),
                )
                .build(),
        );
        all.push(m.clone());
        for t in [
            MessageType::Normal,
            MessageType::Groupchat,
            MessageType::Headline,
            MessageType::Error,
        ] {
            m.type_ = t;
            all.push(m.clone());
        }
        let mut only_payload = Message::new(Some(jid("bob@example.com")));
        only_payload.payloads.push(
            Element::builder("received", "urn:xmpp:receipts")
                .attr("id".try_into().unwrap(), "r")
                .build(),
        );
        all.push(only_payload);
        for m in &all {
            let (derived, ours) = both_ways(m);
            let derived = derived.unwrap();
            assert_eq!(
                String::from_utf8_lossy(&ours.unwrap()),
                String::from_utf8_lossy(&derived)
            );
        }
    }

    /// What XML cannot carry is refused, as by the derived writer.
    #[test]
    fn a_body_xml_cannot_carry_is_refused_both_ways() {
        let mut m = Message::chat(jid("alice@example.com"));
        m.bodies.insert(Lang::new(), "form\u{c}feed".into());
        let (derived, ours) = both_ways(&m);
        assert!(derived.is_err());
        assert!(ours.is_err());
    }
}
