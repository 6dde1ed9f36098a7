//! The request signatures of the LaML family: Twilio's `X-Twilio-Signature`
//! and the schemes SignalWire uses. Shared by the Twilio and SignalWire
//! providers.
//!
//! Twilio: `base64(HMAC-SHA1(key, URL + each sorted parameter name followed
//! by its value))`. The URL is the one the carrier called; validators also
//! try it with the default port added or removed. For JSON bodies the URL
//! carries `bodySHA256=<hex sha256 of body>` and the signature covers the URL
//! alone. SignalWire also signs JSON bodies as `hex(HMAC-SHA1(key, URL + raw
//! body))`. All comparisons are constant-time.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha1 = Hmac<Sha1>;

fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let mut mac = HmacSha1::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Twilio's signature of `url` with form `params`, base64.
pub fn twilio_signature(key: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = HmacSha1::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `url` with the scheme's default port added when it has none, and removed
/// when it has it; `None` when neither applies. Written here rather than
/// with the `url` crate: a signature covers the URL exactly as the carrier
/// wrote it, and `url` normalises what it parses (it drops a default port,
/// adds a `/` to an empty path, lower-cases the host), which would sign a
/// different string.
fn port_variant(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let default = match scheme {
        "https" => "443",
        "http" => "80",
        _ => return None,
    };
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(auth_end);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let userinfo = &authority[..authority.len() - host_port.len()];
    // `[::1]:443` has its port after the bracket; `[::1]` has none.
    let split = if host_port.starts_with('[') {
        host_port
            .rsplit_once("]:")
            .map(|(h, p)| (&host_port[..h.len() + 1], p))
    } else {
        host_port.rsplit_once(':')
    };
    match split {
        Some((host, port)) if port == default => Some(format!("{scheme}://{userinfo}{host}{tail}")),
        Some(_) => None,
        None => Some(format!("{scheme}://{userinfo}{host_port}:{default}{tail}")),
    }
}

fn ct_eq(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Whether `given` is Twilio's signature of a form-encoded request, for `url`
/// or its default-port variant. The variant is computed only when `url`
/// itself does not match: which of the two matched is no secret (the
/// sender chose the URL), and each comparison is constant-time.
pub fn verify_form(key: &str, url: &str, params: &[(String, String)], given: &str) -> bool {
    ct_eq(&twilio_signature(key, url, params), given)
        || port_variant(url).is_some_and(|alt| ct_eq(&twilio_signature(key, &alt, params), given))
}

/// Whether `given` is Twilio's signature of a JSON request: the URL's
/// `bodySHA256` must be the body's hash and the signature covers the URL alone.
pub fn verify_json_body_sha256(key: &str, url: &str, body: &[u8], given: &str) -> bool {
    let Some(query) = url.split_once('?').map(|(_, q)| q) else {
        return false;
    };
    let Some(claimed) = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "bodySHA256")
        .map(|(_, v)| v.into_owned())
    else {
        return false;
    };
    let actual = hex(&Sha256::digest(body));
    ct_eq(&actual, &claimed.to_ascii_lowercase()) && verify_form(key, url, &[], given)
}

/// Whether `given` is SignalWire's hex signature of a raw body:
/// `hex(HMAC-SHA1(key, URL + body))`, for `url` or its port variant.
pub fn verify_raw_body_hex(key: &str, url: &str, body: &[u8], given: &str) -> bool {
    let given = given.to_ascii_lowercase();
    let check = |u: &str| {
        ct_eq(
            &hex(&hmac_sha1(key.as_bytes(), &[u.as_bytes(), body])),
            &given,
        )
    };
    check(url) || port_variant(url).is_some_and(|alt| check(&alt))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Twilio's own documented example (PROVIDERS.md; Twilio's security docs).
    #[test]
    fn twilio_documentation_vector() {
        let p = params(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]);
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            twilio_signature("12345", url, &p),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert!(verify_form(
            "12345",
            url,
            &p,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(!verify_form(
            "12346",
            url,
            &p,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    /// Made with the official SDK (PyPI `twilio` 9.13.0):
    /// `RequestValidator("test-auth-token").compute_signature(url, params)`,
    /// and checked with Python's `hmac`/`hashlib`/`base64` by the formula.
    /// The SDK also accepted it for the URL with `:443` added.
    #[test]
    fn sdk_vector_for_an_inbound_mms() {
        let p = params(&[
            ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
            ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
            ("From", "+15557654321"),
            ("To", "+15550001111"),
            ("Body", "Hello ünïcode & more"),
            ("NumMedia", "1"),
            ("MediaUrl0", "https://api.twilio.com/media/ME1"),
            ("MediaContentType0", "image/jpeg"),
        ]);
        let url = "https://sms.example.com/hooks/main/message";
        let sig = "hwo3siWhtam2FxjD3iLx8HL5t3Y=";
        assert_eq!(twilio_signature("test-auth-token", url, &p), sig);
        assert!(verify_form("test-auth-token", url, &p, sig));
        assert!(verify_form(
            "test-auth-token",
            "https://sms.example.com:443/hooks/main/message",
            &p,
            sig
        ));
        // Any change to a parameter breaks it.
        let mut tampered = p.clone();
        tampered[4].1 = "Hello".into();
        assert!(!verify_form("test-auth-token", url, &tampered, sig));
        // So does an added parameter.
        let mut added = p.clone();
        added.push(("Extra".into(), "1".into()));
        assert!(!verify_form("test-auth-token", url, &added, sig));
    }

    #[test]
    fn port_variants() {
        assert_eq!(
            port_variant("https://a.example/x?y=1").as_deref(),
            Some("https://a.example:443/x?y=1")
        );
        assert_eq!(
            port_variant("https://a.example:443/x").as_deref(),
            Some("https://a.example/x")
        );
        assert_eq!(
            port_variant("http://a.example:80").as_deref(),
            Some("http://a.example")
        );
        assert_eq!(port_variant("http://a.example:8080/x"), None);
        assert_eq!(port_variant("nonsense"), None);
    }

    /// Made with Python: `hmac.new(b"PSK_signing_key",
    /// b"https://sms.example.com/hooks/sw/message" + body, hashlib.sha1).hexdigest()`.
    #[test]
    fn signalwire_raw_body_vector() {
        let body = br#"{"event_type":"messaging.receive"}"#;
        let url = "https://sms.example.com/hooks/sw/message";
        let sig = "4267e23b2abdf18c5f3234db7e73fdca2b34e71d";
        assert!(verify_raw_body_hex("PSK_signing_key", url, body, sig));
        assert!(verify_raw_body_hex(
            "PSK_signing_key",
            url,
            body,
            &sig.to_uppercase()
        ));
        assert!(!verify_raw_body_hex("PSK_signing_key", url, b"{}", sig));
        assert!(!verify_raw_body_hex("other", url, body, sig));
    }

    #[test]
    fn json_body_sha256_scheme() {
        let body = br#"{"a":1}"#;
        let digest = hex(&Sha256::digest(body));
        let url = format!("https://h.example/hook?bodySHA256={digest}");
        let sig = twilio_signature("k", &url, &[]);
        assert!(verify_json_body_sha256("k", &url, body, &sig));
        assert!(!verify_json_body_sha256("k", &url, br#"{"a":2}"#, &sig));
        assert!(!verify_json_body_sha256(
            "k",
            "https://h.example/hook",
            body,
            &sig
        ));
    }
}
