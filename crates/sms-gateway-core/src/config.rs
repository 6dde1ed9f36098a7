//! Configuration: the TOML file, environment overrides, and the checks that
//! turn a typo into a message naming the key.
//!
//! Loading is figment: the file first, then any `SMS_OVER_XMPP_<SECTION>__<KEY>`
//! variable (e.g. `SMS_OVER_XMPP_XMPP__SECRET`) on top. [`Config::validate`]
//! checks everything that can be checked without connecting anywhere; the
//! `check` command runs exactly that.

use crate::phone::PhoneNumber;
use crate::provider::{ProviderContext, ProviderRegistry, PstnProvider};
use crate::secret::Secret;
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The prefix of environment variables that override config keys.
pub const ENV_PREFIX: &str = "SMS_OVER_XMPP_";

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The link to the XMPP server.
    pub xmpp: XmppConfig,
    /// The webhook server.
    pub http: HttpConfig,
    /// How numbers users type are read.
    #[serde(default)]
    pub phone: PhoneConfig,
    /// Carrier accounts by name.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Who may use the gateway, with which number and account.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Names for numbers: `"+15557654321" = "Jane Roe"`, and an optional
    /// `lookup` command for the rest.
    #[serde(default)]
    pub caller_id: BTreeMap<String, String>,
    /// The durable store.
    #[serde(default)]
    pub store: StoreConfig,
    /// Retries of temporary carrier failures.
    #[serde(default)]
    pub retry: RetryConfig,
    /// What one user may make the gateway send.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Pictures and other media of MMS.
    #[serde(default)]
    pub media: MediaConfig,
}

/// Where inbound media go once fetched (`media.store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
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
    /// The most parts one chat may be split into.
    #[serde(default = "default_max_parts")]
    pub max_parts: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            texts_per_minute: default_texts_per_minute(),
            texts_burst: default_texts_burst(),
            max_parts: default_max_parts(),
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
            .parse::<axum::http::Uri>()
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
    /// The provider's own settings (credentials among them: never log these).
    #[serde(flatten)]
    settings: BTreeMap<String, serde_json::Value>,
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

/// A config that cannot be used, and why, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file is missing or unreadable.
    #[error("config file {path}: {reason}")]
    File {
        /// The path tried.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The file does not parse, or a key has the wrong type or is missing.
    #[error("config: {0}")]
    Parse(String),
    /// A key has a value that cannot work.
    #[error("config key `{key}` = {value:?}: {reason}")]
    Invalid {
        /// The key, e.g. `users[0].number`.
        key: String,
        /// The value found (never a secret).
        value: String,
        /// Why it cannot work.
        reason: String,
    },
}

