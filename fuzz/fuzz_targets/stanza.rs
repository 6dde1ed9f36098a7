//! Stanzas from any XMPP user on any server: XML → xmpp-parsers → the
//! event the Gateway sees or the answer the XMPP process gives. And the
//! other way: whatever text comes from a carrier, the stanza built from it
//! can always be written (the form-feed loop of issue #11).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sms_gateway_core::OutgoingStanza;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::Message;
use tokio_xmpp::Stanza;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Inbound: what the link's depth bound lets through, parsed as a
    // stanza in the component namespace.
    let bounded = sms_xmpp::limit_depth(data);
    let inbound = std::str::from_utf8(&bounded).unwrap_or("");
    if let Ok(el) = inbound.parse::<Element>() {
        if let Ok(m) = Message::try_from(el.clone()) {
            let _ = sms_xmpp::message_to_event(&m);
        } else if let Ok(iq) = Iq::try_from(el) {
            let _ = sms_xmpp::answer_iq(&iq, "sms.example.com");
        }
    }
    // Outbound: the text as an SMS body, media URL and error text.
    for out in [
        OutgoingStanza::Chat {
            from: "+15557654321@sms.example.com".into(),
            to: "alice@example.com".into(),
            body: text.into(),
            media_url: Some(text.into()),
            nick: Some(text.into()),
            inbound_id: Some(1),
        },
        OutgoingStanza::Error {
            from: "+15557654321@sms.example.com".into(),
            to: "alice@example.com/r".into(),
            id: Some("x".into()),
            condition: sms_gateway_core::ErrorCondition::NotAcceptable,
            text: text.into(),
        },
    ] {
        let stanza = sms_xmpp::outgoing_to_stanza(&out, || "id".into()).expect("builds");
        let Stanza::Message(m) = stanza else {
            unreachable!()
        };
        let el = Element::from(m);
        let mut written = Vec::new();
        el.write_to(&mut written)
            .expect("every built stanza can be written");
        let back: Element = std::str::from_utf8(&written)
            .unwrap()
            .parse()
            .expect("and read back");
        assert_eq!(back.name(), "message");
    }
});
