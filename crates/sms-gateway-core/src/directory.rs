//! The users of the gateway, shared by the processes (the Gateway routes by
//! it, the XMPP process answers by it): those of `[[users]]`, read once from
//! a validated config, and those who registered (XEP-0077) or whom an admin
//! added, kept in the store ([`crate::store::ENTRY_USER`]) and changed while
//! the gateway runs. The config wins: a stored user whose JID or number the
//! config has is not loaded.

use crate::callerid::CallerId;
use crate::config::{normalize_bare_jid, Config, ConfigError};
pub use crate::message::StoredUser;
use crate::phone::PhoneNumber;
use jid::BareJid;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

/// A user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Bare JID, normalised.
    pub jid: BareJid,
    /// The user's number.
    pub number: PhoneNumber,
    /// The provider account.
    pub account: String,
    /// Where the user comes from.
    pub origin: Origin,
    /// Whether contacts' names are looked up for this user (`My settings`).
    pub caller_id: bool,
}

/// Where a user comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// `[[users]]` in the config.
    Config,
    /// Registered or added by an admin, kept in the store.
    Stored {
        /// False while the registration waits for an admin.
        approved: bool,
    },
}

/// A user's settings, as the store keeps them (JSON under the bare JID).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Whether contacts' names are looked up.
    pub caller_id: bool,
}

/// Why a change to the users was refused, in words for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

#[derive(Debug, Default, Clone)]
struct Table {
    /// Everyone, approved or not.
    all: BTreeMap<BareJid, Arc<User>>,
    /// Lower-cased bare JID text of approved users, for JIDs that arrive as text.
    by_text: HashMap<String, BareJid>,
    /// Approved and waiting users' numbers (a number is taken either way).
    by_number: HashMap<(String, PhoneNumber), BareJid>,
}

impl Table {
    fn insert(&mut self, user: User) {
        let user = Arc::new(user);
        if user.approved() {
            self.by_text
                .insert(user.jid.as_str().to_lowercase(), user.jid.clone());
        }
        self.by_number.insert(
            (user.account.clone(), user.number.clone()),
            user.jid.clone(),
        );
        self.all.insert(user.jid.clone(), user);
    }

    fn remove(&mut self, jid: &BareJid) -> Option<Arc<User>> {
        let user = self.all.remove(jid)?;
        self.by_text.remove(&jid.as_str().to_lowercase());
        self.by_number
            .remove(&(user.account.clone(), user.number.clone()));
        Some(user)
    }
}

impl User {
    /// Whether the user may use the gateway (not a registration waiting for
    /// an admin).
    pub fn approved(&self) -> bool {
        !matches!(self.origin, Origin::Stored { approved: false })
    }
}

/// Who is who: the users (with their numbers and accounts), and the names
/// of the numbers they text (`[caller_id]`).
#[derive(Debug)]
pub struct Directory {
    table: RwLock<Table>,
    names: Arc<CallerId>,
}

