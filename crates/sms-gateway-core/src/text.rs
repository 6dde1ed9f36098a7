//! SMS text arithmetic: encodings, segments, and splitting a long text into
//! several sends on grapheme-cluster boundaries.
//!
//! A segment holds 160 GSM-7 characters (153 when the message has several
//! segments, the rest going to the concatenation header); characters of the
//! GSM-7 extension table (`€ [ ] { } \ ^ ~ |` and form feed) take two. One
//! character outside GSM-7 switches the whole message to UCS-2: 70 UTF-16
//! code units per segment, 67 when split (so an emoji, two code units, costs
//! two).

use unicode_segmentation::UnicodeSegmentation;

/// `message` with every `"…"`-quoted part replaced by `"…"`: serde's errors
/// quote the value they could not read (`invalid type: string "the text of
/// a message", expected u64`), and neither a message's text nor a secret
/// belongs in a log or in an answer to a stranger. Names, which serde
/// quotes with backticks, stay.
pub fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut parts = message.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let mut inside = true;
    for part in parts {
        if inside {
            out.push_str("\"…\"");
        } else {
            out.push_str(part);
        }
        inside = !inside;
    }
    out
}

/// At most `max` characters of `s`, control characters escaped, with `…`
/// when cut: for quoting outside input in an error or a log line without
/// letting it grow the line or forge another.
pub fn excerpt(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).flat_map(char::escape_debug).collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// The first `max` characters of a text, with `…` when cut: what a
/// notice shows of a message the user wrote or received.
pub fn preview(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// How a carrier limits one API request's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BodyLimit {
    /// At most this many characters (counted as UTF-16 code units, the
    /// stricter reading). Twilio and SignalWire: 1600.
    Characters(usize),
    /// At most this many SMS segments. Telnyx: 10.
    Segments(usize),
    /// No limit known.
    Unlimited,
}

/// What one API request of a carrier may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The text limit.
    pub body: BodyLimit,
    /// Media URLs per message.
    pub max_media: usize,
    /// Recipients of one group text (`0`: the carrier has no group texts
    /// through this API).
    pub max_group: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body: BodyLimit::Unlimited,
            max_media: usize::MAX,
            max_group: 0,
        }
    }
}

/// The encoding a text needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Encoding {
    /// The GSM 03.38 7-bit alphabet.
    Gsm7,
    /// UCS-2 (UTF-16).
    Ucs2,
}

const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM7_EXTENSION: &str = "\u{c}^{}\\[~]|€";

/// Septets each ASCII character takes in GSM-7 (0: outside the alphabet),
/// built from the two tables above when compiled: almost every character
/// of a text is ASCII, and each is counted twice per chat (#30).
const GSM7_ASCII: [u8; 128] = {
    let mut t = [0u8; 128];
    let (basic, ext) = (GSM7_BASIC.as_bytes(), GSM7_EXTENSION.as_bytes());
    let mut i = 0;
    while i < basic.len() {
        if basic[i] < 128 {
            t[basic[i] as usize] = 1;
        }
        i += 1;
    }
    let mut i = 0;
    while i < ext.len() {
        if ext[i] < 128 {
            t[ext[i] as usize] = 2;
        }
        i += 1;
    }
    t
};

