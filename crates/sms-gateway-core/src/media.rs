//! Media of inbound MMS: fetched with the carrier account's credentials as
//! they arrive, and kept where the user can get them without credentials
//! (invariant 7).
//!
//! A carrier's media URL is not something to hand a user: Twilio's answer
//! 401 without the account's credentials, Telnyx's expire within hours,
//! and every open tells the carrier the user's address. So the PSTN
//! process fetches each item ([`Fetcher`]), bounded in size and time,
//! following the carrier's redirect to its CDN without the credentials,
//! and hands it to a [`MediaSink`]: [`LocalMedia`] (files served by the
//! gateway's own HTTP server at `{public_url}/media/{id}/{name}`) or an
//! XEP-0363 upload service on the user's server (in `sms-xmpp`).

use crate::http::{GetError, HeaderValue, Uri};
use crate::message::{Fetched, InboundSms, Media};
use crate::provider::PstnProvider;
use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The most redirects one fetch follows.
const MAX_REDIRECTS: usize = 5;

/// How many media are fetched at once, over all accounts.
const FETCHES_AT_ONCE: usize = 4;

/// One fetched item, ready to be kept.
#[derive(Clone)]
pub struct Item {
    /// The bytes.
    pub bytes: Bytes,
    /// Its MIME type (the carrier's word, else the server's, else a sniff).
    pub content_type: String,
    /// A file name for it: safe in a URL path and a header, with an
    /// extension that matches the type (clients decide from it whether to
    /// show a picture inline).
    pub name: String,
}

impl std::fmt::Debug for Item {
    // Never the bytes: they are somebody's picture.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Item")
            .field("len", &self.bytes.len())
            .field("content_type", &self.content_type)
            .field("name", &self.name)
            .finish()
    }
}

/// Why an item could not be fetched or kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// Trying again later may work (the server could not be reached,
    /// answered 5xx or 429, or the transfer broke off).
    #[error("{0}")]
    Temporary(String),
    /// It will not work (gone, refused, too large).
    #[error("{0}")]
    Permanent(String),
}

/// Fetches media from carriers.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: crate::http::Client,
}

impl Fetcher {
    /// A fetcher whose requests take at most `timeout` each.
    pub fn new(timeout: Duration) -> Result<Self, String> {
        Ok(Fetcher {
            client: crate::http::Client::new(timeout)?,
        })
    }

    /// Fetches `media` (item `index` of its message) with the credentials
    /// `auth` gives for each URL, reading at most `limit` bytes. Redirects
    /// are followed, the credentials going only where `auth` says
    /// ([`PstnProvider::media_authorization`]).
    pub async fn fetch(
        &self,
        auth: &(dyn Fn(&Uri) -> Option<HeaderValue> + Sync),
        media: &Media,
        index: usize,
        limit: u64,
    ) -> Result<Item, FetchError> {
        let first = crate::http::endpoint(&media.url).map_err(|_| {
            FetchError::Permanent("the carrier gave no usable address for it".into())
        })?;
        let mut url = first.clone();
        for _ in 0..=MAX_REDIRECTS {
            let auth = auth(&url);
            let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
            let answer = self
                .client
                .get(&url, auth.as_ref(), limit_usize)
                .await
                .map_err(|e| match e {
                    GetError::Connect(_) => FetchError::Temporary(
                        "the carrier's media server could not be reached".into(),
                    ),
                    GetError::Failed(d) => {
                        FetchError::Temporary(format!("the transfer failed ({d})"))
                    }
                    GetError::TooLarge => FetchError::Permanent(format!(
                        "it is larger than the {} allowed for one message (media.max_bytes)",
                        human_bytes(limit)
                    )),
                })?;
            let status = answer.status.as_u16();
            match status {
                200..=299 => {
                    let content_type = content_type(
                        media.content_type.as_deref(),
                        answer
                            .headers
                            .get(http::header::CONTENT_TYPE)
                            .and_then(|v| v.to_str().ok()),
                        &answer.body,
                    );
                    let name = file_name(&first, index, &content_type);
                    return Ok(Item {
                        bytes: answer.body,
                        content_type,
                        name,
                    });
                }
                301 | 302 | 303 | 307 | 308 => {
                    let location = answer
                        .headers
                        .get(http::header::LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .ok_or_else(|| {
                            FetchError::Permanent("the carrier redirected to nowhere".into())
                        })?;
                    url = follow(&url, location).ok_or_else(|| {
                        FetchError::Permanent(
                            "the carrier redirected to an unusable address".into(),
                        )
                    })?;
                }
                401 | 403 => {
                    return Err(FetchError::Permanent(format!(
                        "the carrier refused the gateway's credentials for it (HTTP {status})"
                    )))
                }
                404 | 410 => {
                    return Err(FetchError::Permanent(format!(
                        "the carrier no longer has it (HTTP {status})"
                    )))
                }
                408 | 429 | 500..=599 => {
                    return Err(FetchError::Temporary(format!(
                        "the carrier's media server answered HTTP {status}"
                    )))
                }
                _ => {
                    return Err(FetchError::Permanent(format!(
                        "the carrier's media server answered HTTP {status}"
                    )))
                }
            }
        }
        Err(FetchError::Permanent(
            "the carrier redirected too many times".into(),
        ))
    }
}

/// Where a redirect from `from` to `location` goes: an absolute http(s) URL
/// or an absolute path on the same server.
fn follow(from: &Uri, location: &str) -> Option<Uri> {
    if location.starts_with('/') && !location.starts_with("//") {
        let mut parts = from.clone().into_parts();
        parts.path_and_query = Some(location.parse().ok()?);
        return Uri::from_parts(parts).ok();
    }
    crate::http::endpoint(location).ok()
}

/// Whether two URLs are on the same origin (scheme, host and port): the
/// test for sending credentials.
pub fn same_origin(a: &Uri, b: &Uri) -> bool {
    let port = |u: &Uri| {
        u.port_u16().or(match u.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        })
    };
    a.scheme_str() == b.scheme_str()
        && a.host().map(str::to_ascii_lowercase) == b.host().map(str::to_ascii_lowercase)
        && port(a) == port(b)
}