fn invalid(
    key: impl Into<String>,
    value: impl Into<String>,
    reason: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

impl Config {
    /// Loads `path`, with environment overrides on top.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Self::from_figment(env_overrides(Figment::from(Toml::string(&text))))
    }

    /// Parses TOML text alone (no environment), for tests and embedders.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::from(Toml::string(text)))
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        // Lossy: a number or a flag given as a string (as every environment
        // override is) is read as one; a string stays exactly as written.
        figment
            .extract_lossy::<Config>()
            .map_err(|e| ConfigError::Parse(figment_error(e)))
    }

    /// What is allowed but unsafe, in sentences naming the key: plain
    /// `http://` for the URL carriers call or for a carrier's API (secrets
    /// and texts in clear), and an XEP-0114 link to another host (the
    /// protocol has no TLS: the secret's hash and every text cross the
    /// network in clear). `check` prints them; `run` logs them at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let plain = |url: &str| {
            url.parse::<axum::http::Uri>()
                .ok()
                .filter(|u| u.scheme_str() == Some("http"))
                .and_then(|u| u.host().map(str::to_owned))
        };
        if self.media.store == MediaStoreKind::Link {
            out.push("`media.store` = \"link\": users get the carriers' own media URLs, which need Twilio's credentials and expire at Telnyx; \"local\" or \"upload\" fetch them for the users".into());
        }
        if let Some(host) = plain(&self.http.public_url) {
            if !is_loopback_host(&host) {
                out.push(format!("`http.public_url` is plain http://: carriers will send texts and signatures to {host} unencrypted; use https:// behind a TLS proxy"));
            }
        }
        for (name, p) in &self.providers {
            if let Some(serde_json::Value::String(base)) = p.settings.get("api_base") {
                if let Some(host) = plain(base) {
                    if !is_loopback_host(&host) {
                        out.push(format!("`providers.{name}.api_base` is plain http://: credentials and texts would go to {host} unencrypted"));
                    }
                }
            }
        }
        let host = self
            .xmpp
            .server
            .rsplit_once(':')
            .map_or(self.xmpp.server.as_str(), |(h, _)| h);
        if !is_loopback_host(host.trim_start_matches('[').trim_end_matches(']')) {
            out.push(format!("`xmpp.server` = {:?} is not on this machine: XEP-0114 links are unencrypted, so keep the server's component port on loopback or a private network", self.xmpp.server));
        }
        out
    }

    /// Checks everything that can be checked without connecting, and builds
    /// the provider accounts: what `sms-over-xmpp check` reports.
    pub fn validate(&self, registry: &ProviderRegistry) -> Result<Providers, ConfigError> {
        if self.xmpp.server.parse::<SocketAddr>().is_err()
            && !looks_like_host_port(&self.xmpp.server)
        {
            return Err(invalid(
                "xmpp.server",
                &self.xmpp.server,
                "expected host:port of the XMPP server's component port",
            ));
        }
        if self.xmpp.domain.is_empty()
            || self.xmpp.domain.contains(['@', '/', ' '])
            || !self.xmpp.domain.contains('.') && self.xmpp.domain != "localhost"
        {
            return Err(invalid(
                "xmpp.domain",
                &self.xmpp.domain,
                "expected a domain name such as sms.example.com",
            ));
        }
        if self.xmpp.secret.is_empty() {
            return Err(invalid("xmpp.secret", "", "must not be empty"));
        }
        if self.store.keep_days == 0 {
            return Err(invalid("store.keep_days", "0", "must be at least 1"));
        }
        if self.store.seen_days < self.store.keep_days {
            return Err(invalid(
                "store.seen_days",
                self.store.seen_days.to_string(),
                format!(
                    "must be at least store.keep_days ({}): carrier ids outlive their texts",
                    self.store.keep_days
                ),
            ));
        }
        if self.xmpp.keepalive_secs == 0 {
            return Err(invalid("xmpp.keepalive_secs", "0", "must be at least 1"));
        }
        // Upper bounds: past them a value is a typo, and some would overflow
        // a clock's arithmetic at run time rather than fail here.
        const HOUR: u64 = 3600;
        for (key, value, most) in [
            ("xmpp.keepalive_secs", self.xmpp.keepalive_secs, HOUR),
            (
                "http.header_timeout_secs",
                self.http.header_timeout_secs,
                HOUR,
            ),
            ("http.body_timeout_secs", self.http.body_timeout_secs, HOUR),
            ("http.ack_timeout_secs", self.http.ack_timeout_secs, HOUR),
            (
                "http.max_connections",
                self.http.max_connections as u64,
                65_536,
            ),
            (
                "http.max_form_body",
                self.http.max_form_body as u64,
                64 << 20,
            ),
            ("http.max_body", self.http.max_body as u64, 64 << 20),
            (
                "retry.deadline_secs",
                self.retry.deadline_secs,
                30 * 24 * HOUR,
            ),
            ("store.keep_days", self.store.keep_days, 36_500),
            ("store.seen_days", self.store.seen_days, 36_500),
            ("limits.max_parts", self.limits.max_parts as u64, 1_000),
            ("media.max_bytes", self.media.max_bytes, 1 << 30),
            ("media.timeout_secs", self.media.timeout_secs, HOUR),
            ("media.keep_days", self.media.keep_days, 36_500),
            ("media.max_total_bytes", self.media.max_total_bytes, 1 << 50),
        ] {
            if value > most {
                return Err(invalid(
                    key,
                    value.to_string(),
                    format!("must be at most {most}"),
                ));
            }
        }
        for (key, value) in [
            (
                "limits.texts_per_minute",
                u64::from(self.limits.texts_per_minute),
            ),
            ("limits.texts_burst", u64::from(self.limits.texts_burst)),
            ("limits.max_parts", self.limits.max_parts as u64),
            ("http.max_connections", self.http.max_connections as u64),
            ("http.header_timeout_secs", self.http.header_timeout_secs),
            ("http.body_timeout_secs", self.http.body_timeout_secs),
            ("http.max_form_body", self.http.max_form_body as u64),
            ("http.max_body", self.http.max_body as u64),
            ("http.ack_timeout_secs", self.http.ack_timeout_secs),
            ("media.max_bytes", self.media.max_bytes),
            ("media.timeout_secs", self.media.timeout_secs),
            ("media.keep_days", self.media.keep_days),
            ("media.max_total_bytes", self.media.max_total_bytes),
        ] {
            if value == 0 {
                return Err(invalid(key, "0", "must be at least 1"));
            }
        }
        if (self.limits.texts_burst as usize) < self.limits.max_parts {
            return Err(invalid(
                "limits.texts_burst",
                self.limits.texts_burst.to_string(),
                format!(
                    "must be at least limits.max_parts ({}), or a text of that many parts could never be sent",
                    self.limits.max_parts
                ),
            ));
        }
        let url = &self.http.public_url;
        let parsed = url.parse::<axum::http::Uri>();
        let ok = matches!(&parsed, Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() && u.query().is_none());
        if !ok {
            return Err(invalid(
                "http.public_url",
                url,
                "expected an http(s) URL without a query, such as https://sms.example.com/hooks",
            ));
        }
        if let Some(prefix) = &self.phone.default_prefix {
            let digits = prefix.strip_prefix('+').unwrap_or("");
            if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(invalid(
                    "phone.default_prefix",
                    prefix,
                    "expected + and a country calling code, such as +1 or +44",
                ));
            }
        }
        if let Some(region) = &self.phone.default_region {
            if region.parse::<phonenumber::country::Id>().is_err() {
                return Err(invalid(
                    "phone.default_region",
                    region,
                    "expected an ISO 3166 country code such as US or GB",
                ));
            }
        }
        for (key, value) in &self.caller_id {
            if key == "lookup" {
                if !Path::new(value).is_absolute() {
                    return Err(invalid(
                        "caller_id.lookup",
                        value,
                        "expected the absolute path of a program",
                    ));
                }
                continue;
            }
            if let Err(e) = PhoneNumber::parse(key, None) {
                return Err(invalid(
                    format!("caller_id.\"{key}\""),
                    value,
                    format!("the key must be a number in E.164 form: {e}"),
                ));
            }
        }
        if let Some(service) = &self.media.upload_service {
            if !is_domain(service) {
                return Err(invalid(
                    "media.upload_service",
                    service,
                    "expected the JID of an XEP-0363 upload service, such as upload.example.com",
                ));
            }
        }
        if self.providers.contains_key("media") {
            return Err(invalid(
                "providers.media",
                "media",
                "`media` is the path of the gateway's media files; name the account otherwise",
            ));
        }
        let providers = self.build_providers(registry)?;
        let mut seen_jids = BTreeMap::new();
        let mut seen_numbers = BTreeMap::new();
        for (i, user) in self.users.iter().enumerate() {
            let jid = normalize_bare_jid(&user.jid).ok_or_else(|| {
                invalid(
                    format!("users[{i}].jid"),
                    &user.jid,
                    "expected a bare JID such as alice@example.com",
                )
            })?;
            if let Some(j) = seen_jids.insert(jid, i) {
                return Err(invalid(
                    format!("users[{i}].jid"),
                    &user.jid,
                    format!("the same JID is already users[{j}]"),
                ));
            }
            let number = PhoneNumber::parse(&user.number, None)
                .map_err(|e| invalid(format!("users[{i}].number"), &user.number, e.to_string()))?;
            if !providers.accounts.contains_key(&user.provider) {
                return Err(invalid(
                    format!("users[{i}].provider"),
                    &user.provider,
                    format!(
                        "no such account; configured: {}",
                        list(providers.accounts.keys().map(String::as_str))
                    ),
                ));
            }
            if let Some(j) = seen_numbers.insert((user.provider.clone(), number), i) {
                return Err(invalid(
                    format!("users[{i}].number"),
                    &user.number,
                    format!("the same number on the same account is already users[{j}]"),
                ));
            }
        }
        Ok(providers)
    }

    fn build_providers(&self, registry: &ProviderRegistry) -> Result<Providers, ConfigError> {
        let mut accounts = BTreeMap::new();
        for (name, p) in &self.providers {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid(
                    format!("providers.{name}"),
                    name,
                    "account names may hold only letters, digits, - and _ (they appear in webhook URLs)",
                ));
            }
            let factory = registry.get(&p.kind).ok_or_else(|| {
                invalid(
                    format!("providers.{name}.type"),
                    &p.kind,
                    format!(
                        "unknown provider type; this build knows: {}",
                        list(registry.kinds())
                    ),
                )
            })?;
            let ctx = ProviderContext {
                account: name.clone(),
                webhook_base: format!("{}/{name}", self.http.public_base()),
            };
            let settings = serde_json::Value::Object(p.settings.clone().into_iter().collect());
            let provider = factory(&ctx, settings).map_err(|e| ConfigError::Invalid {
                key: match &e.key {
                    Some(k) => format!("providers.{name}.{k}"),
                    None => format!("providers.{name}"),
                },
                value: format!("type = {}", p.kind),
                reason: e.reason,
            })?;
            accounts.insert(name.clone(), provider);
        }
        Ok(Providers { accounts })
    }
}

