//! The sandbox's JSON injection hooks, with and without the token.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sms_gateway_core::{PstnProvider, Secret, WebhookRequest};
use sms_gateway_runtime::SandboxProvider;
use std::collections::BTreeMap;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let sandbox = SandboxProvider::new("sb", Secret::new("fuzz-sandbox-token"));
    let authorized = flags & 1 == 0;
    let hook = match flags >> 1 & 3 {
        0 => "message",
        1 => "status",
        2 => "outbox",
        _ => "other",
    };
    let mut headers = BTreeMap::new();
    if authorized {
        headers.insert(
            "authorization".to_owned(),
            "Bearer fuzz-sandbox-token".to_owned(),
        );
    }
    let req = WebhookRequest {
        method: if hook == "outbox" { "GET" } else { "POST" }.into(),
        hook: hook.into(),
        url: format!("http://127.0.0.1/hooks/sb/{hook}"),
        headers,
        body: bytes::Bytes::copy_from_slice(body),
    };
    match sandbox.webhook(&req) {
        Ok(_) => assert!(authorized),
        Err(e) => assert!((400..500).contains(&e.http_status())),
    }
});