/// The type of an item: the carrier's, else the server's, unless either is
/// missing or says only `application/octet-stream`; then what the bytes
/// look like.
fn content_type(carrier: Option<&str>, server: Option<&str>, bytes: &[u8]) -> String {
    let useful = |t: Option<&str>| {
        t.map(crate::provider::media_type)
            .filter(|t| !t.is_empty() && t != "application/octet-stream" && is_token_pair(t))
    };
    useful(carrier)
        .or_else(|| useful(server))
        .or_else(|| infer::get(bytes).map(|t| t.mime_type().to_owned()))
        .unwrap_or_else(|| "application/octet-stream".into())
}

/// `type/subtype` made of token characters: safe in a header.
fn is_token_pair(t: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    matches!(t.split_once('/'), Some((a, b)) if token(a) && token(b))
}

/// The usual file extension for a type, for the ones MMS carry.
fn extension(content_type: &str) -> Option<&'static str> {
    Some(match content_type {
        "image/jpeg" | "image/jpg" | "image/pjpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "image/heic" => "heic",
        "image/heif" => "heif",
        "image/bmp" => "bmp",
        "video/mp4" => "mp4",
        "video/3gpp" => "3gp",
        "video/3gpp2" => "3g2",
        "video/quicktime" => "mov",
        "audio/amr" => "amr",
        "audio/mpeg" => "mp3",
        "audio/mp4" => "m4a",
        "audio/ogg" => "ogg",
        "audio/wav" | "audio/x-wav" => "wav",
        "text/vcard" | "text/x-vcard" => "vcf",
        "text/plain" => "txt",
        "application/pdf" => "pdf",
        "application/smil" => "smil",
        _ => return None,
    })
}

/// A file name for item `index` fetched from `url`: the URL's last segment
/// cut to safe characters (letters, digits, `-`, `_`, `.`), or
/// `attachment-N`, with the type's extension added when it has none.
fn file_name(url: &Uri, index: usize, content_type: &str) -> String {
    let last = url.path().rsplit('/').next().unwrap_or("");
    let mut name: String = last
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect();
    name = name.trim_start_matches('.').to_owned();
    if name.is_empty() {
        name = format!("attachment-{}", index + 1);
    }
    let has_extension = name
        .rsplit_once('.')
        .is_some_and(|(stem, ext)| !stem.is_empty() && (1..=5).contains(&ext.len()));
    if !has_extension {
        if let Some(ext) = extension(content_type) {
            name.push('.');
            name.push_str(ext);
        }
    }
    name
}