/// The provider accounts built from a validated config, by name.
#[derive(Clone, Default)]
pub struct Providers {
    /// Account name → provider.
    pub accounts: BTreeMap<String, Arc<dyn PstnProvider>>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.accounts.keys()).finish()
    }
}

/// Lower-cases a bare JID and checks its shape (`node@domain`, no resource).
/// The XMPP server has already applied stringprep to what it stamps on
/// stanzas; lower-casing is what makes the config compare equal to it.
pub fn normalize_bare_jid(jid: &str) -> Option<String> {
    let (node, domain) = jid.split_once('@')?;
    if node.is_empty() || domain.is_empty() || domain.contains(['@', '/']) || jid.contains(' ') {
        return None;
    }
    Some(jid.to_lowercase())
}

/// A domain name as XMPP addresses use them: `upload.example.com`.
fn is_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn looks_like_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    }
}

fn list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = items.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// `figment` with every `SMS_OVER_XMPP_<SECTION>__<KEY>` variable on top,
/// each as the exact string it holds. figment's own `Env` reads values as
/// TOML, which rewrote secrets: `"0123"` became the number 123 and `"true"`
/// a flag no secret field accepts. Numbers and flags are still read, by
/// [`Config::from_figment`]'s lossy extraction.
fn env_overrides(figment: Figment) -> Figment {
    // `SMS_OVER_XMPP_CONFIG` names the file; it is not a key.
    let vars = Env::prefixed(ENV_PREFIX).split("__").ignore(&["config"]);
    vars.iter().fold(figment, |f, (key, value)| {
        f.merge((key.as_str().to_owned(), value))
    })
}

/// Whether `host` names this machine (`localhost`, 127.0.0.0/8, ::1).
fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn figment_error(e: figment::Error) -> String {
    // figment reports the path as "default.xmpp"; say "xmpp.secret" instead.
    e.into_iter()
        .map(|e| {
            let key = e.path.join(".");
            // A value of the wrong type may be a secret: name it, not quote it.
            let kind = crate::text::redact_quoted(&e.kind.to_string());
            if key.is_empty() {
                kind
            } else {
                format!("`{key}`: {kind}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests;
