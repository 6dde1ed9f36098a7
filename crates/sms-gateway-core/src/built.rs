//! What a checked config builds to run: the carrier accounts, the users,
//! the metrics and the shared limits ([`Providers`]). The config itself
//! (`config.rs`) is data and parsing; building from it lives here, so the
//! config imports none of what is built from it (#29: no import circles).

use crate::config::validate::list;
use crate::config::{invalid, Config, ConfigError, LimitsConfig};
use crate::provider::{ProviderContext, ProviderRegistry};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The provider accounts built from a validated config, by name.
#[derive(Clone, Default)]
pub struct Providers {
    /// The carrier accounts, by name; a reload replaces them.
    pub accounts: Arc<crate::accounts::Accounts>,
    /// The users, read once; the processes share them.
    pub users: Arc<crate::directory::Directory>,
    /// The last carrier errors, recorded by the Gateway, shown to admins.
    pub activity: Arc<crate::activity::Activity>,
    /// What the three processes count (`[metrics]`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// `[limits]`, as a reload changes them.
    pub limits: Arc<std::sync::RwLock<LimitsConfig>>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.accounts.names()).finish()
    }
}

impl Config {
    /// Checks everything that can be checked without connecting, and builds
    /// the provider accounts: what `sms-over-xmpp check` reports.
    pub fn validate(&self, registry: &ProviderRegistry) -> Result<Providers, ConfigError> {
        self.check()?;
        let providers = self.build_providers(registry)?;
        let mut providers = providers;
        let users = crate::directory::Directory::read(self, |i, user| {
            if providers.accounts.contains(&user.provider) {
                return Ok(());
            }
            Err(invalid(
                format!("users[{i}].provider"),
                &user.provider,
                format!(
                    "no such account; configured: {}",
                    list(providers.accounts.names().iter().map(String::as_str))
                ),
            ))
        })?;
        providers.users = Arc::new(users);
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
            let account = crate::accounts::Account {
                provider,
                split_long: p.split_long,
            };
            accounts.insert(name.clone(), account);
        }
        Ok(Providers {
            metrics: Arc::new(crate::metrics::Metrics::new(accounts.keys())),
            limits: Arc::new(std::sync::RwLock::new(self.limits.clone())),
            accounts: Arc::new(crate::accounts::Accounts::new(accounts)),
            users: Default::default(),
            activity: Default::default(),
        })
    }
}
