//! Tests of `store.rs`.

#[test]
fn memory_store_meets_the_contract() {
    super::check_store(&super::MemoryStore::default());
}

/// The keys of expired pairs are stored, so they must never change: values
/// made by pysiphash (PyPI `siphash` 0.0.1, which gives the reference
/// vector 0x726fdb47dd0e0e31 for key 00..0f and no input):
/// `siphash.SipHash_2_4(b"sms-xmppseen-key", account + b"\xff" + id).hash()`,
/// read as a signed 64-bit integer.
#[test]
fn seen_keys_are_siphash_under_the_fixed_key() {
    assert_eq!(
        super::seen_key("main", "SM0123456789abcdef0123456789abcdef"),
        -125_379_418_506_631_022
    );
    assert_eq!(super::seen_key("", ""), 8_535_834_928_862_508_822);
    assert_ne!(super::seen_key("ab", "c"), super::seen_key("a", "bc"));
}
