//! Telnyx's webhooks: the Ed25519 check and the JSON event parser. Inputs
//! are signed with a fixed key (so the parser is reached) unless the first
//! byte says not to, in which case they must be refused.
#![no_main]

use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use libfuzzer_sys::fuzz_target;
use sms_gateway_core::{ProviderContext, PstnProvider, WebhookRequest};
use std::collections::BTreeMap;
use std::sync::OnceLock;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

fn provider() -> &'static dyn PstnProvider {
    static P: OnceLock<Box<dyn PstnProvider>> = OnceLock::new();
    P.get_or_init(|| {
        let ctx = ProviderContext {
            account: "tx".into(),
            webhook_base: "https://sms.example.com/hooks/tx".into(),
        };
        let public =
            base64::engine::general_purpose::STANDARD.encode(key().verifying_key().as_bytes());
        Box::new(
            sms_pstn_telnyx::TelnyxProvider::new(
                &ctx,
                serde_json::from_value(serde_json::json!({
                    "api_key": "KEY", "public_key": public, "api_base": "http://127.0.0.1:1"
                }))
                .unwrap(),
            )
            .unwrap(),
        )
    })
    .as_ref()
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let sign = flags & 1 == 0;
    let hook = if flags & 2 == 0 { "message" } else { "status" };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let mut signed = now.clone().into_bytes();
    signed.push(b'|');
    signed.extend_from_slice(body);
    let sig = if sign {
        base64::engine::general_purpose::STANDARD.encode(key().sign(&signed).to_bytes())
    } else {
        base64::engine::general_purpose::STANDARD.encode([0u8; 64])
    };
    let mut headers = BTreeMap::new();
    headers.insert("content-type".to_owned(), "application/json".to_owned());
    headers.insert("telnyx-signature-ed25519".to_owned(), sig);
    headers.insert("telnyx-timestamp".to_owned(), now);
    let req = WebhookRequest {
        method: "POST".into(),
        hook: hook.into(),
        url: format!("https://sms.example.com/hooks/tx/{hook}"),
        headers,
        body: bytes::Bytes::copy_from_slice(body),
    };
    match provider().webhook(&req) {
        Ok(_) => assert!(sign, "an unsigned webhook was accepted"),
        Err(e) => assert!((400..500).contains(&e.http_status())),
    }
});
