//! Who is who: users by JID and by (account, number), and what each account
//! accepts per request.

use crate::built::Providers;
use crate::config::Config;
use crate::directory::{Directory, User};
use crate::phone::PhoneNumber;
use crate::text::Limits;
use std::sync::Arc;

/// What an account accepts per request, and what to do with a longer text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountPolicy {
    /// The provider's limits.
    pub limits: Limits,
    /// Split a long text into several sends (else refuse it).
    pub split_long: bool,
}

/// Who is who: built once from a validated config and its providers.
#[derive(Debug, Clone)]
pub struct Routing {
    pub(super) domain: String,
    pub(super) phone: crate::config::PhoneConfig,
    pub(super) users: Arc<Directory>,
    /// The carrier accounts, as a reload leaves them.
    pub(super) accounts: Arc<crate::accounts::Accounts>,
    /// `[limits]`, shared with the reloader.
    limits: Arc<std::sync::RwLock<crate::config::LimitsConfig>>,
    /// Whether inbound media are fetched (`media.store` is not `link`).
    pub(super) fetch_media: bool,
    /// Whether chats may carry media URLs on private addresses.
    pub(super) relay_private_urls: bool,
    /// `media.relay_hosts`.
    pub(super) relay_hosts: Vec<String>,
    /// The last carrier errors, for admins.
    pub(super) activity: Arc<crate::activity::Activity>,
    /// `groups.fan_out`.
    pub(super) groups_fan_out: bool,
    /// What is counted (`[metrics]`).
    pub(super) metrics: Arc<crate::metrics::Metrics>,
}

impl Routing {
    /// Builds the routing tables from a config that passed
    /// [`Config::validate`] and what it gave (the accounts and the users).
    pub fn new(config: &Config, providers: &Providers) -> Self {
        Routing {
            domain: config.xmpp.domain.to_lowercase(),
            phone: config.phone.clone(),
            users: providers.users.clone(),
            accounts: providers.accounts.clone(),
            limits: providers.limits.clone(),
            fetch_media: config.media.store != crate::config::MediaStoreKind::Link,
            relay_private_urls: config.media.relay_private_urls,
            relay_hosts: config.media.relay_hosts.clone(),
            activity: providers.activity.clone(),
            groups_fan_out: config.groups.fan_out,
            metrics: providers.metrics.clone(),
        }
    }

    /// `[limits]` as they are now (a reload may have changed them).
    pub(super) fn limits(&self) -> crate::config::LimitsConfig {
        self.limits
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn policy(&self, account: &str) -> AccountPolicy {
        self.accounts
            .get(account)
            .map(|a| AccountPolicy {
                limits: a.provider.limits(),
                split_long: a.split_long,
            })
            .unwrap_or(AccountPolicy {
                limits: Limits::default(),
                split_long: true,
            })
    }

    /// The contact JID for a number: `+15557654321@sms.example.com`.
    pub fn contact_jid(&self, number: &PhoneNumber) -> String {
        [number.as_str(), "@", &self.domain].concat()
    }

    /// The user a full or bare JID belongs to.
    pub fn user(&self, jid: &str) -> Option<Arc<User>> {
        self.users.get_text(jid)
    }
}
