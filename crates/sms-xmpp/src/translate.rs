//! Stanzas ⇄ core events, and the protocol duties the XMPP process answers
//! itself (ping, disco, unknown IQs). Pure functions, tested on their own.

use sms_gateway_core::{ChatMessage, ErrorCondition, OutgoingStanza, XmppEvent};
use std::borrow::Cow;
use std::collections::BTreeSet;
use tokio_xmpp::jid::Jid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::disco::{DiscoInfoResult, DiscoItemsResult, Identity};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Id, Lang, Message, MessageType};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::oob::Oob;
use tokio_xmpp::parsers::receipts::Received;
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};
use tokio_xmpp::Stanza;

/// Features announced in `disco#info` on the domain and on contacts.
/// XEP-0100's namespace.
pub const GATEWAY_NS: &str = "jabber:iq:gateway";
/// XEP-0054's namespace.
pub const VCARD_NS: &str = "vcard-temp";
/// XEP-0172's namespace.
pub const NICK_NS: &str = "http://jabber.org/protocol/nick";

/// Features announced in `disco#info` on the domain and on contacts.
pub const FEATURES: &[&str] = &[
    ns::DISCO_INFO,
    ns::DISCO_ITEMS,
    GATEWAY_NS,
    ns::PING,
    ns::RECEIPTS,
    ns::OOB,
    VCARD_NS,
    crate::reactions::REACTIONS_NS,
];

/// Features announced on the gateway's own JID besides [`FEATURES`]:
/// registration (XEP-0077), ad-hoc commands (XEP-0050) and extended
/// addressing of group texts (XEP-0033, as Cheogram uses it).
pub const DOMAIN_FEATURES: &[&str] = &[
    "jabber:iq:register",
    "http://jabber.org/protocol/commands",
    crate::muc::ADDRESS_NS,
];

/// The most addresses read from one XEP-0033 `<addresses/>`.
const MAX_ADDRESSES: usize = 32;

/// Whether XML 1.0 can carry `c` (its `Char` production; Rust strings hold
/// no surrogates). Most C0 controls, U+FFFE and U+FFFF are out.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// `s` with every character XML 1.0 cannot carry replaced by U+FFFD.
///
/// Every string from outside that goes into a stanza passes here once:
/// bodies, media URLs, error texts, names, vCard fields. An SMS may hold a
/// form feed or any other control character, and the XML writer refuses a
/// stanza that carries one (invariant 6: one text never stops the relay).
pub fn xml_safe(s: &str) -> Cow<'_, str> {
    // Most text is ASCII without controls: passed by bytes (#30).
    if s.bytes()
        .all(|b| (0x20..0x80).contains(&b) || matches!(b, b'\t' | b'\n' | b'\r'))
        || s.chars().all(is_xml_char)
    {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(
            s.chars()
                .map(|c| if is_xml_char(c) { c } else { '\u{FFFD}' })
                .collect(),
        )
    }
}

/// [`xml_safe`] for a value that is kept.
fn clean(s: &str) -> String {
    xml_safe(s).into_owned()
}

/// An XEP-0172 `<nick/>`.
pub fn nick(name: &str) -> Element {
    Element::builder("nick", NICK_NS)
        .append(clean(name))
        .build()
}

/// The XEP-0100 prompt: what to type to add a contact.
pub fn gateway_prompt() -> Element {
    Element::builder("query", GATEWAY_NS)
        .append(Element::builder("desc", GATEWAY_NS).append(
            "Enter the phone number of the person to text, with its country code (+1 555 765 4321) or as you would dial it locally.",
        ))
        .append(Element::builder("prompt", GATEWAY_NS).append("Phone number"))
        .build()
}

/// The XEP-0100 answer: the contact JID for what the user typed. Both the
/// current `<jid/>` and the legacy `<prompt/>` carry it.
pub fn gateway_answer(jid: &str) -> Element {
    Element::builder("query", GATEWAY_NS)
        .append(Element::builder("jid", GATEWAY_NS).append(clean(jid)))
        .append(Element::builder("prompt", GATEWAY_NS).append(clean(jid)))
        .build()
}

