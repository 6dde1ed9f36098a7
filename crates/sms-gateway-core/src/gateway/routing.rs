//! Who is who: users by JID and by (account, number), and what each account
//! accepts per request.

use crate::config::{normalize_bare_jid, Config, Providers};
use crate::phone::PhoneNumber;
use crate::text::Limits;
use std::collections::HashMap;

/// A configured user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Bare JID, lower-cased.
    pub jid: String,
    /// The user's number.
    pub number: PhoneNumber,
    /// The provider account.
    pub account: String,
}

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
    pub(super) by_jid: HashMap<String, User>,
    pub(super) by_number: HashMap<(String, PhoneNumber), String>,
    pub(super) accounts: HashMap<String, AccountPolicy>,
    pub(super) limits: crate::config::LimitsConfig,
    /// Whether inbound media are fetched (`media.store` is not `link`).
    pub(super) fetch_media: bool,
    /// Whether chats may carry media URLs on private addresses.
    pub(super) relay_private_urls: bool,
}

impl Routing {
    /// Builds the routing tables from a config that passed
    /// [`Config::validate`] and the providers it gave.
    pub fn new(config: &Config, providers: &Providers) -> Self {
        let mut routing = Self::from_config(config);
        for (name, provider) in &providers.accounts {
            let split_long = config.providers.get(name).is_none_or(|p| p.split_long);
            routing.accounts.insert(
                name.clone(),
                AccountPolicy {
                    limits: provider.limits(),
                    split_long,
                },
            );
        }
        routing
    }

    /// Builds the routing tables without provider limits (every account
    /// unlimited). Users that do not parse are skipped.
    pub fn from_config(config: &Config) -> Self {
        let mut by_jid = HashMap::new();
        let mut by_number = HashMap::new();
        for u in &config.users {
            let (Some(jid), Ok(number)) = (
                normalize_bare_jid(&u.jid),
                PhoneNumber::parse(&u.number, None),
            ) else {
                continue;
            };
            by_number.insert((u.provider.clone(), number.clone()), jid.clone());
            by_jid.insert(
                jid.clone(),
                User {
                    jid,
                    number,
                    account: u.provider.clone(),
                },
            );
        }
        Routing {
            domain: config.xmpp.domain.to_lowercase(),
            phone: config.phone.clone(),
            by_jid,
            by_number,
            accounts: HashMap::new(),
            limits: config.limits.clone(),
            fetch_media: config.media.store != crate::config::MediaStoreKind::Link,
            relay_private_urls: config.media.relay_private_urls,
        }
    }

    pub(super) fn policy(&self, account: &str) -> AccountPolicy {
        self.accounts
            .get(account)
            .copied()
            .unwrap_or(AccountPolicy {
                limits: Limits::default(),
                split_long: true,
            })
    }

    /// The contact JID for a number: `+15557654321@sms.example.com`.
    pub fn contact_jid(&self, number: &PhoneNumber) -> String {
        format!("{number}@{}", self.domain)
    }

    /// The user a full or bare JID belongs to.
    pub fn user(&self, jid: &str) -> Option<&User> {
        let bare = jid.split('/').next().unwrap_or(jid).to_lowercase();
        self.by_jid.get(&bare)
    }
}
