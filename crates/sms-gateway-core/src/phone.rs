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
#[non_exhaustive]
pub enum PhoneError {
    /// Nothing given.
    #[error("empty phone number")]
    Empty,
    /// A character that has no place in a phone number.
    // No spaces named: an address (`5557654321@…`) cannot hold one, and
    // a form field that does takes it anyway (#28).
    #[error("'{0}' is not a phone number: only digits, '+', '-', '(', ')' and '.' are allowed")]
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

impl PhoneError {
    /// The message for a number written in the config, where
    /// `phone.default_prefix` does not apply (it is for what users type):
    /// the hint to set it would be wrong there (#28).
    pub fn in_config(&self) -> String {
        match self {
            PhoneError::NoCountryCode(n) => format!(
                "'{n}' has no country code: numbers in the config are written in international form, +<country code><number> (phone.default_prefix applies to what users type, not to the config)"
            ),
            other => other.to_string(),
        }
    }
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
        const CACHE_SIZE: usize = 10_000;
        if input.len() > MAX_INPUT {
            // Longer than any number however it is written: refused before
            // any work, and quoted only in part.
            return Err(PhoneError::Invalid {
                input: crate::text::excerpt(input, 24),
                reason: format!("longer than any phone number ({} bytes)", input.len()),
            });
        }
        if default_region.is_none() {
            if let Some(n) = Self::e164_fast(input) {
                return Ok(n);
            }
        }
        let cache = CACHE.get_or_init(|| {
            std::sync::Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(CACHE_SIZE).expect("not zero"),
            ))
        });
        let key = (
            input.to_owned(),
            default_region.map(str::to_owned),
            default_prefix.map(str::to_owned),
        );
        if let Some(hit) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return hit.clone();
        }
        let result = Self::parse_uncached(input, default_region, default_prefix);
        // Only numbers are remembered: anyone can make errors by the
        // thousand, and a cache of them would hold whatever they typed.
        if result.is_ok() {
            cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .put(key, result.clone());
        }
        result
    }

    /// The common case without libphonenumber: a number already in plain
    /// E.164 (`+`, a known country code, a national number that does not
    /// start with a trunk prefix, 8 to 15 digits in all) is its own answer.
    /// This is what carriers send and what contact JIDs hold; it saves
    /// loading the port's metadata (about 7 MiB and a second of CPU) in a
    /// gateway whose numbers are all E.164. Anything else is for
    /// libphonenumber; a test checks that both agree wherever this answers.
    fn e164_fast(input: &str) -> Option<PhoneNumber> {
        let digits = input.strip_prefix('+')?;
        if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let cc_len = (1..=3).find(|&n| {
            digits[..n]
                .parse::<u16>()
                .is_ok_and(|cc| COUNTRY_CODES.binary_search(&cc).is_ok())
        })?;
        let (cc, national) = digits.split_at(cc_len);
        if !possible_length(cc.parse().ok()?, national.len()) {
            return None;
        }
        // libphonenumber strips trunk prefixes and applies a few countries'
        // rewriting rules even after a `+`; wherever one could apply, it
        // decides. Most countries' only trunk prefix is 0.
        let plain = match cc {
            "1" => national.len() == 10 && !national.starts_with(['0', '1']),
            "44" => {
                national.len() > 6 && !national.starts_with(['0']) && !national.starts_with("1800")
            }
            _ if SPECIAL_CODES.contains(&cc) => false,
            _ => !national.starts_with('0'),
        };
        plain.then(|| PhoneNumber(input.to_owned()))
    }

    fn parse_uncached(
        input: &str,
        default_region: Option<&str>,
        default_prefix: Option<&str>,
    ) -> Result<Self, PhoneError> {
        let n = Self::parse_once(input, default_region, default_prefix)?;
        // A number is kept, and later read back, in its E.164 form (a
        // contact JID, the store): that form must read as itself. For a
        // few inputs libphonenumber strips a trunk prefix that its E.164
        // output then lacks (`+3750020132` gives `+375020132`, which reads
        // as `+37520132`); such an input is refused, not half-understood.
        if !n.is_short_code()
            && n.0 != input
            && Self::parse_once(&n.0, None, None).as_ref() != Ok(&n)
        {
            return Err(PhoneError::Invalid {
                input: input.trim().to_owned(),
                reason: format!(
                    "it reads as {n}, which reads as another number; write it in full as +<country code><number>"
                ),
            });
        }
        Ok(n)
    }

    fn parse_once(
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
            Self::check_possible(trimmed, &parsed)?;
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
        Self::check_possible(trimmed, &parsed)?;
        let e164 = parsed.format().mode(phonenumber::Mode::E164).to_string();
        Ok(PhoneNumber(e164))
    }

    /// libphonenumber's parser reads any digits after a known country code;
    /// a number whose length no number of that country has (`+1555`,
    /// `+11234567`) cannot be texted and is refused here, before any
    /// carrier is asked.
    fn check_possible(input: &str, parsed: &phonenumber::PhoneNumber) -> Result<(), PhoneError> {
        let cc = parsed.code().value();
        let len = parsed.national().to_string().len();
        let digits = cc.to_string().len() + len;
        if digits > 15 {
            // libphonenumber lists a few national lengths (Japan's up to 17
            // digits) that no E.164 number can have.
            return Err(PhoneError::Invalid {
                input: input.to_owned(),
                reason: format!("{digits} digits; an international number has at most 15"),
            });
        }
        if possible_length(cc, len) {
            return Ok(());
        }
        let i = COUNTRY_CODES.binary_search(&cc).ok();
        let lengths = i.map(|i| POSSIBLE_LENGTHS[i]).unwrap_or(0);
        let fewest = lengths.trailing_zeros() as usize;
        let most = 31usize.saturating_sub(lengths.leading_zeros() as usize);
        let reason = if lengths == 0 {
            format!("libphonenumber lists no numbers for +{cc}")
        } else if len < fewest {
            format!("too short for +{cc} ({len} digits after the country code; at least {fewest})")
        } else if len > most {
            format!("too long for +{cc} ({len} digits after the country code; at most {most})")
        } else {
            format!("no +{cc} number has {len} digits after the country code")
        };
        Err(PhoneError::Invalid {
            input: input.to_owned(),
            reason,
        })
    }

    /// The E.164 form, `+15557654321`, the digits of a short code, or a
    /// sender name (`Google`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is a short code rather than an E.164 number.
    pub fn is_short_code(&self) -> bool {
        !self.0.starts_with('+') && !self.is_sender_name()
    }

    /// Who sent a text, as the carrier names them: a number (as
    /// [`PhoneNumber::parse`] reads it) or, outside North America often,
    /// an alphanumeric sender id (`Google`, `HSBC-UK`: 1 to 11 letters,
    /// digits, `-`, `.`, `_`, `&` or spaces, at least one letter), which
    /// cannot receive texts (#28).
    pub fn sender(input: &str) -> Result<Self, PhoneError> {
        match Self::parse(input, None) {
            Ok(n) => Ok(n),
            Err(e) => Self::sender_name(input).ok_or(e),
        }
    }

    /// An alphanumeric sender id, as a contact JID's local part carries it
    /// (lower case, spaces as `_`: an address holds none), if `input` is one.
    pub fn sender_name(input: &str) -> Option<Self> {
        let name = input.trim();
        let ok = (1..=11).contains(&name.chars().count())
            && name.chars().any(|c| c.is_ascii_alphabetic())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '&' | ' '));
        ok.then(|| PhoneNumber(name.to_ascii_lowercase().replace(' ', "_")))
    }

    /// Whether this is an alphanumeric sender id: it cannot receive texts.
    pub fn is_sender_name(&self) -> bool {
        self.0.chars().any(|c| c.is_ascii_alphabetic())
    }
}

