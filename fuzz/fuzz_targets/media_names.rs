//! What the gateway makes of a carrier's media URL, the types it reports
//! and a redirect's Location: never a panic; file names safe in any path
//! or header, types safe in a header, redirects only to http(s).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(5, '\n');
    let carrier = parts.next().unwrap_or("");
    let server = parts.next().unwrap_or("");
    let url = parts.next().unwrap_or("");
    let location = parts.next().unwrap_or("");
    let bytes = parts.next().unwrap_or("").as_bytes();
    sms_gateway_core::media::check_names(carrier, server, url, location, bytes);
});
