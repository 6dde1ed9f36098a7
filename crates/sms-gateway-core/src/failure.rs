//! What carriers' failure codes mean to a person, and the words phones use
//! to opt out of texts and back in (#31).
//!
//! Twilio and SignalWire (whose LaML API mirrors Twilio's codes) number
//! their errors 2xxxx and 3xxxx, Telnyx 4xxxx, so one table serves all three
//! without knowing the carrier. Each code was checked against the carrier's
//! error reference (Twilio's error catalog, Telnyx's "Messaging Error Code
//! Reference"); the table is also in docs/users.md.

/// What a failure code says happened, in the terms a person texting cares
/// about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// The contact opted out (texted STOP): nothing is delivered to them
    /// from this number until they opt back in.
    OptedOut,
    /// The phone could not be reached (off, out of coverage).
    Unreachable,
    /// No such number, or one that cannot receive texts (a landline).
    NotMobile,
    /// Blocked or filtered as spam, by the carrier or the recipient.
    Filtered,
    /// The sending number is not registered for business texting (US A2P
    /// 10DLC, toll-free verification).
    Unregistered,
    /// The carrier gave up without saying why.
    Unknown,
}

impl FailureKind {
    /// One plain sentence saying what happened and what to do.
    pub fn sentence(self) -> &'static str {
        match self {
            FailureKind::OptedOut => "The contact has opted out of texts from your number (they texted STOP); they can opt back in by texting START to it.",
            FailureKind::Unreachable => "The phone could not be reached (switched off or out of coverage); try again later.",
            FailureKind::NotMobile => "The number does not exist or cannot receive texts (a landline, say).",
            FailureKind::Filtered => "The carrier blocked it as spam, or the recipient blocks your number.",
            FailureKind::Unregistered => "The carrier refused it because your number is not registered for business texting (US A2P 10DLC or toll-free verification); the gateway's operator must register it.",
            FailureKind::Unknown => "The carrier could not deliver it and gave no reason; try again later.",
        }
    }
}

/// What carrier error `code` means, when it is one a person can act on.
pub fn kind_of(code: &str) -> Option<FailureKind> {
    Some(match code {
        // Twilio (and SignalWire): 21610 "Attempt to send to unsubscribed
        // recipient"; Telnyx 40300 "Blocked due to STOP message".
        "21610" | "40300" => FailureKind::OptedOut,
        // Twilio 30003 "Unreachable destination handset"; Telnyx 40006
        // "Recipient unavailable".
        "30003" | "40006" => FailureKind::Unreachable,
        // Twilio 30005 "Unknown destination handset", 30006 "Landline or
        // unreachable carrier", 21614 "'To' number is not a valid mobile
        // number"; Telnyx 40001 "Not routable", 40008 "Undeliverable".
        "30005" | "30006" | "21614" | "40001" | "40008" => FailureKind::NotMobile,
        // Twilio 30004 "Message blocked", 30007 "Message filtered"; Telnyx
        // 40002/40003 "Blocked as spam" (temporary, permanent).
        "30004" | "30007" | "40002" | "40003" => FailureKind::Filtered,
        // Twilio 30034 "Message from an unregistered number", 30032
        // "Toll-free number has not been verified", 30035/30036 (campaign
        // not yet approved, suspended).
        "30034" | "30032" | "30035" | "30036" => FailureKind::Unregistered,
        // Twilio 30008 "Unknown error"; Telnyx 40004 "Rejected by
        // destination" (for unknown reasons).
        "30008" | "40004" => FailureKind::Unknown,
        _ => return None,
    })
}

/// The carrier error code in a failure reason as the providers word it
/// (`undelivered, error 30003: …`, `to +1…: delivery_failed, error 40300`).
pub fn code_in(reason: &str) -> Option<&str> {
    let (_, rest) = reason.split_once("error ")?;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// A failure a person can read: the plain sentence for `code` (when there
/// is one), then the carrier's own words and code, which an operator or the
/// carrier's support needs.
pub fn readable(code: Option<&str>, carriers_words: &str) -> String {
    match code.and_then(kind_of) {
        Some(kind) => format!("{} ({carriers_words})", kind.sentence()),
        None => carriers_words.to_owned(),
    }
}

/// Whether an inbound text opts its sender out of, or back into, texts from
/// the number it was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptKeyword {
    /// STOP and its kin: the carrier now blocks texts to the sender.
    Out,
    /// START and its kin: the sender takes texts again.
    In,
}

