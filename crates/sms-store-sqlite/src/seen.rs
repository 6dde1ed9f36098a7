//! The carrier ids of the inbound texts in the store, in memory.

use crate::errors::err;
use sms_gateway_core::store::StoreError;

/// The most recent inbound texts' (account, carrier id) pairs, so a
/// webhook the carrier repeats is recognised without an index on disk.
/// Each pair is kept as 128 bits of two independently keyed hashes (the set
/// is rebuilt at every start, so the keys need not last).
///
/// Bounded: past [`KEPT`] + [`CHUNK`] pairs, the oldest [`CHUNK`] are
/// copied into `seen_expired` (indexed, where texts gone from the store are
/// checked anyway) in the next batch, and leave memory once it commits. So
/// memory does not grow with traffic (under half a MiB), and the copy a
/// text's pair needs at expiry is made earlier instead, in chunks. A pair
/// added in a batch that is then not committed is taken out again, so the
/// carrier's retry of that webhook is stored, not dropped as a repeat.
pub(crate) struct Seen {
    pub(crate) keys: std::collections::HashSet<u128>,
    /// The pairs in memory, oldest first, with their inbound ids.
    pub(crate) order: std::collections::VecDeque<(u64, u128)>,
    /// Added since the batch began (the back of `order`).
    pub(crate) batch: Vec<u128>,
    /// How many at the front of `order` the open batch copies to
    /// `seen_expired`, and the id up to which it does.
    pub(crate) moving: Option<(usize, u64)>,
    /// Ids up to this one have their pairs in `seen_expired`.
    pub(crate) moved: u64,
    pub(crate) hashers: (std::hash::RandomState, std::hash::RandomState),
}

/// Pairs always kept in memory: a carrier's retry comes within minutes,
/// and is caught here; a later one is caught in `seen_expired`.
pub(crate) const KEPT: usize = 4_096;
/// Pairs moved to `seen_expired` at once.
pub(crate) const CHUNK: usize = 2_048;

/// The `meta` key of [`Seen::moved`].
pub(crate) const MOVED: &str = "seen_moved";

impl Seen {
    pub(crate) fn new(moved: u64) -> Self {
        Seen {
            keys: Default::default(),
            order: Default::default(),
            batch: vec![],
            moving: None,
            moved,
            hashers: (Default::default(), Default::default()),
        }
    }

    /// Notes the pair of inbound text `id`; `in_batch` when a batch is
    /// open (it leaves again if the batch does not commit).
    pub(crate) fn add(&mut self, id: u64, key: u128, in_batch: bool) {
        self.keys.insert(key);
        self.order.push_back((id, key));
        if in_batch {
            self.batch.push(key);
        }
    }

    /// The chunk to move now, if memory holds more than it should: the
    /// ids above [`Seen::moved`] up to the returned one.
    pub(crate) fn to_move(&self) -> Option<u64> {
        if self.moving.is_some() || self.order.len() < KEPT + CHUNK {
            return None;
        }
        self.order.get(CHUNK - 1).map(|(id, _)| *id)
    }

    /// The copy of the oldest pairs up to `upto` is in the open batch.
    pub(crate) fn moving(&mut self, upto: u64) {
        let n = self.order.iter().take_while(|(id, _)| *id <= upto).count();
        self.moving = Some((n, upto));
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

    /// The batch is durable: its pairs stay, and those it copied to
    /// `seen_expired` leave memory.
    pub(crate) fn committed(&mut self) {
        self.batch.clear();
        if let Some((n, upto)) = self.moving.take() {
            for _ in 0..n {
                if let Some((_, k)) = self.order.pop_front() {
                    self.keys.remove(&k);
                }
            }
            self.moved = upto;
        }
    }

    /// The batch is gone: so are its pairs, and its copy.
    pub(crate) fn rolled_back(&mut self) {
        for k in self.batch.drain(..) {
            self.keys.remove(&k);
            self.order.pop_back();
        }
        self.moving = None;
    }
}
