//! SQLite's errors as [`StoreError`]s with their kind.

use sms_gateway_core::store::{StoreError, StoreErrorKind};
use std::path::Path;

pub(crate) fn err(e: impl Into<Classified>) -> StoreError {
    let Classified(kind, message) = e.into();
    StoreError::new(kind, message)
}

/// An error with its [`StoreErrorKind`]: SQLite's codes say which.
pub(crate) struct Classified(StoreErrorKind, String);

impl From<rusqlite::Error> for Classified {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        let kind = match e.sqlite_error_code() {
            Some(C::DatabaseBusy | C::DatabaseLocked) => StoreErrorKind::Busy,
            Some(C::SystemIoFailure | C::DiskFull | C::CannotOpen | C::OutOfMemory) => {
                StoreErrorKind::Io
            }
            Some(C::DatabaseCorrupt | C::NotADatabase) => StoreErrorKind::Corrupt,
            _ => StoreErrorKind::Other,
        };
        Classified(kind, e.to_string())
    }
}

impl From<serde_json::Error> for Classified {
    fn from(e: serde_json::Error) -> Self {
        Classified(StoreErrorKind::Corrupt, e.to_string())
    }
}

pub(crate) fn in_use(path: &Path, e: rusqlite::Error) -> StoreError {
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) {
        StoreError::new(
            StoreErrorKind::Busy,
            format!(
                "{}: in use by another process (is another sms-over-xmpp running on this store?)",
                path.display()
            ),
        )
    } else {
        let Classified(kind, message) = e.into();
        StoreError::new(kind, format!("{}: {message}", path.display()))
    }
}
