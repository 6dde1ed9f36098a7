//! Phone numbers. On the wire (carrier APIs, contact JIDs) every number is
//! E.164: `+` and up to 15 digits. Users may type local forms; parsing uses a
//! libphonenumber port so `(555) 765-4321` with a default prefix of `+1`
//! becomes `+15557654321`.
//!
//! We check that a number *parses* (country code known, length plausible),
//! not that its range is assigned: fictional `555` numbers are what docs and
//! tests use, and the carrier has the last word (Twilio answers 21211).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A phone number in E.164 form, e.g. `+15557654321`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneNumber(String);

/// Why a string is not a phone number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// Nothing given.
    #[error("empty phone number")]
    Empty,
    /// A character that has no place in a phone number.
    #[error("'{0}' is not a phone number: only digits, '+', spaces and - ( ) . are allowed")]
    BadCharacter(String),
    /// No country code, and no default to supply one.
    #[error("'{0}' has no country code: write it as +<country code><number> (or set phone.default_prefix)")]
    NoCountryCode(String),
    /// libphonenumber refused it.
    #[error("'{input}' is not a phone number: {reason}")]
    Invalid {
        /// What was given.
        input: String,
        /// libphonenumber's reason.
        reason: String,
    },
}

impl PhoneNumber {
    /// Parses what a user or a carrier wrote. A number without a leading `+`
    /// gets `default_prefix` (e.g. `+1`) in front, when one is configured.
    pub fn parse(input: &str, default_prefix: Option<&str>) -> Result<Self, PhoneError> {
        Self::parse_with(input, None, default_prefix)
    }

    /// Parses what a user typed. A number without a leading `+` is read as a
    /// national number of `default_region` (an ISO 3166 code such as `US` or
    /// `GB`, so `020 7946 0958` with `GB` is `+442079460958`), or else gets
    /// `default_prefix` in front. Five or six digits alone are a short code.
    pub fn parse_with(
        input: &str,
        default_region: Option<&str>,
        default_prefix: Option<&str>,
    ) -> Result<Self, PhoneError> {
        // The libphonenumber port compiles its regular expressions lazily
        // and keeps few of them: a parse costs ~100 µs, most of a round
        // trip's CPU. Numbers repeat (the same contacts, the same users), so
        // results are remembered; the answer is a pure function of the input.
        type Key = (String, Option<String>, Option<String>);
        static CACHE: std::sync::OnceLock<
            std::sync::Mutex<std::collections::HashMap<Key, Result<PhoneNumber, PhoneError>>>,
        > = std::sync::OnceLock::new();
        const CACHE_SIZE: usize = 10_000;
        let cache = CACHE.get_or_init(Default::default);
        let key = (
            input.to_owned(),
            default_region.map(str::to_owned),
            default_prefix.map(str::to_owned),
        );
        if let Some(hit) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return hit.clone();
        }
        let result = Self::parse_uncached(input, default_region, default_prefix);
        let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() >= CACHE_SIZE {
            c.clear();
        }
        c.insert(key, result.clone());
        result
    }

    fn parse_uncached(
        input: &str,
        default_region: Option<&str>,
        default_prefix: Option<&str>,
    ) -> Result<Self, PhoneError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(PhoneError::Empty);
        }
        let bad_char = trimmed
            .chars()
            .any(|c| !(c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '(' | ')' | '.')));
        if bad_char || trimmed[1..].contains('+') {
            return Err(PhoneError::BadCharacter(trimmed.to_owned()));
        }
        // Punctuation carries no meaning once the characters are checked, and
        // the parser reads bare digits most reliably.
        let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
        if !trimmed.starts_with('+') && (5..=6).contains(&digits.len()) && digits == trimmed {
            // A short code (e.g. 12345): bound to the user's own country, so
            // it travels as bare digits.
            return Ok(PhoneNumber(digits));
        }
        let region = default_region.and_then(|r| r.parse::<phonenumber::country::Id>().ok());
        if let (false, Some(region)) = (trimmed.starts_with('+'), region) {
            let parsed =
                phonenumber::parse(Some(region), &digits).map_err(|e| PhoneError::Invalid {
                    input: trimmed.to_owned(),
                    reason: e.to_string(),
                })?;
            return Ok(PhoneNumber(
                parsed.format().mode(phonenumber::Mode::E164).to_string(),
            ));
        }
        let full = if trimmed.starts_with('+') {
            format!("+{digits}")
        } else if let Some(prefix) = default_prefix {
            format!("{prefix}{digits}")
        } else {
            return Err(PhoneError::NoCountryCode(trimmed.to_owned()));
        };
        let parsed = phonenumber::parse(None, &full).map_err(|e| PhoneError::Invalid {
            input: trimmed.to_owned(),
            reason: e.to_string(),
        })?;
        if parsed.extension().is_some() {
            return Err(PhoneError::Invalid {
                input: trimmed.to_owned(),
                reason: "extensions cannot receive texts".into(),
            });
        }
        let e164 = parsed.format().mode(phonenumber::Mode::E164).to_string();
        Ok(PhoneNumber(e164))
    }

    /// The E.164 form, `+15557654321`, or the digits of a short code.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is a short code rather than an E.164 number.
    pub fn is_short_code(&self) -> bool {
        !self.0.starts_with('+')
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.0)
    }
}

