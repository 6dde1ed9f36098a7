//! Config files as an operator (or a mistake) writes them: parsed and
//! validated with every provider, never a panic; errors name a key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sms_gateway_core::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::from_toml(text) {
        let _ = config.validate(&sms_over_xmpp_bin::registry());
        let _ = config.warnings();
        let _ = format!("{config:?}");
    }
});