type CacheKey = (String, Option<String>, Option<String>);
/// Numbers parsed before (see [`PhoneNumber::parse_with`]).
static CACHE: std::sync::OnceLock<
    std::sync::Mutex<lru::LruCache<CacheKey, Result<PhoneNumber, PhoneError>>>,
> = std::sync::OnceLock::new();

/// The longest input read as a phone number: 15 digits with room for
/// spaces, dashes, brackets and a leading `+`.
const MAX_INPUT: usize = 64;

/// The country calling codes libphonenumber knows, sorted (from the
/// `phonenumbers` 9.0.43 package on PyPI:
/// `sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)`; a test checks them
/// against the Rust port's metadata).
const COUNTRY_CODES: &[u16] = &[
    1, 7, 20, 27, 30, 31, 32, 33, 34, 36, 39, 40, 41, 43, 44, 45, 46, 47, 48, 49, 51, 52, 53, 54,
    55, 56, 57, 58, 60, 61, 62, 63, 64, 65, 66, 81, 82, 84, 86, 90, 91, 92, 93, 94, 95, 98, 211,
    212, 213, 216, 218, 220, 221, 222, 223, 224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234,
    235, 236, 237, 238, 239, 240, 241, 242, 243, 244, 245, 246, 247, 248, 249, 250, 251, 252, 253,
    254, 255, 256, 257, 258, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 290, 291, 297, 298,
    299, 350, 351, 352, 353, 354, 355, 356, 357, 358, 359, 370, 371, 372, 373, 374, 375, 376, 377,
    378, 380, 381, 382, 383, 385, 386, 387, 389, 420, 421, 423, 500, 501, 502, 503, 504, 505, 506,
    507, 508, 509, 590, 591, 592, 593, 594, 595, 596, 597, 598, 599, 670, 672, 673, 674, 675, 676,
    677, 678, 679, 680, 681, 682, 683, 685, 686, 687, 688, 689, 690, 691, 692, 800, 808, 850, 852,
    853, 855, 856, 870, 878, 880, 881, 882, 883, 886, 888, 960, 961, 962, 963, 964, 965, 966, 967,
    968, 970, 971, 972, 973, 974, 975, 976, 977, 979, 992, 993, 994, 995, 996, 998,
];

