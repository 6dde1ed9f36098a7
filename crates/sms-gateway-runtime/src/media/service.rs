//! What the PSTN process does with `FetchMedia`: each item fetched, kept,
//! retried or given up, and (optionally) deleted at the carrier.

use super::{FetchError, Fetcher, LocalMedia, MediaSink};
use crate::http::Uri;
use crate::provider::PstnProvider;
use crate::Media;
use crate::{Fetched, InboundSms};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How many media are fetched at once, over all accounts.
const FETCHES_AT_ONCE: usize = 4;

/// Fetching and keeping: what the PSTN process does with
/// [`crate::PstnCommand::FetchMedia`].
pub struct MediaService {
    fetcher: Fetcher,
    sink: Arc<dyn MediaSink>,
    local: Option<Arc<LocalMedia>>,
    max_bytes: u64,
    delete_at_carrier: bool,
    permits: tokio::sync::Semaphore,
}

impl std::fmt::Debug for MediaService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaService")
            .field("local", &self.local)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

impl MediaService {
    /// Fetches with `config`'s bounds into `sink`; `local` is served at
    /// `{public_url}/media/` (given when it is the sink, or when private
    /// outbound URLs are relayed through it).
    pub fn new(
        config: &crate::config::MediaConfig,
        sink: Arc<dyn MediaSink>,
        local: Option<Arc<LocalMedia>>,
    ) -> Result<Self, String> {
        Ok(MediaService {
            fetcher: Fetcher::new(Duration::from_secs(config.timeout_secs))?,
            sink,
            local,
            max_bytes: config.max_bytes,
            delete_at_carrier: config.delete_at_carrier,
            permits: tokio::sync::Semaphore::new(FETCHES_AT_ONCE),
        })
    }

    /// The files served at `/media/`, if any.
    pub fn local(&self) -> Option<&LocalMedia> {
        self.local.as_deref()
    }

    /// Fetches each of `sms`'s media not yet fetched, for `user`, and
    /// records in it what became of each. Temporary failures are retried
    /// (`delay(attempt)` apart) until `retry_until` (Unix seconds); then,
    /// as for a permanent failure, the item is marked failed with the
    /// reason. `None` if `shutdown` came first: nothing is recorded, and
    /// the text stays in the store to be fetched after the restart.
    pub async fn fetch_all(
        &self,
        provider: &dyn PstnProvider,
        user: &str,
        sms: &mut InboundSms,
        retry_until: u64,
        delay: impl Fn(u32) -> Duration,
        shutdown: &CancellationToken,
    ) -> Option<()> {
        let count = sms.media.len();
        // Items fetched before a restart are not counted again: the bound
        // is on what one message makes the gateway download.
        let mut budget = self.max_bytes;
        let auth = |u: &Uri| provider.media_authorization(u);
        for (index, media) in sms.media.iter_mut().enumerate() {
            if media.fetched.is_some() {
                continue;
            }
            let mut attempt = 0;
            let outcome = loop {
                let result = {
                    let _permit = tokio::select! {
                        () = shutdown.cancelled() => return None,
                        p = self.permits.acquire() => p.expect("never closed"),
                    };
                    let fetched = tokio::select! {
                        () = shutdown.cancelled() => return None,
                        r = self.fetcher.fetch(&auth, media, index, budget) => r,
                    };
                    match fetched {
                        Ok(item) => {
                            let size = item.bytes.len() as u64;
                            match self.sink.put(user, item).await {
                                Ok(url) => Ok((url, size)),
                                Err(e) => Err(e),
                            }
                        }
                        Err(e) => Err(e),
                    }
                };
                match result {
                    Ok((url, size)) => {
                        budget = budget.saturating_sub(size);
                        tracing::info!(index, count, size, "fetched an inbound media item");
                        if self.delete_at_carrier {
                            match provider.delete_media(media).await {
                                Ok(true) => {
                                    tracing::info!(index, "deleted the media item at the carrier")
                                }
                                Ok(false) => {}
                                Err(e) => {
                                    tracing::warn!(index, error = %e, "cannot delete a media item at the carrier")
                                }
                            }
                        }
                        break Fetched::Served { url };
                    }
                    Err(FetchError::Temporary(why)) => {
                        let wait = delay(attempt);
                        let now = crate::unix_now();
                        if now.saturating_add(wait.as_secs()) > retry_until {
                            tracing::warn!(index, attempts = attempt + 1, reason = %why, "giving up on an inbound media item");
                            break Fetched::Failed {
                                reason: format!("{why}, and still after {} tries", attempt + 1),
                            };
                        }
                        tracing::info!(index, attempt = attempt + 1, retry_in = ?wait, reason = %why, "cannot fetch an inbound media item yet; retrying");
                        tokio::select! {
                            () = shutdown.cancelled() => return None,
                            () = tokio::time::sleep(wait) => {}
                        }
                        attempt += 1;
                    }
                    Err(FetchError::Permanent(why)) => {
                        tracing::warn!(index, reason = %why, "cannot fetch an inbound media item");
                        break Fetched::Failed { reason: why };
                    }
                }
            };
            media.fetched = Some(outcome);
        }
        Some(())
    }
}

impl MediaService {
    /// Fetches a user's media link on a private address (no credentials)
    /// and serves it at `/media/`, for the carrier to fetch: the URL to
    /// hand the carrier instead.
    pub async fn relay(&self, url: &str) -> Result<String, FetchError> {
        let Some(local) = &self.local else {
            return Err(FetchError::Permanent(
                "the gateway has no media directory to relay it through".into(),
            ));
        };
        let item = self
            .fetcher
            .fetch_within(&|_| None, &Media::new(url, None), 0, self.max_bytes, true)
            .await?;
        local.put("", item).await
    }
}
