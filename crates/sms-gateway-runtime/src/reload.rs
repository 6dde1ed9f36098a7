//! Reloading the config while the gateway runs (SIGHUP in the binary).
//!
//! What changes live: `[providers]` (accounts added, removed, or with new
//! credentials), `[[users]]` (a user added can text at once, one removed
//! can no longer), `[caller_id]`, and `[limits]`. Nothing in flight is
//! dropped: the Gateway, its store and the links are untouched, and a send
//! under way finishes with the account it started with. Everything else is
//! read at start; a reload that changes it says which keys wait for a
//! restart. A config that does not validate, or that removes an account a
//! stored user is on, is refused as a whole, naming the key, and the
//! running config stays.

use crate::config::{Config, ConfigError};
use crate::Providers;
use std::sync::Arc;

/// Applies reloaded configs to a running component (see
/// [`crate::Component::reloader`]).
pub struct Reloader {
    running: Arc<Config>,
    providers: Providers,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Users now (config and stored).
    pub users: usize,
    /// Users who can no longer text (gone from the config, or stored users
    /// the config now shadows).
    pub removed: Vec<String>,
    /// Accounts added, or whose settings changed (rebuilt).
    pub accounts_changed: Vec<String>,
    /// Accounts no longer running.
    pub accounts_removed: Vec<String>,
    /// Sections changed that only a restart applies.
    pub need_restart: Vec<&'static str>,
}

impl Reloader {
    pub(crate) fn new(running: Arc<Config>, providers: Providers) -> Self {
        Reloader { running, providers }
    }

    /// Applies `new`, with what [`Config::validate`] gave for it (`fresh`):
    /// its accounts, users, caller ID names and limits take effect now.
    ///
    /// An account whose `[providers.NAME]` is unchanged keeps running as
    /// it was (its connections, the sandbox's outbox); a changed one is
    /// replaced by `fresh`'s, and sends under way finish with the old one.
    /// An account may go only when no stored user (registered, added by an
    /// admin) is on it.
    pub fn apply(&mut self, new: Config, fresh: &Providers) -> Result<Reloaded, ConfigError> {
        let stored = self.providers.users.users();
        if let Some(u) = stored
            .iter()
            .find(|u| u.origin != crate::Origin::Config && !fresh.accounts.contains(&u.account))
        {
            return Err(ConfigError::Invalid {
                key: format!("providers.{}", u.account),
                value: "(removed)".into(),
                reason: format!(
                    "the stored user {} is on this account: remove the user first (Remove a user), or keep the account",
                    u.jid
                ),
            });
        }
        let running = self.providers.accounts.snapshot();
        let mut accounts = std::collections::BTreeMap::new();
        let mut changed = vec![];
        for (name, account) in fresh.accounts.snapshot().iter() {
            let same = running.contains_key(name)
                && match (self.running.providers.get(name), new.providers.get(name)) {
                    (Some(a), Some(b)) => {
                        a.kind == b.kind && a.split_long == b.split_long && a.settings == b.settings
                    }
                    _ => false,
                };
            if same {
                accounts.insert(name.clone(), running[name].clone());
            } else {
                accounts.insert(name.clone(), account.clone());
                changed.push(name.clone());
            }
        }
        let gone: Vec<String> = running
            .keys()
            .filter(|n| !accounts.contains_key(*n))
            .cloned()
            .collect();
        self.providers
            .accounts
            .replace(&crate::accounts::Accounts::new(accounts));
        self.providers
            .metrics
            .set_accounts(self.providers.accounts.names().iter());
        let removed = self.providers.users.reload(&fresh.users, &new);
        *self
            .providers
            .limits
            .write()
            .unwrap_or_else(|p| p.into_inner()) = new.limits.clone();
        let need_restart = changed_sections(&self.running, &new);
        self.running = Arc::new(new);
        Ok(Reloaded {
            users: self.providers.users.users().len(),
            removed,
            accounts_changed: changed,
            accounts_removed: gone,
            need_restart,
        })
    }
}

