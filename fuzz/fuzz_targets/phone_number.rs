//! Phone numbers as users type them and carriers send them. A number that
//! parses is E.164 (or a short code) and parses again to itself, by the
//! fast path or libphonenumber alike.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sms_gateway_core::PhoneNumber;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for (region, prefix) in [
        (None, None),
        (None, Some("+1")),
        (Some("GB"), None),
        (Some("US"), Some("+44")),
    ] {
        if let Ok(n) = PhoneNumber::parse_with(text, region, prefix) {
            let s = n.as_str();
            if n.is_short_code() {
                assert!(s.len() <= 6 && s.bytes().all(|b| b.is_ascii_digit()), "{s}");
            } else {
                assert!(s.starts_with('+') && s.len() <= 16, "{s}");
                assert!(s[1..].bytes().all(|b| b.is_ascii_digit()), "{s}");
                assert_eq!(
                    PhoneNumber::parse(s, None).as_ref(),
                    Ok(&n),
                    "{text:?} -> {s}"
                );
            }
        }
    }
});