/// For the fuzz target: what the gateway makes of a carrier's URL, the
/// types it reports and a redirect, checked against the rules (a file name
/// safe anywhere, a type safe in a header, redirects only to http(s)).
#[doc(hidden)]
pub fn check_names(carrier_type: &str, server_type: &str, url: &str, location: &str, bytes: &[u8]) {
    let t = content_type(Some(carrier_type), Some(server_type), bytes);
    assert!(
        t == "application/octet-stream" || is_token_pair(&t),
        "{t:?}"
    );
    if let Ok(u) = crate::http::endpoint(url) {
        let name = file_name(&u, 0, &t);
        assert!(
            !name.is_empty()
                && name.len() <= 70
                && !name.starts_with('.')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "{name:?}"
        );
        if let Some(next) = follow(&u, location) {
            assert!(matches!(next.scheme_str(), Some("http" | "https")));
            assert!(next.host().is_some());
        }
    }
    let _ = is_private_url(url);
    let line = failure_line(0, 2, &Media::new(url, Some(carrier_type.to_owned())), "x");
    assert!(!line.contains("://"), "a URL in {line:?}");
}

/// `5 MB`, `300 KB`, `12 bytes`.
fn human_bytes(n: u64) -> String {
    if n >= 1_000_000 && n % 100_000 == 0 {
        format!("{} MB", n as f64 / 1e6)
    } else if n >= 1_000_000 {
        format!("{:.1} MB", n as f64 / 1e6)
    } else if n >= 1000 {
        format!("{} KB", n / 1000)
    } else {
        format!("{n} bytes")
    }
}

/// Where fetched media are kept for users.
#[async_trait]
pub trait MediaSink: Send + Sync + 'static {
    /// Keeps `item` for `user` (a bare JID) and returns the URL the user
    /// gets it at, which needs no credentials.
    async fn put(&self, user: &str, item: Item) -> Result<String, FetchError>;
}

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
        media.prune(crate::time::unix_now());
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
        let now = crate::time::unix_now();
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

fn is_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

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
                        let now = crate::time::unix_now();
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

/// Whether `url`'s host is this machine or a private network: `localhost`
/// (and `*.localhost`), or an address that is loopback, private (RFC
/// 1918, RFC 6598, IPv6 unique local), link-local or unspecified. Names
/// are not resolved.
pub fn is_private_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<Uri>() else {
        return false;
    };
    let Some(host) = uri.host() else {
        return false;
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => is_private_v4(ip),
        Ok(std::net::IpAddr::V6(ip)) => {
            if let Some(v4) = ip.to_ipv4_mapped() {
                return is_private_v4(v4);
            }
            let first = ip.segments()[0];
            ip.is_loopback()
                || ip.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
        Err(_) => false,
    }
}

fn is_private_v4(ip: std::net::Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || (a == 100 && (64..128).contains(&b))
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
            .fetch(&|_| None, &Media::new(url, None), 0, self.max_bytes)
            .await?;
        local.put("", item).await
    }
}

