//! Reloading the config while the gateway runs (SIGHUP in the binary).
//!
//! What changes live: `[[users]]` (a user added can text at once, one
//! removed can no longer), `[caller_id]`, and `[limits]`. Nothing in
//! flight is dropped: the Gateway, its store and the links are untouched.
//! Everything else is read at start; a reload that changes it says which
//! keys wait for a restart. A config that does not validate, or whose users
//! need an account that was not running at start, is refused as a whole,
//! naming the key, and the running config stays.

use crate::config::{Config, ConfigError, Providers};
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
    /// Sections changed that only a restart applies.
    pub need_restart: Vec<&'static str>,
}

impl Reloader {
    pub(crate) fn new(running: Arc<Config>, providers: Providers) -> Self {
        Reloader { running, providers }
    }

    /// Applies `new`, with what [`Config::validate`] gave for it (`fresh`):
    /// its users, caller ID names and limits take effect now.
    pub fn apply(&mut self, new: Config, fresh: &Providers) -> Result<Reloaded, ConfigError> {
        for (i, u) in new.users.iter().enumerate() {
            if !self.providers.accounts.contains_key(&u.provider) {
                return Err(ConfigError::Invalid {
                    key: format!("users[{i}].provider"),
                    value: u.provider.clone(),
                    reason:
                        "this account was not running at start: adding an account needs a restart"
                            .into(),
                });
            }
        }
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
    let providers = old.providers.len() == new.providers.len()
        && old
            .providers
            .iter()
            .zip(&new.providers)
            .all(|((an, a), (bn, b))| {
                an == bn
                    && a.kind == b.kind
                    && a.split_long == b.split_long
                    && a.registration_numbers == b.registration_numbers
                    && a.settings == b.settings
            });
    let checks = [
        (
            "xmpp",
            unchanged!(xmpp) && old.xmpp.secret.expose() == new.xmpp.secret.expose(),
        ),
        ("http", unchanged!(http)),
        ("phone", unchanged!(phone)),
        ("providers", providers),
        ("store", unchanged!(store)),
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
    use crate::directory::StoredUser;
    use crate::phone::PhoneNumber;

    fn config(extra: &str) -> Config {
        Config::from_toml(&format!(
            r#"
[xmpp]
server = "127.0.0.1:5347"
domain = "sms.example.com"
secret = "s"
[http]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1/"
[providers.main]
type = "sandbox"
token = "sandbox-test-token"
[[users]]
jid = "alice@example.com"
number = "+15550001111"
provider = "main"
{extra}
"#
        ))
        .unwrap()
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
        // A user on an account that was not running: refused, naming it.
        let mut c = config(
            "[[users]]\njid = \"dan@example.com\"\nnumber = \"+15550004444\"\nprovider = \"new\"\n",
        );
        c.providers
            .insert("new".into(), c.providers["main"].clone());
        let e = apply(&mut r, c).unwrap_err();
        assert!(e.to_string().contains("users[1].provider"), "{e}");
        assert!(users.get(&bare("dan@example.com")).is_none());
    }
}
