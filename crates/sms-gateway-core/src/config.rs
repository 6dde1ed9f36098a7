//! Configuration: the TOML file, environment overrides, and the checks that
//! turn a typo into a message naming the key.
//!
//! Loading is figment: the file first, then any `SMS_OVER_XMPP_<SECTION>__<KEY>`
//! variable (e.g. `SMS_OVER_XMPP_XMPP__SECRET`) on top. [`Config::validate`]
//! checks everything that can be checked without connecting anywhere; the
//! `check` command runs exactly that.

use crate::phone::PhoneNumber;
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    /// Several instances sharing the PostgreSQL store (absent: one).
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    /// Retries of temporary carrier failures.
    #[serde(default)]
    pub retry: RetryConfig,
    /// What one user may make the gateway send.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Pictures and other media of MMS.
    #[serde(default)]
    pub media: MediaConfig,
    /// Who may register from their XMPP client (XEP-0077).
    #[serde(default)]
    pub registration: RegistrationConfig,
    /// Who may run the admins' commands (XEP-0050).
    #[serde(default)]
    pub admins: AdminsConfig,
    /// Group texts.
    #[serde(default)]
    pub groups: GroupsConfig,
    /// Prometheus metrics and health checks.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The log's format.
    #[serde(default)]
    pub log: LogConfig,
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

pub(crate) fn invalid(
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

/// A TOML parse error quotes the lines around the fault (`3 | secret =
/// Sup3rS3cret`), where an unquoted secret is the fault itself (#27): each
/// quoted line keeps its key and loses its value, so the key is named and
/// no value reaches a terminal or the journal (`check` runs as the unit's
/// `ExecStartPre`).
fn without_values(message: &str) -> String {
    message
        .lines()
        .map(|line| {
            let Some((number, source)) = line.split_once('|') else {
                return line.to_owned();
            };
            if number.trim().is_empty() || !number.trim().chars().all(|c| c.is_ascii_digit()) {
                return line.to_owned();
            }
            match source.split_once('=') {
                Some((key, _)) => format!("{number}|{key}= (value not shown)"),
                None if source.trim().starts_with('[') => line.to_owned(),
                None => format!("{number}| (line not shown)"),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn figment_error(e: figment::Error) -> String {
    // figment reports the path as "default.xmpp"; say "xmpp.secret" instead.
    e.into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let kind = match &e.kind {
                // figment's own words nest backticks (#28): "expected `one
                // of `server`, `domain``".
                figment::error::Kind::UnknownField(found, expected) => format!(
                    "unknown key `{found}`; the keys here are {}",
                    expected
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                // A value of the wrong type may be a secret: name it, not quote it.
                kind => without_values(&crate::text::redact_quoted(&kind.to_string())),
            };
            if key.is_empty() {
                kind
            } else {
                format!("`{key}`: {kind}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

mod sections;
pub(crate) mod validate;

pub use sections::*;

#[cfg(test)]
mod tests;