/// An XEP-0054 vCard for a contact: its name (if known) and number.
pub fn vcard(number: &str, name: Option<&str>) -> Element {
    let (number, name) = (clean(number), name.map(clean));
    let (number, name) = (number.as_str(), name.as_deref());
    let mut b = Element::builder("vCard", VCARD_NS)
        .append(Element::builder("FN", VCARD_NS).append(name.unwrap_or(number)));
    if let Some(name) = name {
        b = b.append(Element::builder("NICKNAME", VCARD_NS).append(name));
    }
    b.append(
        Element::builder("TEL", VCARD_NS)
            .append(Element::builder("CELL", VCARD_NS))
            .append(Element::builder("NUMBER", VCARD_NS).append(number)),
    )
    .build()
}

/// A stanza error element.
pub fn stanza_error(
    type_: ErrorType,
    cond: DefinedCondition,
    text: impl Into<String>,
) -> StanzaError {
    StanzaError::new(type_, cond, "en", clean(&text.into()))
}

/// A stanza error in words: its condition and text (cut short), for logs
/// and for the user.
pub(crate) fn describe_error(e: &StanzaError) -> String {
    let condition = format!("{:?}", e.defined_condition);
    match e.texts.values().next() {
        Some(text) => format!(
            "{condition}: {}",
            sms_gateway_core::text::excerpt(text, 120)
        ),
        None => condition,
    }
}

/// A chat message from a user, if `message` is one the Gateway should see:
/// `chat` or `normal` type, or `groupchat` to a group's room, with a
/// sender. The body is the best one whatever its `xml:lang`; chat states
/// and markers come through with an empty body.
pub fn message_to_event(message: &Message) -> Option<XmppEvent> {
    if !matches!(
        message.type_,
        MessageType::Chat | MessageType::Normal | MessageType::Groupchat
    ) {
        return None;
    }
    let groupchat = message.type_ == MessageType::Groupchat;
    // `groupchat` only to a group's room (the XMPP process has checked
    // that the sender is in it).
    if groupchat
        && !message
            .to
            .as_ref()
            .and_then(|t| t.node())
            .is_some_and(|n| sms_gateway_core::group::is_group(n.as_str()))
    {
        return None;
    }
    let from = message.from.as_ref()?.to_string();
    let to = message.to.as_ref()?.to_string();
    let body = message
        .get_best_body(vec!["en", ""])
        .map(|(_, b)| b.clone())
        .unwrap_or_default();
    let mut media = Vec::new();
    let mut receipt_requested = false;
    let mut addresses = Vec::new();
    let mut correction = false;
    let mut quoted = None;
    for p in &message.payloads {
        if p.is("replace", CORRECT_NS) {
            correction = true;
        } else if p.is("fallback", crate::reactions::FALLBACK_NS) && p.attr("for") == Some(REPLY_NS)
        {
            // XEP-0428: the part of the body that quotes what is replied to.
            let range = p
                .get_child("body", crate::reactions::FALLBACK_NS)
                .or(Some(p))
                .and_then(|b| Some((b.attr("start")?.parse().ok()?, b.attr("end")?.parse().ok()?)));
            quoted = range.filter(|(start, end): &(usize, usize)| start < end);
        } else if p.is("request", ns::RECEIPTS) {
            receipt_requested = true;
        } else if p.is("addresses", crate::muc::ADDRESS_NS) {
            addresses.extend(
                p.children()
                    .filter(|a| a.is("address", crate::muc::ADDRESS_NS))
                    .filter(|a| matches!(a.attr("type"), Some("to" | "cc" | "bcc")))
                    .filter_map(|a| a.attr("jid"))
                    .take(MAX_ADDRESSES)
                    .map(str::to_owned),
            );
            addresses.truncate(MAX_ADDRESSES);
        } else if p.is("x", ns::OOB) {
            if let Ok(oob) = Oob::try_from(p.clone()) {
                media.push(oob.url.trim().to_owned());
            }
        }
    }
    let mut body = body;
    if let Some((start, end)) = quoted {
        body = shorten_reply(&body, start, end);
    }
    if correction && !body.trim().is_empty() {
        // XEP-0308: a text cannot be changed once sent; the new words go
        // as a new text that says what it is.
        body = format!("Correction: {}", body.trim_start());
    }
    Some(XmppEvent::Chat(ChatMessage {
        from,
        to,
        id: message.id.as_ref().map(|i| i.0.clone()),
        body,
        media,
        receipt_requested,
        groupchat,
        addresses,
    }))
}

