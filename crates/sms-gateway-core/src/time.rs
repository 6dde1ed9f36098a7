//! Time as the gateway needs it: now in Unix seconds, and a date for
//! people.

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