/// For each of [`COUNTRY_CODES`], in the same order: the national-number
/// lengths libphonenumber's metadata lists as possible for the code's
/// regions (general, fixed-line, mobile, toll-free, premium, shared-cost,
/// personal and VoIP numbers), as a bit set (bit `n` set: `n` digits). A
/// test rebuilds it from the Rust port's metadata. Local-only lengths (US
/// seven-digit numbers) are not among them: nobody can text those.
const POSSIBLE_LENGTHS: &[u32] = &[
    0x00400, 0x04400, 0x00700, 0x003e0, 0x01c00, 0x00f80, 0x00300, 0x00200, 0x00200, 0x00300,
    0x01fc0, 0x00240, 0x00200, 0x03ff0, 0x00680, 0x00100, 0x007c0, 0x00100, 0x00680, 0x0ffe0,
    0x00300, 0x00400, 0x005c0, 0x00c00, 0x00f00, 0x00e00, 0x00d00, 0x00400, 0x00700, 0x017c0,
    0x3ff80, 0x03f40, 0x00780, 0x00d00, 0x02700, 0x3ff00, 0x07f60, 0x00700, 0x01f80, 0x03400,
    0x03f00, 0x00f00, 0x00200, 0x00200, 0x007c0, 0x004c0, 0x00200, 0x00200, 0x00300, 0x00100,
    0x00200, 0x00080, 0x00200, 0x00100, 0x00100, 0x00300, 0x00400, 0x00100, 0x00100, 0x00100,
    0x00500, 0x00580, 0x00380, 0x00100, 0x00300, 0x07c00, 0x00100, 0x00100, 0x00300, 0x00080,
    0x00080, 0x00200, 0x00180, 0x00200, 0x00780, 0x00200, 0x00280, 0x00080, 0x00020, 0x00080,
    0x00200, 0x00300, 0x00200, 0x003c0, 0x00100, 0x00780, 0x00200, 0x00200, 0x00100, 0x00300,
    0x00200, 0x00200, 0x00200, 0x007e0, 0x00300, 0x00280, 0x00100, 0x00580, 0x00300, 0x00080,
    0x00030, 0x00080, 0x00080, 0x00040, 0x00040, 0x00100, 0x00200, 0x00ff0, 0x00780, 0x00280,
    0x003c0, 0x00100, 0x00100, 0x007e0, 0x013c0, 0x00100, 0x00100, 0x00580, 0x00100, 0x00100,
    0x00fc0, 0x00340, 0x00300, 0x00500, 0x00600, 0x01fc0, 0x00300, 0x01f00, 0x00380, 0x001e0,
    0x00300, 0x00100, 0x00200, 0x002c0, 0x00280, 0x00020, 0x00880, 0x00900, 0x00980, 0x00900,
    0x00100, 0x00500, 0x00d80, 0x00240, 0x00100, 0x00200, 0x00300, 0x00080, 0x00f00, 0x00200,
    0x00f80, 0x00200, 0x000c0, 0x03fc0, 0x00180, 0x00180, 0x00040, 0x00080, 0x00080, 0x00180,
    0x000a0, 0x000a0, 0x000a0, 0x00880, 0x00080, 0x00240, 0x00020, 0x00090, 0x004e0, 0x00120,
    0x00040, 0x000e0, 0x00300, 0x000f0, 0x00080, 0x00080, 0x00100, 0x00100, 0x00500, 0x00be0,
    0x00180, 0x00700, 0x00700, 0x01200, 0x01000, 0x007c0, 0x00600, 0x01f80, 0x01f00, 0x00f80,
    0x00000, 0x00480, 0x00180, 0x00300, 0x00300, 0x00700, 0x00180, 0x00600, 0x00380, 0x00380,
    0x00700, 0x01fe0, 0x01f80, 0x00100, 0x00b80, 0x00180, 0x00700, 0x00d00, 0x00200, 0x00200,
    0x00100, 0x00200, 0x00200, 0x00600, 0x00200,
];

/// Whether a national number of `len` digits is possible after `+cc`.
fn possible_length(cc: u16, len: usize) -> bool {
    match COUNTRY_CODES.binary_search(&cc) {
        Ok(i) => len < 32 && POSSIBLE_LENGTHS[i] & (1 << len) != 0,
        Err(_) => false,
    }
}

/// Country codes whose libphonenumber metadata has a trunk prefix other
/// than 0 or a rewriting rule (`national_prefix_for_parsing`,
/// `national_prefix_transform_rule` in `phonenumbers` 9.0.43), other than
/// 1 and 44, which [`PhoneNumber::e164_fast`] handles itself.
const SPECIAL_CODES: &[&str] = &[
    "7", "36", "54", "55", "57", "61", "81", "82", "86", "241", "261", "298", "352", "370", "375",
    "378", "423", "506", "591", "672", "692", "993",
];

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
        // A stored text from a sender name reads back as one.
        PhoneNumber::parse(&s, None)
            .or_else(|e| PhoneNumber::sender_name(&s).ok_or(e))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