/// The opt-out word a text is, if it is one. Carriers act on a text that is
/// the word alone (any case, spaces around it, a full stop or exclamation
/// mark after it), not on one that merely contains it: "please stop by" is
/// not an opt-out. The words are the union of Twilio's and Telnyx's (YES
/// opts in at Twilio only; where the carrier still blocks, the next send's
/// failure marks the contact again, so a chat is never refused that the
/// carrier would take).
pub fn opt_keyword(body: &str) -> Option<OptKeyword> {
    let word = body.trim().trim_end_matches(['.', '!']).trim();
    if word.len() > 16 {
        return None;
    }
    let word: String = word
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_uppercase();
    match word.as_str() {
        "STOP" | "STOPALL" | "STOP ALL" | "UNSUBSCRIBE" | "END" | "QUIT" | "CANCEL" | "REVOKE"
        | "OPTOUT" | "OPT OUT" => Some(OptKeyword::Out),
        "START" | "UNSTOP" | "YES" => Some(OptKeyword::In),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_read_from_the_providers_reasons() {
        assert_eq!(
            code_in("undelivered, error 30003: unreachable destination handset"),
            Some("30003")
        );
        assert_eq!(
            code_in("to +15553334444: delivery_failed, error 40300: Recipient opted out"),
            Some("40300")
        );
        assert_eq!(code_in("failed"), None);
        assert_eq!(code_in("error : x"), None);
    }

    /// A failure known by its words alone (a sandbox report, a report
    /// stored before codes were kept apart) finds its code in them; one
    /// built from a carrier's fields keeps the code it was given.
    #[test]
    fn failures_keep_their_code_apart() {
        let f = crate::Failure::from_words("undelivered, error 21610: unsubscribed");
        assert_eq!(f.code.as_deref(), Some("21610"));
        assert_eq!(f.to_string(), "undelivered, error 21610: unsubscribed");
        assert_eq!(crate::Failure::from_words("failed").code, None);
        let f = crate::Failure::new(Some("40300".into()), "delivery_failed, Recipient opted out");
        assert_eq!(f.code.as_deref(), Some("40300"));
        assert_eq!(crate::Failure::new(Some(String::new()), "x").code, None);
    }

    #[test]
    fn both_carriers_opt_out_codes_mean_the_same() {
        assert_eq!(kind_of("21610"), Some(FailureKind::OptedOut));
        assert_eq!(kind_of("40300"), Some(FailureKind::OptedOut));
        assert_eq!(kind_of("30007"), kind_of("40002"));
        assert_eq!(kind_of("12345"), None);
    }

    #[test]
    fn readable_puts_the_sentence_before_the_carriers_words() {
        let r = readable(Some("30006"), "undelivered, error 30006: landline");
        assert!(r.starts_with("The number does not exist"), "{r}");
        assert!(r.ends_with("(undelivered, error 30006: landline)"), "{r}");
        assert_eq!(readable(None, "failed"), "failed");
    }

    #[test]
    fn opt_words_are_whole_texts() {
        for w in [
            "STOP",
            "stop",
            " Stop. ",
            "STOP ALL",
            "stopall!",
            "Unsubscribe",
            "quit",
        ] {
            assert_eq!(opt_keyword(w), Some(OptKeyword::Out), "{w:?}");
        }
        for w in ["START", "unstop", "Yes"] {
            assert_eq!(opt_keyword(w), Some(OptKeyword::In), "{w:?}");
        }
        for w in ["please stop by", "stopping", "", "STOP STOP", "yes please"] {
            assert_eq!(opt_keyword(w), None, "{w:?}");
        }
    }
}