impl Serialize for PhoneNumber {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PhoneNumber {
    /// Deserialises an E.164 number (with its `+`); local forms need the
    /// config's default prefix and go through [`PhoneNumber::parse`].
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PhoneNumber::parse(&s, None).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_passes_through() {
        assert_eq!(
            PhoneNumber::parse("+15557654321", None).unwrap().as_str(),
            "+15557654321"
        );
    }

    #[test]
    fn local_forms_take_the_default_prefix() {
        for input in [
            "5557654321",
            "(555) 765-4321",
            "555-765-4321",
            "555.765.4321",
        ] {
            assert_eq!(
                PhoneNumber::parse(input, Some("+1")).unwrap().as_str(),
                "+15557654321",
                "{input}"
            );
        }
    }

    #[test]
    fn international_formatting_is_removed() {
        assert_eq!(
            PhoneNumber::parse("+44 20 7946 0958", None)
                .unwrap()
                .as_str(),
            "+442079460958"
        );
    }

    #[test]
    fn no_country_code_without_default_is_an_error() {
        assert_eq!(
            PhoneNumber::parse("5557654321", None),
            Err(PhoneError::NoCountryCode("5557654321".into()))
        );
    }

    #[test]
    fn a_default_region_reads_national_numbers() {
        let p = |s: &str| PhoneNumber::parse_with(s, Some("GB"), None).map(|n| n.to_string());
        assert_eq!(p("020 7946 0958").unwrap(), "+442079460958");
        assert_eq!(p("+1 555 765 4321").unwrap(), "+15557654321");
        let us = PhoneNumber::parse_with("(555) 765-4321", Some("US"), Some("+44")).unwrap();
        assert_eq!(
            us.as_str(),
            "+15557654321",
            "the region wins over the prefix"
        );
    }

    #[test]
    fn short_codes_are_kept_as_digits() {
        for code in ["12345", "898287"] {
            let n = PhoneNumber::parse(code, Some("+1")).unwrap();
            assert_eq!(n.as_str(), code);
            assert!(n.is_short_code());
        }
        assert!(!PhoneNumber::parse("+15557654321", None)
            .unwrap()
            .is_short_code());
        // Seven digits are not a short code: without a country they are refused.
        assert!(PhoneNumber::parse("1234567", None).is_err());
        // Formatted short codes are not short codes.
        assert!(PhoneNumber::parse("12-345", None).is_err());
    }

    #[test]
    fn letters_and_garbage_are_refused() {
        for input in ["alice", "+1555FLOWERS", "+1555+7654321", "+1 555 765 4321;"] {
            let err = PhoneNumber::parse(input, Some("+1")).unwrap_err();
            assert!(matches!(err, PhoneError::BadCharacter(_)), "{input}: {err}");
        }
        assert_eq!(PhoneNumber::parse("  ", None), Err(PhoneError::Empty));
    }

    #[test]
    fn too_short_and_unknown_country_are_refused() {
        assert!(matches!(
            PhoneNumber::parse("+1", None),
            Err(PhoneError::Invalid { .. })
        ));
        assert!(matches!(
            PhoneNumber::parse("+999123456789", None),
            Err(PhoneError::Invalid { .. })
        ));
        assert!(matches!(
            PhoneNumber::parse("+1234567890123456789", None),
            Err(PhoneError::Invalid { .. })
        ));
    }
}
