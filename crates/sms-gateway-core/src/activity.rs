//! What the Gateway has seen lately, for the admins' *Gateway status*
//! command: the last carrier errors (refusals, outages, failed deliveries),
//! as the carrier words them (never a message's text).

use std::collections::VecDeque;
use std::sync::Mutex;

/// How many carrier errors are kept.
pub const RECENT_ERRORS: usize = 5;

/// The last carrier errors, newest last; shared by the Gateway (which
/// records) and the XMPP process (which shows them to admins).
#[derive(Debug, Default)]
pub struct Activity {
    errors: Mutex<VecDeque<String>>,
}

impl Activity {
    /// Records a carrier error on `account`, at `at` (Unix seconds).
    pub fn carrier_error(&self, at: u64, account: &str, what: &str) {
        let mut e = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if e.len() == RECENT_ERRORS {
            e.pop_front();
        }
        e.push_back(format!(
            "{} {account}: {}",
            crate::time::utc(at),
            crate::text::excerpt(what, 160)
        ));
    }

    /// The last carrier errors, oldest first.
    pub fn recent_errors(&self) -> Vec<String> {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_few_are_kept() {
        let a = Activity::default();
        for i in 0..8 {
            a.carrier_error(0, "main", &format!("error {i}"));
        }
        let e = a.recent_errors();
        assert_eq!(e.len(), RECENT_ERRORS);
        assert!(
            e[0].ends_with("main: error 3") && e[4].ends_with("main: error 7"),
            "{e:?}"
        );
    }
}
