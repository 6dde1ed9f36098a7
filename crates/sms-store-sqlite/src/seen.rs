//! The carrier ids of the inbound texts in the store, in memory.

use crate::errors::err;
use sms_gateway_core::store::StoreError;

/// The inbound texts' (account, carrier id) pairs, so a webhook the
/// carrier repeats is recognised without an index on disk. Each pair is
/// kept as 128 bits of two independently keyed hashes (the set is rebuilt
/// at every start, so the keys need not last): about 20 bytes a text, for
/// as long as the store keeps it (`keep_days`). A pair added in a batch
/// that is then not committed is taken out again, so the carrier's retry of
/// that webhook is stored, not dropped as a repeat.
pub(crate) struct Seen {
    pub(crate) keys: std::collections::HashSet<u128>,
    /// Added since the batch began.
    pub(crate) batch: Vec<u128>,
    pub(crate) hashers: (std::hash::RandomState, std::hash::RandomState),
}

impl Seen {
    pub(crate) fn new() -> Self {
        Seen {
            keys: Default::default(),
            batch: vec![],
            hashers: (Default::default(), Default::default()),
        }
    }

    pub(crate) fn key(&self, account: &str, carrier_id: &str) -> u128 {
        use std::hash::BuildHasher;
        let pair = (account, carrier_id);
        (u128::from(self.hashers.0.hash_one(pair)) << 64)
            | u128::from(self.hashers.1.hash_one(pair))
    }

    /// The key of a row whose first two columns are account and carrier id.
    pub(crate) fn key_of_row(&self, r: &rusqlite::Row<'_>) -> Result<u128, StoreError> {
        let text = |i| r.get_ref(i).and_then(|v| Ok(v.as_str()?)).map_err(err);
        Ok(self.key(text(0)?, text(1)?))
    }

    /// The batch is durable: its pairs stay.
    pub(crate) fn committed(&mut self) {
        self.batch.clear();
    }

    /// The batch is gone: so are its pairs.
    pub(crate) fn rolled_back(&mut self) {
        for k in self.batch.drain(..) {
            self.keys.remove(&k);
        }
    }
}
