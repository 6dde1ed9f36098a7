//! The users of the gateway: read once from a validated config, with typed
//! JIDs, and shared by the processes (the Gateway routes by it, the XMPP
//! process answers by it).

use crate::callerid::CallerId;
use crate::config::{normalize_bare_jid, Config, ConfigError};
use crate::phone::PhoneNumber;
use jid::BareJid;
use std::collections::HashMap;
use std::sync::Arc;

/// A configured user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Bare JID, normalised.
    pub jid: BareJid,
    /// The user's number.
    pub number: PhoneNumber,
    /// The provider account.
    pub account: String,
}

/// Who is who: the users (with their numbers and accounts), and the names
/// of the numbers they text (`[caller_id]`).
#[derive(Debug, Clone)]
pub struct Directory {
    users: Vec<User>,
    names: Arc<CallerId>,
    by_jid: HashMap<BareJid, usize>,
    /// Lower-cased bare JID text, for JIDs that arrive as text.
    by_text: HashMap<String, usize>,
    by_number: HashMap<(String, PhoneNumber), usize>,
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
        let mut d = Directory {
            names: Arc::new(CallerId::from_table(&config.caller_id)),
            ..Directory::default()
        };
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
            if let Some(j) = d.by_jid.get(&jid) {
                return Err(invalid(
                    format!("users[{i}].jid"),
                    &u.jid,
                    format!("the same JID is already users[{j}]"),
                ));
            }
            let number = PhoneNumber::parse(&u.number, None)
                .map_err(|e| invalid(format!("users[{i}].number"), &u.number, e.to_string()))?;
            check_account(i, u)?;
            let key = (u.provider.clone(), number.clone());
            if let Some(j) = d.by_number.get(&key) {
                return Err(invalid(
                    format!("users[{i}].number"),
                    &u.number,
                    format!("the same number on the same account is already users[{j}]"),
                ));
            }
            d.by_jid.insert(jid.clone(), i);
            d.by_text.insert(text, i);
            d.by_number.insert(key, i);
            d.users.push(User {
                jid,
                number,
                account: u.provider.clone(),
            });
        }
        Ok(d)
    }

    /// The user `jid` (bare, or the bare part of a full JID) belongs to.
    pub fn get(&self, jid: &BareJid) -> Option<&User> {
        self.by_jid.get(jid).map(|&i| &self.users[i])
    }

    /// The user a JID given as text (full or bare, any case) belongs to.
    pub fn get_text(&self, jid: &str) -> Option<&User> {
        let bare = jid.split('/').next().unwrap_or(jid);
        match self.by_text.get(bare) {
            Some(&i) => Some(&self.users[i]),
            None => self
                .by_text
                .get(&bare.to_lowercase())
                .map(|&i| &self.users[i]),
        }
    }

    /// The user with `number` on `account`.
    pub fn by_number(&self, account: &str, number: &PhoneNumber) -> Option<&User> {
        self.by_number
            .get(&(account.to_owned(), number.clone()))
            .map(|&i| &self.users[i])
    }

    /// Every user, in config order.
    pub fn users(&self) -> &[User] {
        &self.users
    }

    /// Contacts' names: the `[caller_id]` table and its lookup command.
    pub fn names(&self) -> &Arc<CallerId> {
        &self.names
    }
}

impl Default for Directory {
    fn default() -> Self {
        Directory {
            users: vec![],
            names: Arc::new(CallerId::from_table(&Default::default())),
            by_jid: HashMap::new(),
            by_text: HashMap::new(),
            by_number: HashMap::new(),
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
        assert_eq!(d.get(&alice).map(|u| u.account.as_str()), Some("main"));
        for text in [
            "alice@example.com/phone",
            "ALICE@example.COM",
            "alice@example.com",
        ] {
            assert_eq!(d.get_text(text).map(|u| &u.jid), Some(&alice), "{text}");
        }
        let n = PhoneNumber::parse("+15550001111", None).unwrap();
        assert_eq!(d.by_number("main", &n).map(|u| &u.jid), Some(&alice));
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
}
