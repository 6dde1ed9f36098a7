//! Token buckets ([`Bucket`]), one definition for every budget, and the
//! per-user send limits built on them: a bucket per user, so that one
//! account (or whoever has its password) cannot run up the carrier bill.
//! Each SMS part costs one token; tokens come back at `texts_per_minute` up
//! to `texts_burst`. The clock is an argument, so tests need no waiting.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One token bucket: it starts full, holds at most `burst` tokens, and
/// they come back at `per_second`. The rates are the caller's, so one
/// definition serves every budget (the per-user limits here, the budget
/// for answering strangers in `sms-xmpp`).
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    at: Option<Instant>,
}

impl Bucket {
    /// A full bucket of `burst` tokens.
    pub fn full(burst: f64) -> Self {
        Bucket {
            tokens: burst,
            at: None,
        }
    }

    /// Takes `cost` tokens at `now` (refilled at `per_second` up to `burst`
    /// since the last take), or says how long until there would be enough,
    /// taking nothing (at most a day).
    pub fn take(
        &mut self,
        cost: f64,
        per_second: f64,
        burst: f64,
        now: Instant,
    ) -> Result<(), Duration> {
        if let Some(at) = self.at {
            let elapsed = now.saturating_duration_since(at).as_secs_f64();
            self.tokens = (self.tokens + elapsed * per_second).min(burst);
        }
        self.at = Some(now);
        if self.tokens >= cost {
            self.tokens -= cost;
            Ok(())
        } else {
            let missing = cost - self.tokens;
            Err(Duration::from_secs_f64(
                (missing / per_second).min(86_400.0),
            ))
        }
    }
}

/// One bucket per key (a user's bare JID). Keys are configured users only,
/// so the map is bounded by the config.
#[derive(Debug)]
pub(crate) struct Buckets {
    per_second: f64,
    burst: f64,
    buckets: HashMap<String, Bucket>,
}

impl Buckets {
    pub(crate) fn new(per_minute: u32, burst: u32) -> Self {
        Buckets {
            per_second: f64::from(per_minute) / 60.0,
            burst: f64::from(burst),
            buckets: HashMap::new(),
        }
    }

    /// A daily cap: `per_day` at once, coming back at `per_day` a day
    /// (`limits.texts_per_day`): no 24 hours ever see more than twice it,
    /// and no day that starts full more than it plus what came back.
    pub(crate) fn daily(per_day: u32) -> Self {
        Buckets {
            per_second: f64::from(per_day) / 86_400.0,
            burst: f64::from(per_day),
            buckets: HashMap::new(),
        }
    }

    /// Changes a daily cap (a reload of `[limits]`).
    pub(crate) fn set_daily(&mut self, per_day: u32) {
        self.per_second = f64::from(per_day) / 86_400.0;
        self.burst = f64::from(per_day);
    }

    /// Changes the rate and the burst (a reload of `[limits]`).
    pub(crate) fn set_rate(&mut self, per_minute: u32, burst: u32) {
        self.per_second = f64::from(per_minute) / 60.0;
        self.burst = f64::from(burst);
    }

    /// Takes `cost` tokens from `key`'s bucket at `now`, or says how long
    /// until there would be enough (taking nothing).
    pub(crate) fn take(&mut self, key: &str, cost: u32, now: Instant) -> Result<(), Duration> {
        let (per_second, burst) = (self.per_second, self.burst);
        let bucket = match self.buckets.get_mut(key) {
            Some(b) => b,
            None => self
                .buckets
                .entry(key.to_owned())
                .or_insert_with(|| Bucket::full(burst)),
        };
        bucket.take(f64::from(cost), per_second, burst, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let mut b = Buckets::new(60, 5); // one a second, five at once
        let t0 = Instant::now();
        for _ in 0..5 {
            b.take("a", 1, t0).unwrap();
        }
        let wait = b.take("a", 1, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 1.0).abs() < 0.01, "{wait:?}");
        assert!(b.take("b", 5, t0).is_ok(), "each user has a bucket");
        assert!(b.take("a", 1, t0 + Duration::from_millis(1001)).is_ok());
        assert!(b.take("a", 1, t0 + Duration::from_millis(1002)).is_err());
        // A long pause refills up to the burst, no more.
        let later = t0 + Duration::from_secs(3600);
        assert!(b.take("a", 5, later).is_ok());
        assert!(b.take("a", 1, later).is_err());
        // A cost above what is held waits for the difference only.
        let wait = b.take("a", 3, later + Duration::from_secs(1)).unwrap_err();
        assert!((wait.as_secs_f64() - 2.0).abs() < 0.01, "{wait:?}");
    }
}
