//! Time as the gateway needs it: now in Unix seconds, a date for people,
//! and the delay before trying again.

use std::time::Duration;

/// First retry delay; doubles per consecutive failure.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The delay before try number `failures + 1` (a process's restart, a
/// store transaction, a login): 100 ms doubling to 30 s.
pub fn backoff(failures: u32) -> Duration {
    BACKOFF_START
        .checked_mul(1u32.checked_shl(failures.min(16)).unwrap_or(u32::MAX))
        .unwrap_or(BACKOFF_MAX)
        .min(BACKOFF_MAX)
}

/// An HTTP date (RFC 9110's IMF-fixdate, `Fri, 27 Nov 2026 06:52:32 GMT`)
/// for Unix seconds: `httpdate`, already in the tree through hyper, rather
/// than date arithmetic of our own.
pub fn utc(secs: u64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

/// Now, in Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(3), Duration::from_millis(800));
        assert_eq!(backoff(9), Duration::from_secs(30));
        assert_eq!(backoff(40), Duration::from_secs(30));
    }
}