/// The line a user gets for an item that could not be fetched: which one
/// (`2 of 3`, its type if the carrier said) and why, never its URL.
pub fn failure_line(index: usize, count: usize, media: &Media, reason: &str) -> String {
    let which = if count > 1 {
        format!("Attachment {} of {count}", index + 1)
    } else {
        "An attachment".to_owned()
    };
    let kind = media
        .content_type
        .as_deref()
        .map(crate::provider::media_type)
        .filter(|t| is_token_pair(t))
        .map(|t| format!(" ({t})"))
        .unwrap_or_default();
    format!("[{which}{kind} could not be fetched: {reason}.]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_and_carry_the_types_extension() {
        let u = |s: &str| s.parse::<Uri>().unwrap();
        let twilio = u("https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME123");
        assert_eq!(file_name(&twilio, 0, "image/jpeg"), "ME123.jpg");
        assert_eq!(
            file_name(
                &u("https://cdn.example/a/cat%20pic.png?x=1"),
                0,
                "image/png"
            ),
            "cat20pic.png"
        );
        assert_eq!(
            file_name(&u("https://x.example/"), 2, "video/mp4"),
            "attachment-3.mp4"
        );
        assert_eq!(
            file_name(
                &u("https://x.example/..%2F..%2Fetc"),
                0,
                "application/x-unknown"
            ),
            "2F..2Fetc"
        );
        assert_eq!(
            file_name(&u("https://x.example/.htaccess"), 0, "text/plain"),
            "htaccess.txt"
        );
        let long = format!("https://x.example/{}", "a".repeat(500));
        assert_eq!(file_name(&u(&long), 0, "image/gif").len(), 68);
    }

    #[test]
    fn the_type_is_the_carriers_then_the_servers_then_a_sniff() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert_eq!(
            content_type(Some("image/jpeg"), Some("image/png"), png),
            "image/jpeg"
        );
        assert_eq!(content_type(None, Some("image/gif; x=y"), png), "image/gif");
        assert_eq!(
            content_type(
                Some("application/octet-stream"),
                Some("application/octet-stream"),
                png
            ),
            "image/png"
        );
        assert_eq!(
            content_type(Some("text/html\r\nX: y"), None, b"??"),
            "application/octet-stream"
        );
        assert_eq!(
            content_type(None, None, b"\xff\xd8\xff\xe0\0\x10JFIF"),
            "image/jpeg"
        );
    }

    #[test]
    fn redirects_and_origins() {
        let from: Uri = "https://api.twilio.com/2010-04-01/x".parse().unwrap();
        assert_eq!(
            follow(&from, "/y/z?a=1").unwrap().to_string(),
            "https://api.twilio.com/y/z?a=1"
        );
        assert_eq!(
            follow(&from, "https://cdn.example/p").unwrap().to_string(),
            "https://cdn.example/p"
        );
        assert!(follow(&from, "//evil.example/p").is_none());
        assert!(follow(&from, "file:///etc/passwd").is_none());
        assert!(follow(&from, "relative").is_none());
        let a: Uri = "https://api.twilio.com/a".parse().unwrap();
        assert!(same_origin(
            &a,
            &"https://API.twilio.com:443/b".parse().unwrap()
        ));
        assert!(!same_origin(
            &a,
            &"http://api.twilio.com/b".parse().unwrap()
        ));
        assert!(!same_origin(
            &a,
            &"https://api.twilio.com.evil.example/b".parse().unwrap()
        ));
        assert!(!same_origin(
            &a,
            &"https://api.twilio.com:8443/b".parse().unwrap()
        ));
    }

    #[test]
    fn private_addresses_are_recognised() {
        for private in [
            "http://localhost/a.jpg",
            "http://upload.localhost:5280/a.jpg",
            "http://127.0.0.1/a",
            "https://10.1.2.3/a",
            "http://172.16.0.1/a",
            "http://192.168.1.1/a",
            "http://169.254.169.254/latest/meta-data",
            "http://100.64.0.1/a",
            "http://0.0.0.0/a",
            "http://[::1]/a",
            "http://[fd00::1]/a",
            "http://[fe80::1]/a",
            "http://[::ffff:127.0.0.1]/a",
        ] {
            assert!(is_private_url(private), "{private}");
        }
        for public in [
            "https://upload.example.com/a.jpg",
            "https://8.8.8.8/a",
            "http://[2001:db8::1]/a",
            "https://172.32.0.1/a",
        ] {
            assert!(!is_private_url(public), "{public}");
        }
    }

    #[test]
    fn failure_lines_name_the_item_not_the_url() {
        let m = Media::new("https://secret.example/abc", Some("image/png".into()));
        let line = failure_line(1, 3, &m, "the carrier no longer has it (HTTP 404)");
        assert_eq!(
            line,
            "[Attachment 2 of 3 (image/png) could not be fetched: the carrier no longer has it (HTTP 404).]"
        );
        assert!(!line.contains("secret"));
        assert_eq!(human_bytes(5_000_000), "5 MB");
        assert_eq!(human_bytes(300_000), "300 KB");
    }

    fn item(bytes: &'static [u8], name: &str) -> Item {
        Item {
            bytes: Bytes::from_static(bytes),
            content_type: "image/png".into(),
            name: name.into(),
        }
    }

    #[tokio::test]
    async fn local_files_are_private_and_pruned_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("media");
        let local = LocalMedia::open(
            &path,
            "https://gw.example/hooks/media",
            Duration::from_secs(86_400),
            10,
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{mode:o}");
        }
        let a = local.put("u@x", item(b"12345", "a.png")).await.unwrap();
        assert!(a.starts_with("https://gw.example/hooks/media/"), "{a}");
        assert!(a.ends_with("/a.png"), "{a}");
        let id = a.rsplit('/').nth(1).unwrap();
        assert!(is_id(id), "{id}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path.join(id))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
        let b = local.put("u@x", item(b"123456", "b.png")).await.unwrap();
        // 11 bytes > 10: the oldest went.
        assert_eq!(local.usage(), (1, 6));
        assert!(!path.join(id).exists());
        // Reopened, the index is read back.
        drop(local);
        let again = LocalMedia::open(
            &path,
            "https://gw.example/hooks/media",
            Duration::from_secs(86_400),
            10,
        )
        .unwrap();
        assert_eq!(again.usage(), (1, 6));
        // Expired by age.
        assert_eq!(again.prune(crate::time::unix_now() + 2 * 86_400), 1);
        assert_eq!(again.usage(), (0, 0));
        assert!(b.contains("/b.png"));
    }
}
