//! Twilio's and SignalWire's webhooks (form parsing, both signature
//! schemes, the LaML parser), as anyone reaching the webhook port can send
//! them. The first byte picks the provider, hook and framing; the rest is
//! the body. Half the inputs are signed correctly, so the parser behind the
//! signature check is reached; the other half must be refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sms_gateway_core::{ProviderContext, PstnProvider, WebhookRequest};
use std::collections::BTreeMap;
use std::sync::OnceLock;

const URL: &str = "https://sms.example.com/hooks/main/message";

fn providers() -> &'static (Box<dyn PstnProvider>, Box<dyn PstnProvider>) {
    static P: OnceLock<(Box<dyn PstnProvider>, Box<dyn PstnProvider>)> = OnceLock::new();
    P.get_or_init(|| {
        let ctx = ProviderContext {
            account: "main".into(),
            webhook_base: "https://sms.example.com/hooks/main".into(),
        };
        let twilio = sms_pstn_twilio::TwilioProvider::new(
            &ctx,
            serde_json::from_value(serde_json::json!({
                "account_sid": "AC00000000000000000000000000000000", "auth_token": "token",
                "api_base": "http://127.0.0.1:1"
            }))
            .unwrap(),
        )
        .unwrap();
        let sw = sms_pstn_signalwire::SignalWireProvider::new(
            &ctx,
            serde_json::from_value(serde_json::json!({
                "space": "x.signalwire.com", "project_id": "p", "api_token": "t",
                "signing_key": "token", "api_base": "http://127.0.0.1:1"
            }))
            .unwrap(),
        )
        .unwrap();
        (Box::new(twilio), Box::new(sw))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let (twilio, signalwire) = providers();
    let signalwire_picked = flags & 1 != 0;
    let provider = if signalwire_picked {
        signalwire
    } else {
        twilio
    };
    let hook = if flags & 2 != 0 { "status" } else { "message" };
    let form = flags & 4 == 0;
    let sign = flags & 8 == 0;
    let url = URL.replace("message", hook);
    let mut headers = BTreeMap::new();
    headers.insert(
        "content-type".to_owned(),
        if form {
            "application/x-www-form-urlencoded"
        } else {
            "application/json"
        }
        .to_owned(),
    );
    let mut req = WebhookRequest {
        method: "POST".into(),
        hook: hook.into(),
        url,
        headers,
        body: bytes::Bytes::copy_from_slice(body),
    };
    let mut signature = String::from("bogus");
    if sign && form {
        // Signed as Twilio signs, over the fields as the provider reads them.
        let params = req.form().unwrap_or_default();
        signature = sms_pstn_laml::signature::twilio_signature("token", &req.url, &params);
    }
    let name = if signalwire_picked {
        "x-signalwire-signature"
    } else {
        "x-twilio-signature"
    };
    req.headers.insert(name.to_owned(), signature);
    match provider.webhook(&req) {
        Ok(reply) => {
            assert!(sign && form, "an unsigned or non-form webhook was accepted");
            assert!(reply.events.len() <= 1);
        }
        Err(e) => {
            let status = e.http_status();
            assert!((400..500).contains(&status), "{status}");
        }
    }
});
