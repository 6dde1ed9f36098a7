//! Tests of `phone.rs`.

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
fn the_country_code_table_matches_libphonenumber() {
    let db = &*phonenumber::metadata::DATABASE;
    let known: Vec<u16> = (1..=999).filter(|c| db.region(c).is_some()).collect();
    assert_eq!(known, COUNTRY_CODES);
}

/// The E.164 shortcut agrees with libphonenumber wherever it answers:
/// every country code, every national length it accepts, every leading
/// digit, with pseudo-random remaining digits.
#[test]
fn the_e164_shortcut_agrees_with_libphonenumber() {
    let mut seed: u64 = 0x5eed;
    let mut next_digit = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        char::from(b'0' + ((seed >> 33) % 10) as u8)
    };
    let (mut answered, mut declined) = (0, 0);
    let mut bad = Vec::new();
    for cc in COUNTRY_CODES {
        let cc = cc.to_string();
        for len in 1..=(16 - cc.len()) {
            for (lead, _) in ('0'..='9').flat_map(|d| [(d, 0), (d, 1), (d, 2)]) {
                let mut input = format!("+{cc}{lead}");
                for _ in 1..len {
                    input.push(next_digit());
                }
                match PhoneNumber::e164_fast(&input) {
                    Some(fast) => {
                        answered += 1;
                        let slow = PhoneNumber::parse_uncached(&input, None, None);
                        if slow.as_ref() != Ok(&fast) {
                            bad.push(format!("{input} -> {slow:?}"));
                        }
                    }
                    None => declined += 1,
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{} disagreements:\n{}",
        bad.len(),
        bad.join("\n")
    );
    assert!(
        answered > 10_000 && declined > 1_000,
        "{answered} / {declined}"
    );
}

#[test]
fn the_e164_shortcut_declines_what_is_not_plain_e164() {
    for input in [
        "+1 555 765 4321",
        "15557654321",
        "+15557654321 ",
        "+4402079460958",
        "+441800201234",
        "+78121234567",
        "+155576543210",
        "+11557654321",
        "+999123456789",
        "+1234567",
        "+1234567890123456",
        "+1555765432a",
        "+",
        "",
    ] {
        assert_eq!(PhoneNumber::e164_fast(input), None, "{input}");
    }
    assert_eq!(
        PhoneNumber::e164_fast("+15557654321").unwrap().as_str(),
        "+15557654321"
    );
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

#[test]
fn the_possible_length_table_matches_libphonenumber() {
    let db = &*phonenumber::metadata::DATABASE;
    let mut built = Vec::new();
    for cc in COUNTRY_CODES {
        let mut mask = 0u32;
        for m in db.by_code(cc).unwrap() {
            let d = m.descriptors();
            let kinds = [
                Some(d.general()),
                d.fixed_line(),
                d.mobile(),
                d.toll_free(),
                d.premium_rate(),
                d.shared_cost(),
                d.personal_number(),
                d.voip(),
            ];
            for desc in kinds.into_iter().flatten() {
                for &l in desc.possible_length() {
                    mask |= 1 << l;
                }
            }
        }
        built.push(mask);
    }
    assert_eq!(built, POSSIBLE_LENGTHS);
}

/// Numbers no country has are refused at once, whichever way they
/// come: E.164, a local form with the default prefix, or a region.
#[test]
fn impossible_numbers_are_refused() {
    for (input, prefix) in [
        ("+1555", None),
        ("+11234567", None),
        ("1234567", Some("+1")),
        ("1555", Some("+1")),
        ("+1 555 765 43", None),
        ("+155576543210", None),
        ("+4420794", None),
        ("+49", None),
    ] {
        let err = PhoneNumber::parse(input, prefix).unwrap_err();
        assert!(
            matches!(err, PhoneError::Invalid { .. }),
            "{input}: {err:?}"
        );
    }
    let err = PhoneNumber::parse("+1555", None).unwrap_err().to_string();
    assert!(err.contains("too short for +1"), "{err}");
    assert!(PhoneNumber::parse_with("12", Some("US"), None).is_err());
    for ok in [
        "+15557654321",
        "+442079460958",
        "+4915123456789",
        "+33612345678",
    ] {
        assert_eq!(PhoneNumber::parse(ok, None).unwrap().as_str(), ok);
    }
}

/// Found by the phone_number fuzz target: a country code with no
/// lengths listed made the error message's arithmetic overflow, and a
/// Japanese national length gave 17 digits, more than E.164 allows, and
/// a Belarusian trunk prefix gave an E.164 form that reads as another
/// number.
#[test]
fn a_code_without_listed_lengths_is_refused_without_a_panic() {
    for input in [
        "+888549889447945",
        "+8885",
        "+81 81 0940945819413",
        "+3750020132",
    ] {
        let r = PhoneNumber::parse(input, None);
        assert!(r.is_err(), "{input}: {r:?}");
    }
}

#[test]
fn long_inputs_are_refused_unread_and_errors_are_not_cached() {
    let long = "1".repeat(60_000);
    let err = PhoneNumber::parse(&long, Some("+1"))
        .unwrap_err()
        .to_string();
    assert!(err.len() < 200, "{err}");
    assert!(err.contains("longer than any phone number"), "{err}");
    // Bad inputs leave nothing behind in the cache.
    for i in 0..100 {
        let _ = PhoneNumber::parse(&format!("{i}xq"), Some("+1"));
    }
    let _ = PhoneNumber::parse("5557654321", Some("+1")).unwrap();
    let cache = CACHE.get().unwrap().lock().unwrap();
    assert!(cache.iter().any(|(k, _)| k.0 == "5557654321"));
    assert!(!cache.iter().any(|(k, _)| k.0.ends_with("xq")));
}

/// #28: alphanumeric sender ids are senders, never numbers; they keep
/// their shape in the store.
#[test]
fn sender_names_are_senders_and_not_numbers() {
    for (input, stored) in [
        ("Google", "google"),
        ("HSBC UK", "hsbc_uk"),
        ("HSBC-UK", "hsbc-uk"),
        ("Vodafone", "vodafone"),
        ("M&S", "m&s"),
    ] {
        let n = PhoneNumber::sender(input).unwrap();
        assert_eq!(n.as_str(), stored);
        assert!(n.is_sender_name() && !n.is_short_code(), "{input}");
        let back: PhoneNumber = serde_json::from_str(&serde_json::to_string(&n).unwrap()).unwrap();
        assert_eq!(back, n);
        assert!(
            PhoneNumber::parse(input, None).is_err(),
            "{input} is no number"
        );
    }
    for not in [
        "",
        "12345678901234",
        "TwelveLetter",
        "no/slash",
        "<b>",
        "1234",
    ] {
        assert!(PhoneNumber::sender_name(not).is_none(), "{not:?}");
    }
    assert!(PhoneNumber::sender("+15557654321").unwrap().as_str() == "+15557654321");
    assert!(PhoneNumber::sender("12345").unwrap().is_short_code());
}