/// Septets a character takes in GSM-7, or `None` outside the alphabet.
fn gsm7_septets(c: char) -> Option<usize> {
    if c.is_ascii() {
        return match GSM7_ASCII[c as usize] {
            0 => None,
            n => Some(n as usize),
        };
    }
    if GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// The encoding `text` needs.
pub fn encoding(text: &str) -> Encoding {
    if text.chars().all(|c| gsm7_septets(c).is_some()) {
        Encoding::Gsm7
    } else {
        Encoding::Ucs2
    }
}

/// How many segments `text` takes as one SMS.
pub fn segments(text: &str) -> usize {
    let (units, single, multi) = match encoding(text) {
        Encoding::Gsm7 => (
            text.chars().filter_map(gsm7_septets).sum::<usize>(),
            160,
            153,
        ),
        Encoding::Ucs2 => (text.encode_utf16().count(), 70, 67),
    };
    if units <= single {
        1
    } else {
        units.div_ceil(multi)
    }
}

/// Whether `text` fits one request under `limit`.
pub fn fits(text: &str, limit: BodyLimit) -> bool {
    match limit {
        BodyLimit::Characters(n) => text.encode_utf16().count() <= n,
        BodyLimit::Segments(n) => segments(text) <= n,
        BodyLimit::Unlimited => true,
    }
}

/// Running measures of a text, so a split need not re-measure each prefix.
#[derive(Clone, Copy, Default)]
struct Measure {
    utf16: usize,
    septets: usize,
    gsm7: bool,
}

impl Measure {
    fn new() -> Self {
        Measure {
            utf16: 0,
            septets: 0,
            gsm7: true,
        }
    }

    fn add(mut self, s: &str) -> Self {
        for c in s.chars() {
            self.utf16 += c.len_utf16();
            match gsm7_septets(c) {
                Some(n) => self.septets += n,
                None => self.gsm7 = false,
            }
        }
        self
    }

    fn fits(&self, limit: BodyLimit) -> bool {
        match limit {
            BodyLimit::Characters(n) => self.utf16 <= n,
            BodyLimit::Segments(n) => {
                let (units, single, multi) = if self.gsm7 {
                    (self.septets, 160, 153)
                } else {
                    (self.utf16, 70, 67)
                };
                let segs = if units <= single {
                    1
                } else {
                    units.div_ceil(multi)
                };
                segs <= n
            }
            BodyLimit::Unlimited => true,
        }
    }
}

/// Splits `text` into the fewest parts that each fit `limit`, in order, on
/// grapheme-cluster boundaries (never inside a surrogate pair, a combining
/// sequence or an emoji sequence). Prefers to end a part after whitespace
/// when one is in its last fifth. A single grapheme cluster larger than the
/// limit (absurd in practice) becomes a part of its own.
pub fn split(text: &str, limit: BodyLimit) -> Vec<String> {
    if fits(text, limit) {
        return vec![text.to_owned()];
    }
    let graphemes: Vec<&str> = text.graphemes(true).collect();
    let mut parts = Vec::new();
    let mut start = 0;
    while start < graphemes.len() {
        let mut measure = Measure::new().add(graphemes[start]);
        let mut end = start + 1;
        while end < graphemes.len() {
            let next = measure.add(graphemes[end]);
            if !next.fits(limit) {
                break;
            }
            measure = next;
            end += 1;
        }
        if end < graphemes.len() {
            // Back off to the last whitespace in the final fifth, if any.
            let min = start + (end - start) * 4 / 5;
            if let Some(ws) = (min..end)
                .rev()
                .find(|&i| graphemes[i].chars().all(char::is_whitespace))
            {
                end = ws + 1;
            }
        }
        parts.push(graphemes[start..end].concat());
        start = end;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ASCII table says what the two alphabets say, character by
    /// character (#30: the fast path may not change a count).
    #[test]
    fn the_ascii_table_agrees_with_the_alphabets() {
        for b in 0u8..128 {
            let c = b as char;
            let slow = if GSM7_BASIC.contains(c) {
                Some(1)
            } else if GSM7_EXTENSION.contains(c) {
                Some(2)
            } else {
                None
            };
            assert_eq!(gsm7_septets(c), slow, "{b:#x}");
        }
    }

    #[test]
    fn segment_arithmetic() {
        assert_eq!(encoding("Hello, world!"), Encoding::Gsm7);
        assert_eq!(segments(&"a".repeat(160)), 1);
        assert_eq!(segments(&"a".repeat(161)), 2);
        assert_eq!(segments(&"a".repeat(306)), 2);
        assert_eq!(segments(&"a".repeat(307)), 3);
        // Extension characters take two septets.
        assert_eq!(segments(&"€".repeat(80)), 1);
        assert_eq!(segments(&"€".repeat(81)), 2);
        // One character outside GSM-7 makes it UCS-2.
        assert_eq!(encoding("Grüße ✓"), Encoding::Ucs2);
        assert_eq!(segments(&"ж".repeat(70)), 1);
        assert_eq!(segments(&"ж".repeat(71)), 2);
        assert_eq!(segments(&"ж".repeat(134)), 2);
        assert_eq!(segments(&"ж".repeat(135)), 3);
        // An emoji is two UTF-16 code units.
        assert_eq!(segments(&"😀".repeat(35)), 1);
        assert_eq!(segments(&"😀".repeat(36)), 2);
    }

    #[test]
    fn split_by_characters_keeps_order_and_content() {
        let text = "word ".repeat(700); // 3500 characters
        let parts = split(&text, BodyLimit::Characters(1600));
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.encode_utf16().count() <= 1600));
        assert_eq!(parts.concat(), text);
        // Cut after a space, not inside a word.
        assert!(
            parts[0].ends_with(' '),
            "{:?}",
            &parts[0][parts[0].len() - 10..]
        );
    }

    #[test]
    fn split_never_cuts_a_surrogate_pair_or_a_grapheme_cluster() {
        // 👍🏽 is two code points (four UTF-16 units); é here is e + U+0301.
        let text = "👍🏽e\u{301}".repeat(500);
        let clusters = text.graphemes(true).count();
        for limit in [
            BodyLimit::Characters(1600),
            BodyLimit::Characters(7),
            BodyLimit::Segments(2),
        ] {
            let parts = split(&text, limit);
            assert_eq!(parts.concat(), text);
            // Had a cut gone through a cluster, the parts would hold more
            // clusters between them than the text does.
            assert_eq!(
                parts
                    .iter()
                    .map(|p| p.graphemes(true).count())
                    .sum::<usize>(),
                clusters,
                "{limit:?}"
            );
            for p in &parts {
                assert!(fits(p, limit), "{limit:?}: {p:?}");
                assert!(
                    !p.starts_with('\u{301}') && !p.starts_with('\u{1f3fd}'),
                    "{limit:?}: a part starts mid-cluster"
                );
            }
        }
    }

    #[test]
    fn split_by_segments() {
        let text = "a".repeat(153 * 10 + 1);
        let parts = split(&text, BodyLimit::Segments(10));
        assert_eq!(parts.len(), 2);
        assert_eq!(segments(&parts[0]), 10);
        assert_eq!(parts.concat(), text);
        assert_eq!(
            split("short", BodyLimit::Segments(10)),
            vec!["short".to_owned()]
        );
        assert_eq!(split(&text, BodyLimit::Unlimited), vec![text.clone()]);
    }

    #[test]
    fn quoted_values_are_redacted_and_names_kept() {
        assert_eq!(
            redact_quoted(
                r#"invalid type: string "call me at 5", expected u64 at line 1 column 20"#
            ),
            r#"invalid type: string "…", expected u64 at line 1 column 20"#
        );
        assert_eq!(
            redact_quoted("unknown field `bdy`, expected `body`"),
            "unknown field `bdy`, expected `body`"
        );
        assert_eq!(excerpt("a\u{c}bcdef", 3), "a\\u{c}b…");
    }
}
