//! The carrier ids of the inbound texts in the store, in memory.

use crate::errors::err;
use sms_gateway_core::store::{seen_key, StoreError};

/// The most recent inbound texts' (account, carrier id) pairs, so a
/// webhook the carrier repeats is recognised without an index on disk.
/// Each pair is kept as 128 bits: its [`seen_key`] (what `seen_expired`
/// keeps) and a hash keyed at random at each start.
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
    /// The latest arrival time of a pair in memory: the time the pairs of
    /// a move are kept under (so each is kept at least as long as its own
    /// would keep it, and the move reads nothing back from `inbound`).
    pub(crate) latest: u64,
    pub(crate) hasher: std::hash::RandomState,
    /// What `seen_expired` may hold, so a new text's id is looked up there
    /// only when it might be a repeat.
    pub(crate) expired: ExpiredFilter,
}

/// Pairs always kept in memory: a carrier's quick retry is caught here; a
/// later one through the filter and `seen_expired`.
pub(crate) const KEPT: usize = 1_024;
/// Pairs moved to `seen_expired` at once. Keys are random, so a move writes
/// nearly every page of the table while it has fewer pages than this:
/// the larger the chunk, the fewer pages per text (#30: 2,048 wrote 0.2
/// pages per text at 55,000 ids). KEPT + CHUNK and a batch stay within
/// 8,192 pairs, so the set and the queue never grow past the sizes they
/// had with 4,096 + 2,048.
pub(crate) const CHUNK: usize = 5_120;

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
            latest: 0,
            hasher: Default::default(),
            expired: ExpiredFilter::with_room(0),
        }
    }

    /// Notes the pair of inbound text `id`, which arrived at `received`;
    /// `in_batch` when a batch is open (it leaves again if the batch does
    /// not commit).
    pub(crate) fn add(&mut self, id: u64, key: u128, received: u64, in_batch: bool) {
        self.latest = self.latest.max(received);
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
    /// (The filter takes them at once: should the batch not commit, they
    /// are only bits too many, which cost a lookup.)
    pub(crate) fn moving(&mut self, upto: u64) {
        let n = self.order.iter().take_while(|(id, _)| *id <= upto).count();
        for (_, k) in self.order.iter().take(n) {
            self.expired.add(disk_key(*k));
        }
        self.moving = Some((n, upto));
    }

    pub(crate) fn key(&self, account: &str, carrier_id: &str) -> u128 {
        use std::hash::BuildHasher;
        let disk = seen_key(account, carrier_id) as u64;
        (u128::from(disk) << 64) | u128::from(self.hasher.hash_one((account, carrier_id)))
    }

    /// The key of a row whose first two columns are account and carrier id.
    pub(crate) fn key_of_row(&self, r: &rusqlite::Row<'_>) -> Result<u128, StoreError> {
        let text = |i| r.get_ref(i).and_then(|v| Ok(v.as_str()?)).map_err(err);
        Ok(self.key(text(0)?, text(1)?))
    }

    /// Copies the keys of the oldest pairs up to `upto` into
    /// `seen_expired` (in key order, so the table's pages are visited once
    /// each, in order) and notes how far, in the open transaction.
    pub(crate) fn copy_out(&self, c: &rusqlite::Connection, upto: u64) -> Result<(), StoreError> {
        let mut keys: Vec<i64> = self
            .order
            .iter()
            .take_while(|(id, _)| *id <= upto)
            .map(|(_, k)| disk_key(*k))
            .collect();
        keys.sort_unstable();
        let mut q = c
            .prepare_cached("INSERT OR IGNORE INTO seen_expired (key, received) VALUES (?1, ?2)")
            .map_err(err)?;
        for k in keys {
            q.execute(rusqlite::params![k, self.latest as i64])
                .map_err(err)?;
        }
        c.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")
            .and_then(|mut q| q.execute(rusqlite::params![MOVED, upto as i64]))
            .map_err(err)?;
        Ok(())
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

/// The [`seen_key`] within a [`Seen`] key.
pub(crate) fn disk_key(k: u128) -> i64 {
    (k >> 64) as u64 as i64
}

/// A Bloom filter of the keys in `seen_expired`: "no" is certain, "maybe"
/// is looked up. Four probes and 10 bits a key (a key not there is a
/// "maybe" about once in 80 when the filter is full, less before). It
/// grows by being rebuilt from the table with half as much room again as
/// it holds when it is full, up to [`ExpiredFilter::MAX_BITS`] (1 MiB,
/// some 800,000 ids); past that it fills up, and lookups grow back towards
/// one per text, as without it. Ids that expire leave their bits until
/// the next rebuild. 128 KiB at 55,000 ids.
pub(crate) struct ExpiredFilter {
    bits: Vec<u64>,
    /// Keys it has room for, and keys added since it was built.
    room: usize,
    added: usize,
}

impl ExpiredFilter {
    const MIN_ROOM: usize = 4_096;
    const BITS_PER_KEY: usize = 10;
    pub(crate) const MAX_BITS: usize = 8 << 20;

    /// An empty filter with room for `keys` keys (at least
    /// [`Self::MIN_ROOM`]).
    pub(crate) fn with_room(keys: usize) -> Self {
        let bits = (keys.max(Self::MIN_ROOM) * Self::BITS_PER_KEY)
            .next_power_of_two()
            .min(Self::MAX_BITS);
        ExpiredFilter {
            bits: vec![0; bits / 64],
            room: bits / Self::BITS_PER_KEY,
            added: 0,
        }
    }

    /// The four bits of `key` (a SipHash output, so its halves are as good
    /// as independent hashes).
    fn probes(&self, key: i64) -> [usize; 4] {
        let mask = (self.bits.len() * 64 - 1) as u64;
        let (h1, h2) = (key as u64, (key as u64).rotate_left(32) | 1);
        [0u64, 1, 2, 3].map(|i| (h1.wrapping_add(i.wrapping_mul(h2)) & mask) as usize)
    }

    pub(crate) fn add(&mut self, key: i64) {
        for b in self.probes(key) {
            self.bits[b / 64] |= 1 << (b % 64);
        }
        self.added += 1;
    }

    pub(crate) fn may_contain(&self, key: i64) -> bool {
        self.probes(key)
            .iter()
            .all(|b| self.bits[b / 64] & (1 << (b % 64)) != 0)
    }

    #[cfg(test)]
    pub(crate) fn room(&self) -> usize {
        self.room
    }

    /// Full: worth rebuilding with more room (never past the cap).
    pub(crate) fn is_full(&self) -> bool {
        self.added > self.room && self.bits.len() * 64 < Self::MAX_BITS
    }

    /// A filter of every key in `seen_expired`, with room for half as
    /// many again.
    pub(crate) fn build(c: &rusqlite::Connection) -> Result<Self, StoreError> {
        let n: i64 = c
            .query_row("SELECT count(*) FROM seen_expired", [], |r| r.get(0))
            .map_err(err)?;
        let n = n.max(0) as usize;
        let mut f = ExpiredFilter::with_room(n + n / 2);
        let mut q = c.prepare("SELECT key FROM seen_expired").map_err(err)?;
        let mut rows = q.query([]).map_err(err)?;
        while let Some(r) = rows.next().map_err(err)? {
            f.add(r.get(0).map_err(err)?);
        }
        f.added = n;
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::ExpiredFilter;

    /// Every key added is a "maybe"; about one key in 80 not added is, at
    /// the filter's room; it asks to be rebuilt once past its room, and
    /// stops asking at its cap.
    #[test]
    fn the_filter_never_says_no_to_a_key_it_holds() {
        let key = |i: u64| sms_gateway_core::store::seen_key("main", &format!("SM{i}"));
        let mut f = ExpiredFilter::with_room(0);
        let room = f.room();
        for i in 0..room as u64 {
            f.add(key(i));
        }
        assert!((0..room as u64).all(|i| f.may_contain(key(i))));
        assert!(!f.is_full());
        let maybe = (1_000_000..1_100_000u64)
            .filter(|&i| f.may_contain(key(i)))
            .count();
        assert!(maybe < 2_000, "{maybe} of 100,000 absent keys passed");
        f.add(key(u64::MAX));
        assert!(f.is_full());
        let mut capped = ExpiredFilter::with_room(usize::MAX / 64);
        assert_eq!(capped.bits.len() * 64, ExpiredFilter::MAX_BITS);
        capped.added = capped.room() + 1;
        assert!(!capped.is_full(), "never past the cap");
    }
}
