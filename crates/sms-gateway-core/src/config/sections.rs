//! The sections of the config file, their keys and defaults.

use crate::phone::PhoneNumber;
use crate::secret::Secret;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where inbound media go once fetched (`media.store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaStoreKind {
    /// Files under `media.dir`, served by the gateway's own HTTP server at
    /// `{public_url}/media/…`.
    #[default]
    Local,
    /// XEP-0363 HTTP upload to the user's server.
    Upload,
    /// Not fetched: the carrier's own URL goes to the user, as it is. It
    /// breaks with Twilio (its media URLs need the account's credentials)
    /// and Telnyx (its URLs expire); for tests and embedders.
    Link,
}

/// `[media]`: inbound MMS media are fetched with the carrier account's
/// credentials as they arrive and kept where the user can get them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// `local` (default), `upload` or `link`.
    #[serde(default)]
    pub store: MediaStoreKind,
    /// With `store = "local"`: the directory of the files. Default: `media`
    /// next to the store file.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// The most bytes fetched for one message, all its media together
    /// (carriers' MMS limit is about 5 MB).
    #[serde(default = "default_media_max_bytes")]
    pub max_bytes: u64,
    /// Seconds one fetch (or upload) may take, redirects included.
    #[serde(default = "default_media_timeout")]
    pub timeout_secs: u64,
    /// With `store = "local"`: days a file is served, then deleted.
    #[serde(default = "default_media_keep_days")]
    pub keep_days: u64,
    /// With `store = "local"`: the most bytes kept; past it the oldest files
    /// are deleted first.
    #[serde(default = "default_media_max_total")]
    pub max_total_bytes: u64,
    /// With `store = "upload"`: the upload service's JID. Default: found by
    /// service discovery on each user's server.
    #[serde(default)]
    pub upload_service: Option<String>,
    /// Delete each item at the carrier once fetched (Twilio keeps media
    /// until deleted; the others expire them themselves).
    #[serde(default)]
    pub delete_at_carrier: bool,
    /// Let users send media whose URL points at loopback, private or
    /// link-local addresses (or `localhost`): the gateway then fetches
    /// each one itself and hands the carrier its own `/media/` URL, which
    /// it can reach. Off, such chats are refused: the gateway never
    /// fetches from the operator's network for a user.
    #[serde(default)]
    pub relay_private_urls: bool,
    /// With `relay_private_urls`: the only `host:port` addresses the
    /// gateway relays from (the user's upload service, say
    /// `xmpp.lan:5281`). Required then; link-local addresses (cloud
    /// metadata services) are never relayed, and a redirect off the
    /// address is not followed (#27).
    #[serde(default)]
    pub relay_hosts: Vec<String>,
    /// How long an inbound text waits for its media before it is delivered
    /// without them, in seconds (with a line saying they are on the way;
    /// each follows when fetched, or a line says it failed). Default 20.
    #[serde(default = "default_media_wait")]
    pub wait_secs: u64,
}

fn default_media_wait() -> u64 {
    20
}

fn default_media_max_bytes() -> u64 {
    5_000_000
}

fn default_media_timeout() -> u64 {
    60
}

fn default_media_keep_days() -> u64 {
    30
}

fn default_media_max_total() -> u64 {
    1 << 30
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            store: MediaStoreKind::default(),
            dir: None,
            max_bytes: default_media_max_bytes(),
            timeout_secs: default_media_timeout(),
            keep_days: default_media_keep_days(),
            max_total_bytes: default_media_max_total(),
            upload_service: None,
            delete_at_carrier: false,
            relay_private_urls: false,
            relay_hosts: Vec::new(),
            wait_secs: default_media_wait(),
        }
    }
}

impl MediaConfig {
    /// The media directory for a store file at `store_path`: `media.dir`
    /// (relative to the store file's directory), or `media` next to it.
    pub fn resolve_dir(&self, store_path: &Path) -> PathBuf {
        let dir = store_path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        match &self.dir {
            Some(p) if p.is_absolute() => p.clone(),
            Some(p) => dir.join(p),
            None => dir.join("media"),
        }
    }
}

/// `[limits]`: what one user may make the gateway send, so that one
/// account (or whoever has its password) cannot run up the carrier bill.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// SMS sends (parts of texts) per user per minute, on average.
    #[serde(default = "default_texts_per_minute")]
    pub texts_per_minute: u32,
    /// How many sends a user may make at once before the rate applies.
    #[serde(default = "default_texts_burst")]
    pub texts_burst: u32,
    /// The most SMS segments one chat may take (as carriers bill them:
    /// 160 GSM-7 characters, 153 when split; 70 UCS-2 units, 67 when split).
    #[serde(default = "default_max_parts")]
    pub max_parts: usize,
    /// SMS segments per user per day, at most (none by default).
    #[serde(default)]
    pub texts_per_day: Option<u32>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            texts_per_minute: default_texts_per_minute(),
            texts_burst: default_texts_burst(),
            max_parts: default_max_parts(),
            texts_per_day: None,
        }
    }
}

fn default_texts_per_minute() -> u32 {
    30
}

fn default_texts_burst() -> u32 {
    20
}

fn default_max_parts() -> usize {
    10
}

/// `[store]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The SQLite file; relative paths are next to the config file. Default
    /// `sms-over-xmpp.db` next to the config file.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// A PostgreSQL database instead of the SQLite file:
    /// `postgres://user:password@host:5432/database` (a secret: it may
    /// hold the password; `SMS_OVER_XMPP_STORE__URL` sets it from the
    /// environment). Needs a build with the `postgres` feature (default).
    #[serde(default)]
    pub url: Option<Secret>,
    /// Days the receipt map and delivered inbound texts are kept.
    #[serde(default = "default_keep_days")]
    pub keep_days: u64,
    /// Days the carrier ids of inbound texts are remembered, so that a
    /// webhook replayed after its text has expired is still a repeat (at
    /// least `keep_days`).
    #[serde(default = "default_seen_days")]
    pub seen_days: u64,
}