/// XEP-0308's namespace.
pub const CORRECT_NS: &str = "urn:xmpp:message-correct:0";
/// XEP-0461's namespace.
pub const REPLY_NS: &str = "urn:xmpp:reply:0";
/// How much of a replied-to message a reply's text quotes.
const REPLY_QUOTE_CHARS: usize = 40;

/// A reply (XEP-0461) whose body quotes the message it answers in
/// characters `start..end` (XEP-0428): the quote once, shortened to its
/// first words on one line, then the reply, so the phone does not get the
/// whole earlier text again.
fn shorten_reply(body: &str, start: usize, end: usize) -> String {
    let chars: Vec<char> = body.chars().collect();
    if end > chars.len() {
        return body.to_owned();
    }
    let quote: String = chars[start..end].iter().collect();
    let reply: String = chars[..start].iter().chain(&chars[end..]).collect();
    let words = quote
        .lines()
        .map(|l| l.trim_start_matches('>').trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if words.is_empty() {
        return reply.trim().to_owned();
    }
    let mut short: String = words.chars().take(REPLY_QUOTE_CHARS).collect();
    if short.len() < words.len() {
        short.push('…');
    }
    format!("> {short}\n{}", reply.trim())
}

fn jid(s: &str) -> Result<Jid, crate::Error> {
    if let Cow::Owned(_) = xml_safe(s) {
        return Err(crate::Error::Stanza(format!(
            "a JID with characters XML cannot carry: {s:?}"
        )));
    }
    Jid::new(s).map_err(|e| crate::Error::Stanza(format!("bad JID {s:?}: {e}")))
}

fn condition(c: ErrorCondition) -> (ErrorType, DefinedCondition) {
    match c {
        ErrorCondition::RegistrationRequired => {
            (ErrorType::Auth, DefinedCondition::RegistrationRequired)
        }
        ErrorCondition::JidMalformed => (ErrorType::Modify, DefinedCondition::JidMalformed),
        ErrorCondition::NotAcceptable => (ErrorType::Modify, DefinedCondition::NotAcceptable),
        ErrorCondition::RemoteServerTimeout => {
            (ErrorType::Wait, DefinedCondition::RemoteServerTimeout)
        }
        ErrorCondition::RecipientUnavailable => {
            (ErrorType::Cancel, DefinedCondition::RecipientUnavailable)
        }
        ErrorCondition::BadRequest => (ErrorType::Modify, DefinedCondition::BadRequest),
        ErrorCondition::InternalServerError => {
            (ErrorType::Cancel, DefinedCondition::InternalServerError)
        }
        ErrorCondition::ResourceConstraint => {
            (ErrorType::Wait, DefinedCondition::ResourceConstraint)
        }
        ErrorCondition::Forbidden => (ErrorType::Auth, DefinedCondition::Forbidden),
        // A condition added to core after this was written.
        _ => (ErrorType::Cancel, DefinedCondition::UndefinedCondition),
    }
}

/// The stanza for something the Gateway wants sent. `new_id` makes ids for
/// stanzas that are not answers.
pub fn outgoing_to_stanza(
    out: &OutgoingStanza,
    new_id: impl FnOnce() -> String,
) -> Result<Stanza, crate::Error> {
    let message = match out {
        OutgoingStanza::Chat {
            from,
            to,
            body,
            media_url,
            ..
        } => {
            let mut m = Message::chat(jid(to)?);
            m.from = Some(jid(from)?);
            m.id = Some(Id(new_id()));
            if !body.is_empty() {
                m = m.with_body(Lang::new(), clean(body));
            }
            if let Some(url) = media_url {
                m = m.with_payload(Oob {
                    url: clean(url),
                    desc: None,
                });
            }
            m
        }
        OutgoingStanza::Receipt { from, to, id } => {
            let mut m = Message::chat(jid(to)?);
            m.from = Some(jid(from)?);
            m.id = Some(Id(new_id()));
            m.with_payload(Received { id: clean(id) })
        }
        OutgoingStanza::Error {
            from,
            to,
            id,
            condition: c,
            text,
        } => {
            let mut m = Message::error(jid(to)?);
            m.from = Some(jid(from)?);
            m.id = id.as_deref().map(|i| Id(clean(i)));
            let (type_, cond) = condition(*c);
            m.with_payload(stanza_error(type_, cond, text.as_str()))
        }
        _ => {
            return Err(crate::Error::Stanza(
                "a kind of stanza this build cannot write".into(),
            ))
        }
    };
    Ok(Stanza::Message(message))
}

/// The answer to an IQ addressed to us, or `None` for results and errors
/// (which need none). Every `get` and `set` gets an answer.
pub fn answer_iq(iq: &Iq, domain: &str) -> Option<Iq> {
    let (to, payload, is_get) = match iq {
        Iq::Get { to, payload, .. } => (to, payload, true),
        Iq::Set { to, payload, .. } => (to, payload, false),
        Iq::Result { .. } | Iq::Error { .. } => return None,
    };
    let result_payload: Result<Option<Element>, StanzaError> =
        if is_get && payload.is("ping", ns::PING) {
            Ok(None)
        } else if is_get && payload.is("query", ns::DISCO_INFO) {
            let on_domain = to.as_ref().is_none_or(|t| t.node().is_none());
            let identity = if on_domain {
                Identity::new("gateway", "sms", "en", "SMS gateway")
            } else {
                Identity::new_anonymous::<_, _, String, String>("client", "sms")
            };
            let node = payload.attr("node").map(str::to_owned);
            // The gateway's own JID also has registration and commands.
            let own: &[&str] = if on_domain { DOMAIN_FEATURES } else { &[] };
            Ok(Some(
                DiscoInfoResult {
                    node,
                    identities: vec![identity],
                    features: FEATURES
                        .iter()
                        .chain(own)
                        .map(|f| f.to_string())
                        .collect::<BTreeSet<_>>(),
                    extensions: vec![],
                }
                .into(),
            ))
        } else if is_get && payload.is("query", ns::DISCO_ITEMS) {
            Ok(Some(
                DiscoItemsResult {
                    node: payload.attr("node").map(str::to_owned),
                    items: vec![],
                    rsm: None,
                }
                .into(),
            ))
        } else {
            Err(StanzaError::new(
                ErrorType::Cancel,
                DefinedCondition::ServiceUnavailable,
                "en",
                format!("{domain} does not handle this request"),
            ))
        };
    Some(reply(iq, result_payload))
}

/// A stanza as the XML written for it.
pub(crate) fn written(stanza: Stanza) -> String {
    String::from(&match stanza {
        Stanza::Iq(iq) => Element::from(iq),
        Stanza::Message(m) => Element::from(m),
        Stanza::Presence(p) => Element::from(p),
    })
}

/// The `result` or `error` answering the request `iq`.
pub fn reply(iq: &Iq, answer: Result<Option<Element>, StanzaError>) -> Iq {
    let (from, to, id) = (iq.from().cloned(), iq.to().cloned(), iq.id().to_owned());
    match answer {
        Ok(payload) => Iq::Result {
            from: to,
            to: from,
            id,
            payload,
        },
        Err(error) => Iq::Error {
            from: to,
            to: from,
            id,
            payload: None,
            error,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_message(xml: &str) -> Message {
        let el: Element = xml.parse().expect("well-formed");
        Message::try_from(el).expect("a message")
    }

    #[test]
    fn chat_with_language_tagged_body_and_receipt_request() {
        let m = parse_message(
            "<message xmlns='jabber:component:accept' type='chat' id='abc' from='alice@example.com/phone' to='+15557654321@sms.example.com'>\
             <body xml:lang='en'>hello there</body><request xmlns='urn:xmpp:receipts'/></message>",
        );
        assert_eq!(
            message_to_event(&m),
            Some(XmppEvent::Chat(ChatMessage {
                from: "alice@example.com/phone".into(),
                to: "+15557654321@sms.example.com".into(),
                id: Some("abc".into()),
                body: "hello there".into(),
                media: vec![],
                receipt_requested: true,
                addresses: vec![],
                groupchat: false,
            }))
        );
    }

    #[test]
    fn body_in_another_language_is_still_read() {
        let m = parse_message(
            "<message xmlns='jabber:component:accept' type='chat' from='a@b/c' to='+15557654321@sms.example.com'><body xml:lang='de'>hallo</body></message>",
        );
        let Some(XmppEvent::Chat(c)) = message_to_event(&m) else {
            panic!()
        };
        assert_eq!(c.body, "hallo");
    }

    #[test]
    fn a_correction_says_so_and_a_reply_quotes_once_shortened() {
        let body = |xml: &str| {
            let Some(XmppEvent::Chat(c)) = message_to_event(&parse_message(xml)) else {
                panic!("{xml}")
            };
            c.body
        };
        assert_eq!(
            body("<message xmlns='jabber:component:accept' type='chat' id='m2' from='a@b/c' to='+1@d'><body>see you at 9</body><replace xmlns='urn:xmpp:message-correct:0' id='m1'/></message>"),
            "Correction: see you at 9"
        );
        // As Gajim and Conversations write a reply (XEP-0461) with its
        // fallback quote (XEP-0428): the quote's range is in characters.
        let quote = "> are we still on for tonight at the usual place? I can bring the cake\n";
        let n = quote.chars().count();
        assert_eq!(
            body(&format!("<message xmlns='jabber:component:accept' type='chat' id='m3' from='a@b/c' to='+1@d'><body>{quote}yes, 8 o’clock</body><reply xmlns='urn:xmpp:reply:0' id='m0' to='+1@d'/><fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'><body start='0' end='{n}'/></fallback></message>")),
            "> are we still on for tonight at the usual…\nyes, 8 o’clock"
        );
        // A range past the body is not believed.
        assert_eq!(
            body("<message xmlns='jabber:component:accept' type='chat' from='a@b/c' to='+1@d'><body>> x\ny</body><fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'><body start='0' end='99'/></fallback></message>"),
            "> x\ny"
        );
    }

    #[test]
    fn chat_state_only_has_an_empty_body_and_oob_is_media() {
        let m = parse_message(
            "<message xmlns='jabber:component:accept' type='chat' from='a@b/c' to='+1@d'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
        );
        let Some(XmppEvent::Chat(c)) = message_to_event(&m) else {
            panic!()
        };
        assert_eq!((c.body.as_str(), c.media.len()), ("", 0));
        let m = parse_message(
            "<message xmlns='jabber:component:accept' type='chat' from='a@b/c' to='+1@d'><body>https://up.example/a.jpg</body><x xmlns='jabber:x:oob'><url>https://up.example/a.jpg</url></x></message>",
        );
        let Some(XmppEvent::Chat(c)) = message_to_event(&m) else {
            panic!()
        };
        assert_eq!(c.media, vec!["https://up.example/a.jpg".to_owned()]);
    }

    #[test]
    fn groupchat_to_a_room_and_extended_addresses_are_read() {
        let m = parse_message(
            "<message xmlns='jabber:component:accept' type='groupchat' id='g' from='a@b/c' to='+15551112222,+15553334444@sms.example.com'><body>all</body></message>",
        );
        let Some(XmppEvent::Chat(c)) = message_to_event(&m) else {
            panic!()
        };
        assert!(c.groupchat && c.addresses.is_empty());
        let m = parse_message(
            "<message xmlns='jabber:component:accept' type='chat' from='a@b/c' to='sms.example.com'><body>x</body>\
             <addresses xmlns='http://jabber.org/protocol/address'><address type='to' jid='+15551112222@sms.example.com'/>\
             <address type='cc' jid='+15553334444@sms.example.com'/><address type='replyto' jid='z@y'/></addresses></message>",
        );
        let Some(XmppEvent::Chat(c)) = message_to_event(&m) else {
            panic!()
        };
        assert_eq!(
            c.addresses,
            [
                "+15551112222@sms.example.com",
                "+15553334444@sms.example.com"
            ]
        );
        assert!(!c.groupchat);
    }

    #[test]
    fn groupchat_errors_and_headlines_are_not_chats() {
        for t in ["groupchat", "error", "headline"] {
            let m = parse_message(&format!(
                "<message xmlns='jabber:component:accept' type='{t}' from='a@b/c' to='+1@d'><body>x</body></message>"
            ));
            assert_eq!(message_to_event(&m), None, "{t}");
        }
    }

    fn xml(st: Stanza) -> String {
        String::from(&Element::from(match st {
            Stanza::Message(m) => m,
            _ => panic!(),
        }))
    }

    #[test]
    fn outgoing_chat_receipt_and_error() {
        let chat = outgoing_to_stanza(
            &OutgoingStanza::Chat {
                from: "+15557654321@sms.example.com".into(),
                to: "alice@example.com".into(),
                body: "hi".into(),
                media_url: None,
                nick: None,
                inbound_id: None,
                stable_id: None,
            },
            || "id1".into(),
        )
        .unwrap();
        let s = xml(chat);
        assert!(s.contains("type='chat'"), "{s}");
        assert!(s.contains("<body>hi</body>"), "{s}");
        assert!(s.contains("from='+15557654321@sms.example.com'"), "{s}");

        let receipt = xml(outgoing_to_stanza(
            &OutgoingStanza::Receipt {
                from: "+1@d".into(),
                to: "a@b/c".into(),
                id: "m1".into(),
            },
            || "id2".into(),
        )
        .unwrap());
        assert!(
            receipt.contains("<received xmlns='urn:xmpp:receipts' id='m1'/>"),
            "{receipt}"
        );

        let err = xml(outgoing_to_stanza(
            &OutgoingStanza::Error {
                from: "+1@d".into(),
                to: "a@b/c".into(),
                id: Some("m1".into()),
                condition: ErrorCondition::NotAcceptable,
                text: "Not sent: 21211".into(),
            },
            || unreachable!("an error reuses the chat's id"),
        )
        .unwrap());
        assert!(
            err.contains("type='error'") && err.contains("id='m1'"),
            "{err}"
        );
        assert!(err.contains("<not-acceptable"), "{err}");
        assert!(err.contains("Not sent: 21211"), "{err}");
    }

    #[test]
    fn media_goes_out_as_oob() {
        let s = xml(outgoing_to_stanza(
            &OutgoingStanza::Chat {
                from: "+1@d".into(),
                to: "a@b".into(),
                body: "https://m/1.jpg".into(),
                media_url: Some("https://m/1.jpg".into()),
                nick: None,
                inbound_id: None,
                stable_id: None,
            },
            || "i".into(),
        )
        .unwrap());
        assert!(
            s.contains("<x xmlns='jabber:x:oob'><url>https://m/1.jpg</url></x>"),
            "{s}"
        );
    }

    /// Every character the XML writer refuses, in every string that can
    /// come from a carrier or a caller-ID program.
    const REFUSED: &[char] = &[
        '\u{0}', '\u{1}', '\u{8}', '\u{b}', '\u{c}', '\u{e}', '\u{1f}', '\u{fffe}', '\u{ffff}',
    ];

    #[test]
    fn characters_xml_cannot_carry_become_replacement_characters() {
        assert!(matches!(xml_safe("plain\ttext\r\n é 🎉"), Cow::Borrowed(_)));
        assert!(matches!(xml_safe("plain ascii ~\u{7f}"), Cow::Borrowed(_)));
        for &c in REFUSED {
            let text = format!("a{c}b");
            assert_eq!(xml_safe(&text), "a\u{FFFD}b", "{:?}", c);
            let chat = outgoing_to_stanza(
                &OutgoingStanza::Chat {
                    from: "+15557654321@sms.example.com".into(),
                    to: "alice@example.com".into(),
                    body: text.clone(),
                    media_url: Some(format!("https://m.example/{c}.jpg")),
                    nick: None,
                    inbound_id: Some(1),
                    stable_id: None,
                },
                || "i".into(),
            )
            .unwrap();
            let s = xml(chat);
            assert!(s.contains("<body>a\u{FFFD}b</body>"), "{s:?}");
            assert!(s.contains("https://m.example/\u{FFFD}.jpg"), "{s:?}");
            let err = xml(outgoing_to_stanza(
                &OutgoingStanza::Error {
                    from: "+1@d".into(),
                    to: "a@b/c".into(),
                    id: Some("m1".into()),
                    condition: ErrorCondition::NotAcceptable,
                    text: text.clone(),
                },
                || unreachable!(),
            )
            .unwrap());
            assert!(err.contains("a\u{FFFD}b"), "{err:?}");
            let n = String::from(&nick(&text));
            assert!(n.contains("a\u{FFFD}b"), "{n:?}");
            let v = String::from(&vcard("+15557654321", Some(&text)));
            assert!(!v.contains(c), "{v:?}");
        }
    }

    #[test]
    fn a_jid_xml_cannot_carry_is_refused_not_written() {
        let r = outgoing_to_stanza(
            &OutgoingStanza::Chat {
                from: "+15557654321@sms.example.com".into(),
                to: "ali\u{c}ce@example.com".into(),
                body: "hi".into(),
                media_url: None,
                nick: None,
                inbound_id: None,
                stable_id: None,
            },
            || "i".into(),
        );
        assert!(r.is_err());
    }

    fn iq(xml: &str) -> Iq {
        Iq::try_from(xml.parse::<Element>().unwrap()).unwrap()
    }

    #[test]
    fn ping_disco_and_unknown_iqs_are_answered() {
        let ping = answer_iq(&iq("<iq xmlns='jabber:component:accept' type='get' id='p' from='a@b/c' to='sms.example.com'><ping xmlns='urn:xmpp:ping'/></iq>"), "sms.example.com").unwrap();
        assert!(matches!(ping, Iq::Result { ref id, payload: None, .. } if id == "p"));

        let disco = answer_iq(&iq("<iq xmlns='jabber:component:accept' type='get' id='d' from='a@b/c' to='sms.example.com'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"), "sms.example.com").unwrap();
        let Iq::Result {
            payload: Some(p), ..
        } = disco
        else {
            panic!("{disco:?}")
        };
        let info = DiscoInfoResult::try_from(p).unwrap();
        assert_eq!(
            (
                info.identities[0].category.as_str(),
                info.identities[0].type_.as_str()
            ),
            ("gateway", "sms")
        );
        assert!(info.features.contains(ns::RECEIPTS));

        let unknown = answer_iq(&iq("<iq xmlns='jabber:component:accept' type='set' id='u' from='a@b/c' to='sms.example.com'><query xmlns='jabber:iq:version'/></iq>"), "sms.example.com").unwrap();
        let Iq::Error { error, id, .. } = unknown else {
            panic!()
        };
        assert_eq!(
            (id.as_str(), error.defined_condition),
            ("u", DefinedCondition::ServiceUnavailable)
        );

        assert!(answer_iq(&iq("<iq xmlns='jabber:component:accept' type='result' id='r' from='a@b/c' to='sms.example.com'/>"), "x").is_none());
    }
}
