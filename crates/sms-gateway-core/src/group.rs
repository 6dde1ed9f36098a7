//! Group texts: the participants a room's JID names.
//!
//! A group is the set of phone numbers in it besides the user's own. Its
//! room's JID is those numbers, sorted, in E.164 form, joined with commas:
//! `+15551112222,+15553334444@sms.example.com`, the form Cheogram uses, so
//! the same group always lands in the same room whoever texts first. A user
//! may write the numbers in any order or form; they are read into the
//! canonical set.

use crate::config::PhoneConfig;
use crate::phone::PhoneNumber;

/// The most numbers a room's JID may name. No carrier takes more than ten
/// in one group; this only bounds what a hostile JID can make us parse.
pub const MAX_PARTICIPANTS: usize = 20;

/// Whether a JID's local part names a group rather than one number.
pub fn is_group(local: &str) -> bool {
    local.contains(',')
}

/// The participants `local` names, as seen by the user with number `own`:
/// each number read as the user would dial it, `own` left out, sorted, each
/// once. Refused, with a sentence naming the part: a part that is not a
/// number, more than [`MAX_PARTICIPANTS`], fewer than two numbers left.
pub fn participants(
    local: &str,
    phone: &PhoneConfig,
    own: &PhoneNumber,
) -> Result<Vec<PhoneNumber>, String> {
    let parts: Vec<&str> = local.split(',').map(str::trim).collect();
    if parts.len() > MAX_PARTICIPANTS {
        return Err(format!(
            "A group text can have at most {MAX_PARTICIPANTS} numbers; this one names {}.",
            parts.len()
        ));
    }
    let mut numbers = Vec::with_capacity(parts.len());
    for part in parts {
        if part.is_empty() {
            continue;
        }
        let n = phone.parse(part).map_err(|e| {
            format!(
                "{:?} in the group is not a phone number: {e}.",
                crate::text::excerpt(part, 40)
            )
        })?;
        if n != *own {
            numbers.push(n);
        }
    }
    numbers.sort();
    numbers.dedup();
    if numbers.len() < 2 {
        return Err(
            "A group text needs at least two numbers besides yours, separated by commas (+15551112222,+15553334444@…); for one number, write to that number."
                .into(),
        );
    }
    Ok(numbers)
}

/// The canonical local part of the room of `participants` (sorted).
pub fn room_local(participants: &[PhoneNumber]) -> String {
    let mut s = String::with_capacity(participants.len() * 13);
    for (i, n) in participants.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(n.as_str());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> PhoneNumber {
        PhoneNumber::parse(s, None).unwrap()
    }

    fn us() -> PhoneConfig {
        PhoneConfig {
            default_region: Some("US".into()),
            ..PhoneConfig::default()
        }
    }

    #[test]
    fn a_group_is_the_same_room_whatever_the_order_and_form() {
        let own = n("+15550001111");
        let a = participants("+15553334444,+15551112222", &us(), &own).unwrap();
        let b = participants(
            "(555) 111-2222, +15553334444,+15550001111,5553334444",
            &us(),
            &own,
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(room_local(&a), "+15551112222,+15553334444");
        assert!(is_group("+15551112222,+15553334444"));
        assert!(!is_group("+15551112222"));
    }

    #[test]
    fn bad_groups_are_refused_naming_the_part() {
        let own = n("+15550001111");
        let e = participants("+15551112222,pizza", &us(), &own).unwrap_err();
        assert!(e.contains("\"pizza\""), "{e}");
        let e = participants("+15551112222,+15550001111", &us(), &own).unwrap_err();
        assert!(e.contains("at least two"), "{e}");
        let many = vec!["+15551112222"; 21].join(",");
        assert!(participants(&many, &us(), &own)
            .unwrap_err()
            .contains("at most 20"));
    }
}