fn default_seen_days() -> u64 {
    400
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: None,
            url: None,
            keep_days: default_keep_days(),
            seen_days: default_seen_days(),
        }
    }
}

fn default_keep_days() -> u64 {
    7
}

impl StoreConfig {
    /// The store file for a config loaded from `config_path`.
    pub fn resolve(&self, config_path: &Path) -> PathBuf {
        let dir = config_path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        match &self.path {
            Some(p) if p.is_absolute() => p.clone(),
            Some(p) => dir.join(p),
            None => dir.join("sms-over-xmpp.db"),
        }
    }

    /// How long entries are kept.
    pub fn keep(&self) -> crate::store::Retention {
        let days = |d: u64| std::time::Duration::from_secs(d.saturating_mul(86_400));
        crate::store::Retention {
            texts: days(self.keep_days),
            seen: days(self.seen_days),
        }
    }
}

/// `[cluster]`: several gateways on one PostgreSQL store serve one domain.
/// Its presence turns the sharing on; it needs `[store] url`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This instance's name, unique among those running at once: letters,
    /// digits, `.`, `_` and `-`, at most 64. Default: the host name
    /// (gethostname(2)) and a random part (`host-k3x9q2ab`), new at each
    /// start. A name whose lease a live instance renews is refused at start.
    #[serde(default)]
    pub instance: Option<String>,
    /// How long an instance's lease lasts, in seconds: renewed every third
    /// of it; when an instance stops renewing (killed, its machine lost,
    /// cut from the database), another takes its work over this long
    /// after. Default 15.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
}

fn default_lease_secs() -> u64 {
    15
}

impl ClusterConfig {
    /// This instance's name and lease.
    pub fn member(&self) -> crate::store::Member {
        let instance = self.instance.clone().unwrap_or_else(|| {
            // gethostname(2): the systemd unit's ProcSubset=pid hides
            // /proc/sys/kernel/hostname, which made every instance
            // `gateway-<pid>` (#27). A random part makes the name new at
            // each start and unique across machines with equal names.
            let host = host_name()
                .map(|h| {
                    h.chars()
                        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                        .take(48)
                        .collect::<String>()
                })
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "gateway".to_owned());
            let tag = crate::message::run_tag();
            format!("{host}-{}", &tag[..tag.len().min(8)])
        });
        crate::store::Member {
            instance,
            lease: std::time::Duration::from_secs(self.lease_secs),
        }
    }
}

/// The machine's host name, from gethostname(2).
fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: a buffer of the length given; the name is NUL-terminated
    // when it fits, and the last byte is kept NUL in any case.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if r != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    std::str::from_utf8(&buf[..end]).ok().map(str::to_owned)
}

/// `[retry]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// How long temporary carrier failures (network, 5xx, 429) are retried
    /// before the user is told, in seconds.
    #[serde(default = "default_retry_deadline")]
    pub deadline_secs: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            deadline_secs: default_retry_deadline(),
        }
    }
}

fn default_retry_deadline() -> u64 {
    3600
}

/// `[xmpp]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmppConfig {
    /// The XMPP server's component port, `host:port`.
    pub server: String,
    /// This component's domain, e.g. `sms.example.com`.
    pub domain: String,
    /// The component secret shared with the server.
    pub secret: Secret,
    /// Seconds between keep-alive pings on an idle link; the link is
    /// considered dead after three intervals of silence.
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: u64,
}

fn yes() -> bool {
    true
}

