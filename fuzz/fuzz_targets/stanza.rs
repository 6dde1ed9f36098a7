//! Stanzas from any XMPP user on any server: XML → xmpp-parsers → the
//! event the Gateway sees or the answer the XMPP process gives. And the
//! other way: whatever text comes from a carrier, the stanza built from it
//! can always be written (the form-feed loop of issue #11). Registration
//! and command requests (XEP-0077, XEP-0050) go through the forms' readers
//! of a gateway with users, an admin and open registration; stanzas to a
//! group text's room (XEP-0045) through its checks, and the text through
//! every stanza of a room (nicks, history, subject, invitations).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sms_gateway_core::OutgoingStanza;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::Message;
use tokio_xmpp::parsers::presence::Presence;
use tokio_xmpp::Stanza;

/// A gateway with a user, an admin, open registration and numbers to offer,
/// and a runtime for what its answers start (caller-ID lookups).
fn gateway() -> &'static (tokio::runtime::Runtime, sms_xmpp::XmppProcess) {
    static G: std::sync::OnceLock<(tokio::runtime::Runtime, sms_xmpp::XmppProcess)> =
        std::sync::OnceLock::new();
    G.get_or_init(|| {
        let config = sms_gateway_core::Config::from_toml(
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
token = "sandbox-fuzz-token"
registration_numbers = ["+15550002222"]
[[users]]
jid = "alice@example.com"
number = "+15550001111"
provider = "main"
[registration]
open_to = ["example.com"]
approval = true
[admins]
jids = ["root@example.com"]
"#,
        )
        .expect("config");
        let mut registry = sms_gateway_core::ProviderRegistry::new();
        registry.register("sandbox", sms_gateway_runtime::SandboxProvider::from_config);
        let providers = config.validate(&registry).expect("valid");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let process = sms_xmpp::XmppProcess::new(&config, &providers);
        (rt, process)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Inbound: what the link's depth bound lets through, parsed as a
    // stanza in the component namespace.
    let bounded = sms_xmpp::limit_depth(data);
    let inbound = std::str::from_utf8(&bounded).unwrap_or("");
    let stanza = inbound.parse::<Element>().ok().and_then(|el| {
        Message::try_from(el.clone())
            .map(Stanza::Message)
            .ok()
            .or_else(|| Iq::try_from(el.clone()).map(Stanza::Iq).ok())
            .or_else(|| Presence::try_from(el).map(Stanza::Presence).ok())
    });
    {
        let (rt, gateway) = gateway();
        let _guard = rt.enter();
        for answer in gateway.room_for_fuzzing(stanza, text) {
            answer
                .parse::<Element>()
                .expect("a room's stanza is well-formed XML");
        }
    }
    if let Ok(el) = inbound.parse::<Element>() {
        if let Ok(m) = Message::try_from(el.clone()) {
            let _ = sms_xmpp::message_to_event(&m);
        } else if let Ok(iq) = Iq::try_from(el) {
            let _ = sms_xmpp::answer_iq(&iq, "sms.example.com");
            let (rt, gateway) = gateway();
            let _guard = rt.enter();
            for answer in gateway.answer_request_for_fuzzing(&iq) {
                // Whatever was asked, the answer can be read back.
                answer
                    .parse::<Element>()
                    .expect("an answer is well-formed XML");
            }
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
            stable_id: Some(text.into()),
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