/// The sections of `new` that differ from `old` and apply only at start.
fn changed_sections(old: &Config, new: &Config) -> Vec<&'static str> {
    // Sections are compared as their Debug shows them; secrets, which Debug
    // hides, by value (and never shown: only the section's name is).
    macro_rules! unchanged {
        ($section:ident) => {
            format!("{:?}", old.$section) == format!("{:?}", new.$section)
        };
    }
    // Accounts change live; the numbers they offer for registration are
    // read by the XMPP process at start.
    let registration_numbers = old.providers.iter().all(|(name, a)| {
        new.providers
            .get(name)
            .is_none_or(|b| a.registration_numbers == b.registration_numbers)
    }) && new
        .providers
        .iter()
        .all(|(name, b)| old.providers.contains_key(name) || b.registration_numbers.is_empty());
    let checks = [
        (
            "xmpp",
            unchanged!(xmpp) && old.xmpp.secret.expose() == new.xmpp.secret.expose(),
        ),
        ("http", unchanged!(http)),
        ("phone", unchanged!(phone)),
        ("providers.*.registration_numbers", registration_numbers),
        (
            "store",
            unchanged!(store)
                && old.store.url.as_ref().map(|u| u.expose())
                    == new.store.url.as_ref().map(|u| u.expose()),
        ),
        ("cluster", unchanged!(cluster)),
        ("retry", unchanged!(retry)),
        ("media", unchanged!(media)),
        ("registration", unchanged!(registration)),
        ("admins", unchanged!(admins)),
        ("groups", unchanged!(groups)),
        ("metrics", unchanged!(metrics)),
        ("log", unchanged!(log)),
    ];
    checks
        .into_iter()
        .filter(|(_, same)| !same)
        .map(|(section, _)| section)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PhoneNumber;
    use crate::StoredUser;

    fn config(extra: &str) -> Config {
        Config::from_toml(&crate::test_config(extra)).unwrap()
    }

    #[test]
    fn users_names_and_limits_change_and_the_rest_waits_for_a_restart() {
        let start = config("");
        let providers = start.validate(&crate::sandbox::registry()).unwrap();
        let users = providers.users.clone();
        let bare = |j: &str| jid::BareJid::new(j).unwrap();
        let n = |s: &str| PhoneNumber::parse(s, None).unwrap();
        // A registered user, and Alice's setting.
        users
            .put_stored(
                &bare("carol@example.com"),
                &StoredUser {
                    number: n("+15550003333"),
                    account: "main".into(),
                    approved: true,
                },
            )
            .unwrap();
        users
            .set_caller_id(&bare("alice@example.com"), false)
            .unwrap();
        let mut r = Reloader::new(Arc::new(start), providers.clone());
        let apply = |r: &mut Reloader, c: Config| {
            let fresh = c.validate(&crate::sandbox::registry())?;
            r.apply(c, &fresh)
        };
        let done = apply(
            &mut r,
            config(
                "[[users]]\njid = \"bob@example.com\"\nnumber = \"+15550002222\"\nprovider = \"main\"\n[limits]\ntexts_per_minute = 5\ntexts_burst = 10\n[caller_id]\n\"+15557654321\" = \"Jane Roe\"\n[groups]\nfan_out = true\n",
            ))
            .unwrap();
        assert_eq!(done.users, 3, "alice, bob and the registered carol");
        assert!(users.get(&bare("bob@example.com")).is_some());
        assert!(users.get(&bare("carol@example.com")).is_some());
        assert!(!users.get(&bare("alice@example.com")).unwrap().caller_id);
        assert_eq!(providers.limits.read().unwrap().texts_per_minute, 5);
        assert_eq!(
            users
                .names()
                .name_now(&n("+15557654321"), &n("+15550001111")),
            Some(Some("Jane Roe".into()))
        );
        assert_eq!(done.need_restart, vec!["groups"]);
        // Bob gone again: he can no longer text.
        let done = apply(&mut r, config("")).unwrap();
        assert_eq!(done.removed, vec!["bob@example.com".to_owned()]);
        assert!(users.get(&bare("bob@example.com")).is_none());
        // An account added, with a user on it: both run at once; the
        // unchanged account keeps running as it was.
        let main_before = providers.accounts.provider("main").unwrap();
        let with_new = |token: &str| {
            let mut c = config(
                "[[users]]\njid = \"dan@example.com\"\nnumber = \"+15550004444\"\nprovider = \"new\"\n",
            );
            let mut p = c.providers["main"].clone();
            p.settings.insert("token".into(), token.into());
            c.providers.insert("new".into(), p);
            c
        };
        let done = apply(&mut r, with_new("new-account-token-1")).unwrap();
        assert_eq!(done.accounts_changed, vec!["new".to_owned()]);
        assert!(done.need_restart.is_empty(), "{:?}", done.need_restart);
        assert_eq!(providers.accounts.names(), ["main", "new"]);
        assert!(users.get(&bare("dan@example.com")).is_some());
        assert!(Arc::ptr_eq(
            &providers.accounts.provider("main").unwrap(),
            &main_before
        ));
        assert!(providers.metrics.encode().contains("account=\"new\""));
        // Its credentials changed: rebuilt; the same again: kept.
        let new_before = providers.accounts.provider("new").unwrap();
        let done = apply(&mut r, with_new("new-account-token-2")).unwrap();
        assert_eq!(done.accounts_changed, vec!["new".to_owned()]);
        assert!(!Arc::ptr_eq(
            &providers.accounts.provider("new").unwrap(),
            &new_before
        ));
        let done = apply(&mut r, with_new("new-account-token-2")).unwrap();
        assert!(done.accounts_changed.is_empty());
        // Removed again, with its user.
        let done = apply(&mut r, config("")).unwrap();
        assert_eq!(done.accounts_removed, vec!["new".to_owned()]);
        assert!(!providers.accounts.contains("new"));
        assert!(users.get(&bare("dan@example.com")).is_none());
        // The account a stored user is on cannot go: refused, naming it,
        // and everything stays as it was.
        let mut c = config("");
        let p = c.providers.remove("main").unwrap();
        c.providers.insert("other".into(), p);
        c.users[0].provider = "other".into();
        let e = apply(&mut r, c).unwrap_err();
        assert!(e.to_string().contains("providers.main"), "{e}");
        assert!(e.to_string().contains("carol@example.com"), "{e}");
        assert_eq!(providers.accounts.names(), ["main"]);
    }
}
