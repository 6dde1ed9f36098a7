//! XEP-0363 upload to the user's own server (slots from the XMPP process).

use super::{FetchError, Item, MediaSink};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// An XEP-0363 upload slot: where to `PUT` a file (with which headers),
/// and where it can then be fetched.
#[derive(Clone, PartialEq, Eq)]
pub struct Slot {
    /// The `PUT` URL.
    pub put: String,
    /// Headers the service asks for on the `PUT` (`Authorization`,
    /// `Cookie`, `Expires` only, as XEP-0363 allows).
    pub headers: Vec<(String, String)>,
    /// The `GET` URL the user gets.
    pub get: String,
}

impl std::fmt::Debug for Slot {
    // The PUT URL and headers are credentials for the slot.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("get", &self.get)
            .finish_non_exhaustive()
    }
}

/// Asks an XEP-0363 upload service for slots (the XMPP process does).
#[async_trait]
pub trait UploadSlots: Send + Sync + 'static {
    /// A slot for a file of `size` bytes named `name`, of `content_type`,
    /// for `user` (a bare JID: its server's upload service, unless one is
    /// configured).
    async fn slot(
        &self,
        user: &str,
        name: &str,
        size: u64,
        content_type: &str,
    ) -> Result<Slot, FetchError>;
}

/// Keeps media on the user's server through XEP-0363 HTTP upload.
pub struct UploadSink {
    slots: Arc<dyn UploadSlots>,
    client: crate::http::Client,
}

impl UploadSink {
    /// Uploads through slots from `slots`, each upload taking at most
    /// `timeout`.
    pub fn new(slots: Arc<dyn UploadSlots>, timeout: Duration) -> Result<Self, String> {
        Ok(UploadSink {
            slots,
            client: crate::http::Client::new(timeout)?,
        })
    }
}

#[async_trait]
impl MediaSink for UploadSink {
    async fn put(&self, user: &str, item: Item) -> Result<String, FetchError> {
        let size = item.bytes.len() as u64;
        let slot = self
            .slots
            .slot(user, &item.name, size, &item.content_type)
            .await?;
        let url = crate::http::endpoint(&slot.put).map_err(|_| {
            FetchError::Permanent("the upload service gave an unusable address".into())
        })?;
        let status = self
            .client
            .put(&url, &slot.headers, &item.content_type, item.bytes)
            .await
            .map_err(|e| {
                FetchError::Temporary(format!("the upload to your server failed ({e})"))
            })?;
        match status {
            200..=299 => Ok(slot.get),
            408 | 429 | 500..=599 => Err(FetchError::Temporary(format!(
                "your server's upload service answered HTTP {status}"
            ))),
            _ => Err(FetchError::Permanent(format!(
                "your server's upload service answered HTTP {status}"
            ))),
        }
    }
}
