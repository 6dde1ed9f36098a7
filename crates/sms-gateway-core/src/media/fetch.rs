//! Fetching an item from a carrier: credentials only where the carrier
//! says, redirects followed, size bounded, the type found, a safe name.

use super::{failure_line, is_private_url, FetchError, Item, Media};
use crate::http::{GetError, HeaderValue, Uri};
use std::time::Duration;

/// The most redirects one fetch follows.
const MAX_REDIRECTS: usize = 5;

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
    /// ([`PstnProvider::media_authorization`](crate::PstnProvider::media_authorization)).
    pub async fn fetch(
        &self,
        auth: &(dyn Fn(&Uri) -> Option<HeaderValue> + Sync),
        media: &Media,
        index: usize,
        limit: u64,
    ) -> Result<Item, FetchError> {
        self.fetch_within(auth, media, index, limit, false).await
    }

    /// [`Fetcher::fetch`]; with `same_origin`, a redirect off the first
    /// URL's origin is refused, not followed (a relay for a user, #27).
    pub async fn fetch_within(
        &self,
        auth: &(dyn Fn(&Uri) -> Option<HeaderValue> + Sync),
        media: &Media,
        index: usize,
        limit: u64,
        same_origin: bool,
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
                    if same_origin && !self::same_origin(&first, &url) {
                        return Err(FetchError::Permanent(
                            "it redirected off the address it may be relayed from".into(),
                        ));
                    }
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
pub(crate) fn follow(from: &Uri, location: &str) -> Option<Uri> {
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
pub(crate) fn content_type(carrier: Option<&str>, server: Option<&str>, bytes: &[u8]) -> String {
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
pub(crate) fn is_token_pair(t: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    matches!(t.split_once('/'), Some((a, b)) if token(a) && token(b))
}

/// The usual file extension for a type, for the ones MMS carry.
pub(crate) fn extension(content_type: &str) -> Option<&'static str> {
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
pub(crate) fn file_name(url: &Uri, index: usize, content_type: &str) -> String {
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
pub(crate) fn human_bytes(n: u64) -> String {
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