fn default_keepalive() -> u64 {
    30
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Where the webhook server listens.
    pub listen: SocketAddr,
    /// The URL carriers call (what signatures are computed over), without
    /// the account part: `https://sms.example.com/hooks`.
    pub public_url: String,
    /// Webhook connections open at once; more wait to be accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers (and the most an
    /// idle kept-alive connection stays open).
    #[serde(default = "default_http_timeout")]
    pub header_timeout_secs: u64,
    /// Seconds a client has to send a request's body.
    #[serde(default = "default_http_timeout")]
    pub body_timeout_secs: u64,
    /// Largest form-encoded webhook body (Twilio, SignalWire), in bytes.
    #[serde(default = "default_max_form_body")]
    pub max_form_body: usize,
    /// Largest webhook body of any other type (Telnyx's JSON), in bytes.
    #[serde(default = "default_max_body")]
    pub max_body: usize,
    /// Seconds a webhook waits for the Gateway to take what it carried;
    /// past that it is answered 503 and the carrier retries.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout_secs: u64,
}

fn default_max_connections() -> usize {
    256
}

fn default_http_timeout() -> u64 {
    10
}

fn default_max_form_body() -> usize {
    64 * 1024
}

fn default_max_body() -> usize {
    256 * 1024
}

fn default_ack_timeout() -> u64 {
    5
}

impl HttpConfig {
    /// `public_url` without a trailing `/`.
    pub fn public_base(&self) -> &str {
        self.public_url.trim_end_matches('/')
    }

    /// The path part of `public_url` without a trailing `/` (`/hooks`, or `""`).
    pub fn base_path(&self) -> String {
        let path = self
            .public_url
            .parse::<http::Uri>()
            .map(|u| u.path().to_owned())
            .unwrap_or_default();
        path.trim_end_matches('/').to_owned()
    }
}

/// `[phone]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhoneConfig {
    /// Put in front of numbers typed without `+`, e.g. `+1`.
    pub default_prefix: Option<String>,
    /// Read numbers typed without `+` as national numbers of this country
    /// (ISO 3166 code, e.g. `US`, `GB`); wins over `default_prefix`.
    pub default_region: Option<String>,
}

impl PhoneConfig {
    /// Parses a number a user typed, with these defaults.
    pub fn parse(&self, input: &str) -> Result<PhoneNumber, crate::PhoneError> {
        PhoneNumber::parse_with(
            input,
            self.default_region.as_deref(),
            self.default_prefix.as_deref(),
        )
    }
}

/// `[providers.NAME]`: `type` picks the provider; the other keys are its own.
#[derive(Clone, Deserialize)]
pub struct ProviderConfig {
    /// The provider type, e.g. `twilio` or `sandbox`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Split a text longer than one request allows into several sends
    /// (default), or refuse it with an error.
    #[serde(default = "yes")]
    pub split_long: bool,
    /// Numbers of this account that users may pick when they register
    /// (`[registration]`), E.164.
    #[serde(default)]
    pub registration_numbers: Vec<String>,
    /// The provider's own settings (credentials among them: never log these).
    #[serde(flatten)]
    pub settings: BTreeMap<String, serde_json::Value>,
}

impl std::fmt::Debug for ProviderConfig {
    /// The provider's own keys hold its credentials, and core cannot know
    /// which: their names are shown, never their values (invariant 4).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("kind", &self.kind)
            .field("split_long", &self.split_long)
            .field("settings", &self.settings.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// `[[users]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The user's bare JID.
    pub jid: String,
    /// The user's own phone number, E.164.
    pub number: String,
    /// The provider account the user's texts go through.
    pub provider: String,
}

/// `[registration]`: who may register from their XMPP client (XEP-0077),
/// picking one of the numbers the accounts offer
/// (`providers.NAME.registration_numbers`). Closed unless `open_to` names
/// JID domains.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationConfig {
    /// The JID domains whose users may register, e.g. `["example.com"]`.
    #[serde(default)]
    pub open_to: Vec<String>,
    /// Registrations wait for an admin's approval (*Pending registrations*).
    #[serde(default)]
    pub approval: bool,
}

impl RegistrationConfig {
    /// Whether a user of `domain` may register.
    pub fn open_to_domain(&self, domain: &str) -> bool {
        self.open_to.iter().any(|d| d.eq_ignore_ascii_case(domain))
    }
}

/// `[admins]`: who may run the admins' commands.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminsConfig {
    /// Bare JIDs.
    #[serde(default)]
    pub jids: Vec<String>,
}

/// `[metrics]`: Prometheus metrics and health checks, on a listener of
/// their own (never the public webhook port). Off unless `listen` is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where `/metrics`, `/healthz` and `/readyz` are served, e.g.
    /// `127.0.0.1:9678`.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}

/// `[log]`: how the log is written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (the default, for people) or `json` (one object a line, for
    /// log shippers); `--log-format` wins.
    #[serde(default)]
    pub format: LogFormat,
}

/// The log's format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[groups]`: group texts (a group MMS shown as a group chat).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupsConfig {
    /// On an account whose carrier has no group texts (Twilio's and
    /// SignalWire's Messages APIs), a group chat is sent as separate texts
    /// to each participant, and the room says so. Off: such a send is
    /// refused with an error saying why.
    #[serde(default)]
    pub fan_out: bool,
}
