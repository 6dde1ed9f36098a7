//! Media of inbound MMS: fetched with the carrier account's credentials as
//! they arrive, and kept where the user can get them without credentials
//! (invariant 7).
//!
//! A carrier's media URL is not something to hand a user: Twilio's answer
//! 401 without the account's credentials, Telnyx's expire within hours,
//! and every open tells the carrier the user's address. So the PSTN
//! process fetches each item ([`Fetcher`]), bounded in size and time,
//! following the carrier's redirect to its CDN without the credentials,
//! and hands it to a [`MediaSink`]: in `sms-gateway-runtime`, `LocalMedia`
//! (files served by the gateway's own HTTP server at
//! `{public_url}/media/{id}/{name}`) or an XEP-0363 upload service on the
//! user's server (slots from `sms-xmpp`).

mod fetch;
#[cfg(test)]
mod tests;

#[doc(hidden)]
pub use fetch::check_names;
pub use fetch::{same_origin, Fetcher};

#[cfg(test)]
use fetch::{content_type, file_name, follow, human_bytes};

use crate::http::Uri;
use crate::message::Media;
use async_trait::async_trait;
use bytes::Bytes;
use fetch::is_token_pair;

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
pub enum FetchError {
    /// Trying again later may work (the server could not be reached,
    /// answered 5xx or 429, or the transfer broke off).
    #[error("{0}")]
    Temporary(String),
    /// It will not work (gone, refused, too large).
    #[error("{0}")]
    Permanent(String),
}

/// Where fetched media are kept for users.
#[async_trait]
pub trait MediaSink: Send + Sync + 'static {
    /// Keeps `item` for `user` (a bare JID) and returns the URL the user
    /// gets it at, which needs no credentials.
    async fn put(&self, user: &str, item: Item) -> Result<String, FetchError>;
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

/// Whether the gateway may relay media from `url` for a user, with
/// `media.relay_hosts` = `hosts`: only from one of those `host:port`
/// addresses (the port the scheme implies when the URL has none), never
/// from a link-local address (169.254.0.0/16, where cloud metadata
/// services answer, and fe80::/10). `Err` says why not.
pub fn relay_allowed(url: &str, hosts: &[String]) -> Result<(), String> {
    let uri = url
        .parse::<Uri>()
        .map_err(|_| "it is not a URL".to_owned())?;
    let host = uri.host().ok_or("it has no host")?.to_ascii_lowercase();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) if ip.is_link_local() => {
            return Err("link-local addresses are never relayed".into())
        }
        Ok(std::net::IpAddr::V6(ip))
            if (ip.segments()[0] & 0xffc0) == 0xfe80
                || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_link_local()) =>
        {
            return Err("link-local addresses are never relayed".into())
        }
        _ => {}
    }
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let authority = format!("{host}:{port}");
    if hosts.iter().any(|h| h.to_ascii_lowercase() == authority) {
        Ok(())
    } else {
        Err(format!("{authority} is not in media.relay_hosts"))
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
