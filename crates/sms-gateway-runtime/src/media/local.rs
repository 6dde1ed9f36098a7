//! Files under a directory, served by the gateway's own HTTP server.

use super::{FetchError, Item, MediaSink};
use crate::http::HeaderValue;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// What [`LocalMedia`] knows of one file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    name: String,
    content_type: String,
    size: u64,
    /// Unix seconds.
    created: u64,
    /// Orders files written in the same second.
    #[serde(default)]
    seq: u64,
}

#[derive(Default)]
struct Index {
    by_id: HashMap<String, Entry>,
    total: u64,
    next_seq: u64,
}

/// Files under a directory, served at `{public_url}/media/{id}/{name}`.
/// Each file is `{id}` with `{id}.json` beside it (its name, type, size,
/// time); ids are 128 random bits in hex. Files older than `keep` are
/// deleted, and the oldest first while the total is over `max_total`.
pub struct LocalMedia {
    dir: PathBuf,
    public_base: String,
    keep: Duration,
    max_total: u64,
    index: Mutex<Index>,
}

impl std::fmt::Debug for LocalMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalMedia")
            .field("dir", &self.dir)
            .field("public_base", &self.public_base)
            .finish_non_exhaustive()
    }
}

impl LocalMedia {
    /// Opens (creating it, mode 0700) the directory `dir`, whose files are
    /// served under `public_base` (`{public_url}/media`).
    pub fn open(
        dir: &Path,
        public_base: &str,
        keep: Duration,
        max_total: u64,
    ) -> std::io::Result<Self> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
        let mut index = Index::default();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .filter(|id| is_id(id))
            else {
                // A `.part` left by a crash mid-write.
                if path.extension().is_some_and(|e| e == "part") {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            };
            let meta: Option<Entry> = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            match meta {
                Some(meta) if dir.join(id).is_file() => {
                    index.total += meta.size;
                    index.next_seq = index.next_seq.max(meta.seq + 1);
                    index.by_id.insert(id.to_owned(), meta);
                }
                _ => {
                    let _ = std::fs::remove_file(&path);
                    let _ = std::fs::remove_file(dir.join(id));
                }
            }
        }
        let media = LocalMedia {
            dir: dir.to_owned(),
            public_base: public_base.trim_end_matches('/').to_owned(),
            keep,
            max_total,
            index: Mutex::new(index),
        };
        media.prune(crate::unix_now());
        Ok(media)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many files and bytes are kept.
    pub fn usage(&self) -> (usize, u64) {
        let index = self.lock();
        (index.by_id.len(), index.total)
    }

    /// Deletes files older than `keep`, then the oldest while the total is
    /// over `max_total`. Returns how many were deleted.
    pub fn prune(&self, now: u64) -> usize {
        let mut index = self.lock();
        let cutoff = now.saturating_sub(self.keep.as_secs());
        let mut by_age: Vec<(u64, u64, String)> = index
            .by_id
            .iter()
            .map(|(id, e)| (e.created, e.seq, id.clone()))
            .collect();
        by_age.sort();
        let mut removed = 0;
        for (created, _, id) in by_age {
            if created >= cutoff && index.total <= self.max_total {
                break;
            }
            if let Some(e) = index.by_id.remove(&id) {
                index.total -= e.size;
                let _ = std::fs::remove_file(self.dir.join(&id));
                let _ = std::fs::remove_file(self.dir.join(format!("{id}.json")));
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(removed, "deleted old media files");
        }
        removed
    }

    /// Writes `item` (on a blocking thread: up to `media.max_bytes` and
    /// two fsyncs) and returns its id.
    async fn write(&self, item: Item, now: u64) -> std::io::Result<String> {
        let id = new_id()?;
        let seq = {
            let mut index = self.lock();
            index.next_seq += 1;
            index.next_seq
        };
        let entry = Entry {
            name: item.name.clone(),
            content_type: item.content_type.clone(),
            size: item.bytes.len() as u64,
            created: now,
            seq,
        };
        let (dir, file_id, meta) = (self.dir.clone(), id.clone(), entry.clone());
        tokio::task::spawn_blocking(move || write_files(&dir, &file_id, &item.bytes, &meta))
            .await
            .map_err(std::io::Error::other)??;
        let mut index = self.lock();
        index.total += entry.size;
        index.by_id.insert(id.clone(), entry);
        Ok(id)
    }

    /// Answers `GET`/`HEAD` of `{id}/{name}` (the path after `/media/`):
    /// the file with its type, length, ranges and caching headers; 404 for
    /// anything else, with no hint.
    pub async fn serve(
        &self,
        rest: &str,
        request: axum::extract::Request,
    ) -> axum::response::Response {
        use axum::http::{header, StatusCode};
        use axum::response::IntoResponse;
        let not_found = || {
            (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "not found\n",
            )
                .into_response()
        };
        if !matches!(
            *request.method(),
            axum::http::Method::GET | axum::http::Method::HEAD
        ) {
            return (
                StatusCode::METHOD_NOT_ALLOWED,
                [(header::ALLOW, "GET, HEAD")],
                "use GET\n",
            )
                .into_response();
        }
        let Some((id, name)) = rest.split_once('/') else {
            return not_found();
        };
        if !is_id(id) {
            return not_found();
        }
        let Some(entry) = self.lock().by_id.get(id).cloned() else {
            return not_found();
        };
        if entry.name != name {
            return not_found();
        }
        let file = match entry.content_type.parse() {
            Ok(mime) => tower_http::services::ServeFile::new_with_mime(self.dir.join(id), &mime),
            Err(_) => tower_http::services::ServeFile::new_with_mime(
                self.dir.join(id),
                &"application/octet-stream".parse().expect("a MIME type"),
            ),
        };
        let response = match tower::ServiceExt::oneshot(file, request).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        if response.status() == StatusCode::NOT_FOUND {
            // Deleted under our feet (pruned a moment ago).
            return not_found();
        }
        let (mut parts, body) = response.into_parts();
        let h = &mut parts.headers;
        // The bytes at an id never change; only the user should cache them.
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, max-age=2592000, immutable"),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        // Whatever a sender sends, it never runs as a page of this origin.
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; sandbox"),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        axum::response::Response::from_parts(parts, axum::body::Body::new(body))
    }
}

#[async_trait]
impl MediaSink for LocalMedia {
    async fn put(&self, _user: &str, item: Item) -> Result<String, FetchError> {
        let now = crate::unix_now();
        let name = item.name.clone();
        let id = self.write(item, now).await.map_err(|e| {
            tracing::error!(dir = %self.dir.display(), error = %e, "cannot write a media file");
            FetchError::Temporary("the gateway could not save it".into())
        })?;
        self.prune(now);
        Ok(format!("{}/{id}/{name}", self.public_base))
    }
}

/// Writes a file and its `.json` beside it, each through a `.part` renamed
/// into place once synced (a crash leaves a `.part`, removed at start).
fn write_files(dir: &Path, id: &str, bytes: &[u8], entry: &Entry) -> std::io::Result<()> {
    use std::io::Write;
    let write = |path: &Path, bytes: &[u8]| -> std::io::Result<()> {
        let part = path.with_extension("part");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&part)?;
        f.write_all(bytes)?;
        f.sync_data()?;
        std::fs::rename(&part, path)
    };
    write(&dir.join(id), bytes)?;
    write(
        &dir.join(format!("{id}.json")),
        &serde_json::to_vec(entry).map_err(std::io::Error::other)?,
    )
}

/// 128 random bits, in lower-case hex.
fn new_id() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(std::io::Error::other)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

pub(crate) fn is_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
