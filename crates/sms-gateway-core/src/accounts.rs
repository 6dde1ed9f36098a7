//! The carrier accounts as they are now: read by the PSTN process (sends,
//! webhooks, media) and the Gateway (each account's limits), replaced as a
//! whole by a reload. A send or webhook under way keeps the account it
//! started with, so nothing in flight is dropped by a change of
//! credentials.

use crate::provider::PstnProvider;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// One running carrier account.
#[derive(Clone)]
pub struct Account {
    /// Its provider, built from `[providers.NAME]`.
    pub provider: Arc<dyn PstnProvider>,
    /// `split_long`: split a text longer than one request allows.
    pub split_long: bool,
}

/// Account name → account, replaceable while the gateway runs.
#[derive(Default)]
pub struct Accounts {
    now: RwLock<Arc<BTreeMap<String, Account>>>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.snapshot().keys()).finish()
    }
}

impl Accounts {
    /// These accounts.
    pub fn new(accounts: BTreeMap<String, Account>) -> Self {
        Accounts {
            now: RwLock::new(Arc::new(accounts)),
        }
    }

    /// Every account, each with `split_long` on: for embedders and tests
    /// that build providers by hand.
    pub fn of(providers: BTreeMap<String, Arc<dyn PstnProvider>>) -> Self {
        Accounts::new(
            providers
                .into_iter()
                .map(|(name, provider)| {
                    (
                        name,
                        Account {
                            provider,
                            split_long: true,
                        },
                    )
                })
                .collect(),
        )
    }

    /// The accounts as they are now (a reload later does not change it).
    pub fn snapshot(&self) -> Arc<BTreeMap<String, Account>> {
        self.now.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The account `name`, if it runs now.
    pub fn get(&self, name: &str) -> Option<Account> {
        self.now
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// The provider of the account `name`, if it runs now.
    pub fn provider(&self, name: &str) -> Option<Arc<dyn PstnProvider>> {
        self.get(name).map(|a| a.provider)
    }

    /// Whether the account `name` runs now.
    pub fn contains(&self, name: &str) -> bool {
        self.now
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(name)
    }

    /// The names of the accounts, sorted.
    pub fn names(&self) -> Vec<String> {
        self.snapshot().keys().cloned().collect()
    }

    /// How many accounts run.
    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    /// Whether no account runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces every account with `fresh`'s (a reload).
    pub fn replace(&self, fresh: &Accounts) {
        let fresh = fresh.snapshot();
        *self.now.write().unwrap_or_else(|p| p.into_inner()) = fresh;
    }
}
