//! Tests of `store.rs`.

#[test]
fn memory_store_meets_the_contract() {
    super::check_store(&super::MemoryStore::default());
}