impl Directory {
    /// Reads `[[users]]`, refusing (naming the row and key) a JID that is
    /// not a bare JID, a number that is not one, and a JID or a number on
    /// one account given twice. Accounts are not checked here
    /// ([`Config::validate`] does).
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        Self::read(config, |_, _| Ok(()))
    }

    /// [`Directory::from_config`], with `check_account` run on each row
    /// between its number and the duplicate checks (so errors come in the
    /// order the rows and keys are written).
    pub(crate) fn read(
        config: &Config,
        check_account: impl Fn(usize, &crate::config::UserConfig) -> Result<(), ConfigError>,
    ) -> Result<Self, ConfigError> {
        let invalid = |key: String, value: &str, reason: String| ConfigError::Invalid {
            key,
            value: value.to_owned(),
            reason,
        };
        let mut table = Table::default();
        let mut rows: HashMap<BareJid, usize> = HashMap::new();
        let mut number_rows: HashMap<(String, PhoneNumber), usize> = HashMap::new();
        for (i, u) in config.users.iter().enumerate() {
            let bad_jid = || {
                invalid(
                    format!("users[{i}].jid"),
                    &u.jid,
                    "expected a bare JID such as alice@example.com".into(),
                )
            };
            let text = normalize_bare_jid(&u.jid).ok_or_else(bad_jid)?;
            let jid = BareJid::new(&text).map_err(|_| bad_jid())?;
            if let Some(j) = rows.get(&jid) {
                return Err(invalid(
                    format!("users[{i}].jid"),
                    &u.jid,
                    format!("the same JID is already users[{j}]"),
                ));
            }
            let number = PhoneNumber::parse(&u.number, None)
                .map_err(|e| invalid(format!("users[{i}].number"), &u.number, e.in_config()))?;
            check_account(i, u)?;
            let key = (u.provider.clone(), number.clone());
            if let Some(j) = number_rows.get(&key) {
                return Err(invalid(
                    format!("users[{i}].number"),
                    &u.number,
                    format!("the same number on the same account is already users[{j}]"),
                ));
            }
            rows.insert(jid.clone(), i);
            number_rows.insert(key, i);
            table.insert(User {
                jid,
                number,
                account: u.provider.clone(),
                origin: Origin::Config,
                caller_id: true,
            });
        }
        Ok(Directory {
            table: RwLock::new(table),
            names: Arc::new(CallerId::from_table(&config.caller_id)),
        })
    }

    /// A reload of the config: its `[[users]]` replace the config's users
    /// of before (a user removed from it can no longer text; one added
    /// can), and its `[caller_id]` the names. Users kept in the store stay,
    /// unless the config now has their JID or number (the config wins, as
    /// at start). Each user keeps their settings. The names of those whose
    /// config entry went, and of stored users now shadowed, are returned.
    /// `fresh` is the directory [`Config::validate`] read from `config`.
    pub fn reload(&self, fresh: &Directory, config: &Config) -> Vec<String> {
        let mut new = fresh.read_table().clone();
        let mut gone = vec![];
        let mut t = self.write_table();
        for old in t.all.values() {
            match (old.origin, new.all.get(&old.jid).cloned()) {
                (Origin::Config, None) => gone.push(old.jid.to_string()),
                (_, Some(kept)) => {
                    // Settings outlive a reload.
                    if kept.caller_id != old.caller_id {
                        new.insert(User {
                            caller_id: old.caller_id,
                            ..(*kept).clone()
                        });
                    }
                    if old.origin != Origin::Config {
                        gone.push(old.jid.to_string());
                    }
                }
                (Origin::Stored { .. }, None) => {
                    if new
                        .by_number
                        .contains_key(&(old.account.clone(), old.number.clone()))
                    {
                        gone.push(old.jid.to_string());
                    } else {
                        new.insert((**old).clone());
                    }
                }
            }
        }
        *t = new;
        drop(t);
        self.names.replace_table(&config.caller_id);
        gone
    }

    fn read_table(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_table(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The approved user `jid` (bare, or the bare part of a full JID) is.
    pub fn get(&self, jid: &BareJid) -> Option<Arc<User>> {
        self.read_table()
            .all
            .get(jid)
            .filter(|u| u.approved())
            .cloned()
    }

    /// The user `jid` is, approved or not.
    pub fn get_any(&self, jid: &BareJid) -> Option<Arc<User>> {
        self.read_table().all.get(jid).cloned()
    }

    /// The approved user a JID given as text (full or bare, any case) is.
    pub fn get_text(&self, jid: &str) -> Option<Arc<User>> {
        let bare = jid.split('/').next().unwrap_or(jid);
        let t = self.read_table();
        let found = match t.by_text.get(bare) {
            Some(j) => Some(j),
            None => t.by_text.get(&bare.to_lowercase()),
        };
        found.and_then(|j| t.all.get(j)).cloned()
    }

    /// The approved user with `number` on `account`.
    pub fn by_number(&self, account: &str, number: &PhoneNumber) -> Option<Arc<User>> {
        let t = self.read_table();
        t.by_number
            .get(&(account.to_owned(), number.clone()))
            .and_then(|j| t.all.get(j))
            .filter(|u| u.approved())
            .cloned()
    }

    /// Whether `number` on `account` belongs to someone (approved or not).
    pub fn number_taken(&self, account: &str, number: &PhoneNumber) -> bool {
        self.read_table()
            .by_number
            .contains_key(&(account.to_owned(), number.clone()))
    }

    /// Every approved user, by JID.
    pub fn users(&self) -> Vec<Arc<User>> {
        self.read_table()
            .all
            .values()
            .filter(|u| u.approved())
            .cloned()
            .collect()
    }

    /// Registrations waiting for an admin, by JID.
    pub fn waiting(&self) -> Vec<Arc<User>> {
        self.read_table()
            .all
            .values()
            .filter(|u| !u.approved())
            .cloned()
            .collect()
    }

    /// Contacts' names: the `[caller_id]` table and its lookup command.
    pub fn names(&self) -> &Arc<CallerId> {
        &self.names
    }

    /// Adds or replaces stored user `jid`. Refused for a JID the config
    /// has, and for a number on the account that someone else has.
    pub fn put_stored(&self, jid: &BareJid, user: &StoredUser) -> Result<Arc<User>, Refused> {
        let mut t = self.write_table();
        let old = t.all.get(jid).cloned();
        if old.as_ref().is_some_and(|u| u.origin == Origin::Config) {
            return Err(Refused(format!(
                "{jid} is set up by the operator in the gateway's config; it cannot be changed here."
            )));
        }
        if let Some(other) = t
            .by_number
            .get(&(user.account.clone(), user.number.clone()))
            .filter(|o| *o != jid)
        {
            let _ = other;
            return Err(Refused(format!(
                "{} on account {} already belongs to another user.",
                user.number, user.account
            )));
        }
        t.remove(jid);
        let new = User {
            jid: jid.clone(),
            number: user.number.clone(),
            account: user.account.clone(),
            origin: Origin::Stored {
                approved: user.approved,
            },
            caller_id: old.map(|u| u.caller_id).unwrap_or(true),
        };
        t.insert(new);
        Ok(t.all[jid].clone())
    }

    /// Removes stored user `jid`. Refused for a user of the config.
    pub fn remove_stored(&self, jid: &BareJid) -> Result<Arc<User>, Refused> {
        let mut t = self.write_table();
        match t.all.get(jid).map(|u| u.origin) {
            None => Err(Refused(format!("{jid} is not a user of this gateway."))),
            Some(Origin::Config) => Err(Refused(format!(
                "{jid} is set up by the operator in the gateway's config; remove it there."
            ))),
            Some(_) => Ok(t.remove(jid).expect("present")),
        }
    }

    /// Sets whether contacts' names are looked up for `jid`.
    pub fn set_caller_id(&self, jid: &BareJid, on: bool) -> Result<(), Refused> {
        let mut t = self.write_table();
        let Some(user) = t.all.get(jid).cloned() else {
            return Err(Refused(format!("{jid} is not a user of this gateway.")));
        };
        let mut changed = (*user).clone();
        changed.caller_id = on;
        t.remove(jid);
        t.insert(changed);
        Ok(())
    }

    /// Loads what the store keeps: stored users (those clashing with the
    /// config are skipped, with a warning) and settings.
    pub fn load(&self, users: &[(String, String)], settings: &[(String, String)]) {
        for (jid, value) in users {
            let parsed = BareJid::new(jid)
                .ok()
                .zip(serde_json::from_str::<StoredUser>(value).ok());
            let Some((jid, user)) = parsed else {
                tracing::error!(%jid, "skipping an unreadable user in the store");
                continue;
            };
            if let Err(e) = self.put_stored(&jid, &user) {
                tracing::warn!(%jid, reason = %e, "a registered user is not loaded: the config has the JID or the number");
            }
        }
        for (jid, value) in settings {
            let parsed = BareJid::new(jid)
                .ok()
                .zip(serde_json::from_str::<Settings>(value).ok());
            if let Some((jid, s)) = parsed {
                let _ = self.set_caller_id(&jid, s.caller_id);
            }
        }
    }
}

impl Default for Directory {
    fn default() -> Self {
        Directory {
            table: RwLock::default(),
            names: Arc::new(CallerId::from_table(&Default::default())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(users: &str) -> Config {
        Config::from_toml(&format!(
            "[xmpp]\nserver = \"127.0.0.1:5347\"\ndomain = \"sms.example.com\"\nsecret = \"s\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://sms.example.com/hooks\"\n{users}"
        ))
        .unwrap()
    }

    const ALICE: &str =
        "[[users]]\njid = \"Alice@Example.com\"\nnumber = \"+15550001111\"\nprovider = \"main\"\n";

    #[test]
    fn users_are_found_by_typed_jid_by_text_and_by_number() {
        let d = Directory::from_config(&config(ALICE)).unwrap();
        let alice = BareJid::new("alice@example.com").unwrap();
        assert_eq!(
            d.get(&alice).map(|u| u.account.clone()).as_deref(),
            Some("main")
        );
        for text in [
            "alice@example.com/phone",
            "ALICE@example.COM",
            "alice@example.com",
        ] {
            assert_eq!(
                d.get_text(text).map(|u| u.jid.clone()),
                Some(alice.clone()),
                "{text}"
            );
        }
        let n = PhoneNumber::parse("+15550001111", None).unwrap();
        assert_eq!(
            d.by_number("main", &n).map(|u| u.jid.clone()),
            Some(alice.clone())
        );
        assert!(d.by_number("other", &n).is_none());
        assert!(d.get_text("bob@example.com").is_none());
    }

    #[test]
    fn bad_and_repeated_rows_are_refused_naming_the_row() {
        let again = format!("{ALICE}{}", ALICE.replace("+15550001111", "+15550002222"));
        let e = Directory::from_config(&config(&again)).unwrap_err();
        assert!(e.to_string().contains("users[1].jid"), "{e}");
        let twice = format!("{ALICE}{}", ALICE.replace("Alice", "bob"));
        let e = Directory::from_config(&config(&twice)).unwrap_err();
        assert!(e.to_string().contains("users[1].number"), "{e}");
        let e = Directory::from_config(&config(&ALICE.replace("Alice@", ""))).unwrap_err();
        assert!(e.to_string().contains("users[0].jid"), "{e}");
    }

    #[test]
    fn stored_users_join_wait_and_leave_and_the_config_wins() {
        let d = Directory::from_config(&config(ALICE)).unwrap();
        let n = |s: &str| PhoneNumber::parse(s, None).unwrap();
        let bob = BareJid::new("bob@example.com").unwrap();
        let alice = BareJid::new("alice@example.com").unwrap();
        let waiting = StoredUser {
            number: n("+15550002222"),
            account: "main".into(),
            approved: false,
        };
        d.put_stored(&bob, &waiting).unwrap();
        assert!(d.get(&bob).is_none(), "waiting users are not users yet");
        assert!(d.get_text("bob@example.com/x").is_none());
        assert_eq!(d.waiting().len(), 1);
        assert!(d.number_taken("main", &n("+15550002222")));
        let approved = StoredUser {
            approved: true,
            ..waiting.clone()
        };
        d.put_stored(&bob, &approved).unwrap();
        assert!(d.get_text("BOB@example.com/x").is_some());
        assert!(d.by_number("main", &n("+15550002222")).is_some());
        // The config's JID and numbers cannot be taken or removed.
        let e = d.put_stored(&alice, &approved).unwrap_err();
        assert!(e.0.contains("config"), "{e}");
        let carol = BareJid::new("carol@example.com").unwrap();
        let alices = StoredUser {
            number: n("+15550001111"),
            ..approved.clone()
        };
        let e = d.put_stored(&carol, &alices).unwrap_err();
        assert!(e.0.contains("another user"), "{e}");
        assert!(d.remove_stored(&alice).is_err());
        d.set_caller_id(&bob, false).unwrap();
        assert!(!d.get(&bob).unwrap().caller_id);
        d.remove_stored(&bob).unwrap();
        assert!(d.get(&bob).is_none() && !d.number_taken("main", &n("+15550002222")));
        // Loading from the store skips what clashes with the config.
        d.load(
            &[
                (
                    "bob@example.com".into(),
                    serde_json::to_string(&approved).unwrap(),
                ),
                (
                    "alice@example.com".into(),
                    serde_json::to_string(&approved).unwrap(),
                ),
                ("carol@example.com".into(), "not json".into()),
            ],
            &[("bob@example.com".into(), "{\"caller_id\":false}".into())],
        );
        assert_eq!(d.users().len(), 2);
        assert!(!d.get(&bob).unwrap().caller_id);
        assert_eq!(d.get(&alice).unwrap().origin, Origin::Config);
    }
}
