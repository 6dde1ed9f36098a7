//! Reactions (XEP-0444) both ways (#31), with what the XMPP process
//! remembers of each conversation's recent messages to do it.
//!
//! - A user's reaction goes out as the text phones show for one: `Reacted
//!   👍 to "first words…"` (Google Messages' wording), naming the message
//!   it is on by its first words. Only reactions the user adds go out (a
//!   XEP-0444 update carries the whole set); a removal sends nothing.
//! - An inbound text that is a phone's reaction (`Liked "…"`, `Loved "…"`,
//!   `Laughed at "…"`, `Emphasized "…"`, `Questioned "…"`, `Disliked "…"`,
//!   `Reacted 👍 to "…"`; curly or straight quotes) becomes a XEP-0444
//!   reaction on the message it quotes when exactly one recent message of
//!   that conversation matches; its words stay as the body, marked as a
//!   fallback (XEP-0428) for clients without reactions. Otherwise it stays
//!   a text.
//!
//! The memory is bounded: the last [`PER_CONVERSATION`] messages of the
//! [`CONVERSATIONS`] most recent conversations, each text cut to
//! [`KEPT_CHARS`]; it lives in memory only (after a restart, earlier
//! messages are not matched, and reactions to them stay texts).

use crate::XmppProcess;
use lru::LruCache;
use sms_gateway_core::ChatMessage;
use std::collections::VecDeque;
use std::num::NonZeroUsize;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::message::Message;

/// XEP-0444's namespace.
pub const REACTIONS_NS: &str = "urn:xmpp:reactions:0";
/// XEP-0428's namespace.
pub const FALLBACK_NS: &str = "urn:xmpp:fallback:0";

/// Conversations remembered (least recently used forgotten first).
pub(crate) const CONVERSATIONS: usize = 1024;
/// Messages remembered per conversation.
pub(crate) const PER_CONVERSATION: usize = 12;
/// Characters of each message kept (enough to tell messages apart).
pub(crate) const KEPT_CHARS: usize = 160;
/// Characters of the reacted-to message quoted in a reaction text.
const QUOTED_CHARS: usize = 40;

struct Remembered {
    id: String,
    /// The first [`KEPT_CHARS`] characters.
    text: String,
    /// Whether `text` was cut.
    cut: bool,
    /// The reactions the user has sent on it, so an update sends only new ones.
    reacted: Vec<String>,
}

/// The recent messages of each (user, contact) conversation.
pub(crate) struct Recent {
    /// By `user\ncontact` (bare JIDs): one allocation a lookup.
    conversations: LruCache<String, VecDeque<Remembered>>,
}

impl Default for Recent {
    fn default() -> Self {
        Recent {
            conversations: LruCache::new(NonZeroUsize::new(CONVERSATIONS).expect("not zero")),
        }
    }
}

/// The key of `user` and `contact`'s conversation (bare JIDs; a newline
/// cannot be in a JID).
fn key(user: &str, contact: &str) -> String {
    let user = user.split('/').next().unwrap_or(user);
    let contact = contact.split('/').next().unwrap_or(contact);
    let mut k = String::with_capacity(user.len() + contact.len() + 1);
    k.push_str(user);
    k.push('\n');
    k.push_str(contact);
    k
}

impl Recent {
    /// Remembers message `id` of `user` and `contact` (either way).
    pub(crate) fn note(&mut self, user: &str, contact: &str, id: &str, text: &str) {
        let text = text.trim();
        if id.is_empty() || text.is_empty() {
            return;
        }
        let end = text
            .char_indices()
            .nth(KEPT_CHARS)
            .map_or(text.len(), |(i, _)| i);
        let cut = end < text.len();
        let list = self
            .conversations
            .get_or_insert_mut(key(user, contact), VecDeque::new);
        if list.iter().any(|m| m.id == id) {
            // Written again (a redelivery after a restart): known already.
            return;
        }
        if list.len() >= PER_CONVERSATION {
            list.pop_front();
        }
        list.push_back(Remembered {
            id: id.to_owned(),
            text: text[..end].to_owned(),
            cut,
            reacted: vec![],
        });
    }

    /// The text a user's reactions on message `id` become, sending only the
    /// reactions not sent before; `None` when there are none new.
    pub(crate) fn reaction_text(
        &mut self,
        user: &str,
        contact: &str,
        id: &str,
        reactions: &[String],
    ) -> Option<String> {
        let found = self
            .conversations
            .get_mut(&key(user, contact))
            .and_then(|l| l.iter_mut().rev().find(|m| m.id == id));
        let Some(m) = found else {
            if reactions.is_empty() {
                return None;
            }
            let emoji: String = reactions.concat();
            return Some(format!("Reacted {emoji} to an earlier message"));
        };
        let emoji: String = reactions
            .iter()
            .filter(|r| !m.reacted.contains(r))
            .map(String::as_str)
            .collect();
        // The whole set, as XEP-0444 sends it: a removal forgets one.
        m.reacted = reactions.to_vec();
        if emoji.is_empty() {
            return None;
        }
        let mut quoted: String = m.text.chars().take(QUOTED_CHARS).collect();
        if m.cut || quoted.len() < m.text.len() {
            quoted.push('…');
        }
        Some(format!("Reacted {emoji} to \u{201c}{quoted}\u{201d}"))
    }

    /// The message of `user` and `contact` that a phone's reaction quoting
    /// `quote` is on: its id, when exactly one recent message matches.
    pub(crate) fn quoted(&mut self, user: &str, contact: &str, quote: &str) -> Option<String> {
        let list = self.conversations.get(&key(user, contact))?;
        let quote = quote.trim();
        let (prefix, shortened) = match quote
            .strip_suffix('…')
            .or_else(|| quote.strip_suffix("..."))
        {
            Some(p) => (p.trim_end(), true),
            None => (quote, false),
        };
        let matches = |m: &&Remembered| {
            if m.cut {
                // Only the start is known: the quote must begin with it.
                prefix.starts_with(m.text.as_str()) || (shortened && m.text.starts_with(prefix))
            } else if shortened {
                m.text.starts_with(prefix)
            } else {
                m.text == quote
            }
        };
        let mut found = list.iter().filter(matches);
        let first = found.next()?;
        if found.next().is_some() {
            return None;
        }
        Some(first.id.clone())
    }
}

/// The payloads that make a chat a reaction with `emoji` on message `on`:
/// XEP-0444's, and XEP-0428's marking the whole body (the phone's words) as
/// the fallback for clients without reactions.
pub(crate) fn payloads(on: &str, emoji: &str) -> [Element; 2] {
    [
        Element::builder("reactions", REACTIONS_NS)
            .attr(nc("id"), on)
            .append(Element::builder("reaction", REACTIONS_NS).append(emoji))
            .build(),
        Element::builder("fallback", FALLBACK_NS)
            .attr(nc("for"), REACTIONS_NS)
            .build(),
    ]
}

fn nc(name: &'static str) -> tokio_xmpp::minidom::rxml::NcName {
    tokio_xmpp::minidom::rxml::NcName::try_from(name).expect("a valid name")
}

impl XmppProcess {
    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A user's one-to-one chat `m` (read into `c`): remembered, or, if it
    /// carries reactions, made the text of the new ones. False when there
    /// is nothing to text (a removal, or nothing new).
    pub(crate) fn user_chat_seen(&self, m: &Message, c: &mut ChatMessage) -> bool {
        let Some(r) = m.payloads.iter().find(|p| p.is("reactions", REACTIONS_NS)) else {
            if let Some(id) = &c.id {
                self.recent().note(&c.from, &c.to, id, &c.body);
            }
            return true;
        };
        let on = r.attr("id").unwrap_or_default();
        let reactions: Vec<String> = r
            .children()
            .filter(|e| e.is("reaction", REACTIONS_NS))
            .map(|e| e.text().trim().to_owned())
            .filter(|t| !t.is_empty() && t.chars().count() <= 8)
            .take(16)
            .collect();
        match self.recent().reaction_text(&c.from, &c.to, on, &reactions) {
            Some(text) => {
                c.body = text;
                c.media.clear();
                true
            }
            None => false,
        }
    }

    /// A chat from `contact` to `user` with `id`, about to be written: a
    /// phone's reaction on a message of theirs (its id and emoji), or
    /// remembered.
    pub(crate) fn text_seen(
        &self,
        user: &str,
        contact: &str,
        id: &str,
        body: &str,
    ) -> Option<(String, String)> {
        let mut recent = self.recent();
        if let Some((emoji, quote)) = tapback(body) {
            if let Some(on) = recent.quoted(user, contact, &quote) {
                return Some((on, emoji));
            }
        }
        recent.note(user, contact, id, body);
        None
    }
}

/// A phone's reaction text: the emoji and the quoted words, if `body` is one.
pub(crate) fn tapback(body: &str) -> Option<(String, String)> {
    let body = body.trim();
    let (emoji, rest) = if let Some(rest) = body.strip_prefix("Reacted ") {
        // Google Messages: `Reacted 👍 to "…"`.
        let (emoji, rest) = rest.split_once(" to ")?;
        if emoji.is_empty() || emoji.chars().count() > 8 || emoji.chars().any(char::is_alphanumeric)
        {
            return None;
        }
        (emoji.to_owned(), rest)
    } else {
        let (word, rest) = body.split_once(' ')?;
        let (word, rest) = if word == "Laughed" {
            ("Laughed at", rest.strip_prefix("at ")?)
        } else {
            (word, rest)
        };
        let emoji = match word {
            "Liked" => "👍",
            "Loved" => "❤️",
            "Laughed at" => "😂",
            "Emphasized" => "‼️",
            "Questioned" => "❓",
            "Disliked" => "👎",
            _ => return None,
        };
        (emoji.to_owned(), rest)
    };
    let quoted = rest
        .strip_prefix(['"', '\u{201c}'])?
        .strip_suffix(['"', '\u{201d}'])?;
    if quoted.trim().is_empty() {
        return None;
    }
    Some((emoji, quoted.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_reaction_texts_are_read() {
        for (body, emoji, quote) in [
            ("Liked \u{201c}see you at 8\u{201d}", "👍", "see you at 8"),
            ("Loved \"see you\"", "❤️", "see you"),
            ("Laughed at \u{201c}ha\u{201d}", "😂", "ha"),
            ("Emphasized \u{201c}now\u{201d}", "‼️", "now"),
            ("Questioned \"why\"", "❓", "why"),
            ("Disliked \u{201c}no\u{201d}", "👎", "no"),
            ("Reacted 🎉 to \u{201c}we won\u{201d}", "🎉", "we won"),
        ] {
            assert_eq!(
                tapback(body),
                Some((emoji.to_owned(), quote.to_owned())),
                "{body}"
            );
        }
        for body in [
            "Liked it",
            "Liked \"\"",
            "Laughed \"x\"",
            "Reacted strongly to \"x\"",
            "I Liked \"x\"",
            "Liked an image",
        ] {
            assert_eq!(tapback(body), None, "{body}");
        }
    }

    #[test]
    fn a_quote_names_a_message_only_when_exactly_one_matches() {
        let mut r = Recent::default();
        r.note("alice@x/phone", "+1555@sms", "m1", "see you at 8");
        r.note("alice@x", "+1555@sms", "m2", "bring the cake");
        r.note("alice@x", "+1555@sms", "m3", "bring the cake");
        r.note("alice@x", "+1666@sms", "m4", "see you at 8");
        assert_eq!(
            r.quoted("alice@x", "+1555@sms", "see you at 8").as_deref(),
            Some("m1")
        );
        assert_eq!(
            r.quoted("alice@x", "+1555@sms", "see you…").as_deref(),
            Some("m1")
        );
        assert_eq!(
            r.quoted("alice@x", "+1555@sms", "bring the cake"),
            None,
            "two match"
        );
        assert_eq!(
            r.quoted("alice@x", "+1555@sms", "see you"),
            None,
            "not the whole text"
        );
        assert_eq!(r.quoted("bob@x", "+1555@sms", "see you at 8"), None);
        // A long text is kept cut, and still found by its quote.
        let long = "a".repeat(300);
        r.note("alice@x", "+1555@sms", "m5", &long);
        assert_eq!(
            r.quoted("alice@x", "+1555@sms", &long).as_deref(),
            Some("m5")
        );
    }

    #[test]
    fn a_users_reaction_becomes_text_once() {
        let mut r = Recent::default();
        r.note(
            "alice@x",
            "+1555@sms",
            "m1",
            "are we still on for tonight at the usual place?",
        );
        let t = r.reaction_text("alice@x/pc", "+1555@sms", "m1", &["👍".into()]);
        assert_eq!(
            t.as_deref(),
            Some("Reacted 👍 to \u{201c}are we still on for tonight at the usual…\u{201d}")
        );
        // The update that adds a second one sends only that one; a removal nothing.
        let t = r.reaction_text("alice@x", "+1555@sms", "m1", &["👍".into(), "❤️".into()]);
        assert_eq!(
            t.as_deref().map(|t| t.starts_with("Reacted ❤️ to")),
            Some(true)
        );
        assert_eq!(
            r.reaction_text("alice@x", "+1555@sms", "m1", &["👍".into()]),
            None
        );
        // Added again after the removal: it goes again.
        let t = r.reaction_text("alice@x", "+1555@sms", "m1", &["👍".into(), "❤️".into()]);
        assert_eq!(
            t.as_deref().map(|t| t.starts_with("Reacted ❤️ to")),
            Some(true)
        );
        assert_eq!(
            r.reaction_text("alice@x", "+1555@sms", "gone", &["👍".into()])
                .as_deref(),
            Some("Reacted 👍 to an earlier message")
        );
    }

    #[test]
    fn memory_is_bounded() {
        let mut r = Recent::default();
        for c in 0..CONVERSATIONS + 10 {
            for m in 0..PER_CONVERSATION + 5 {
                r.note("alice@x", &format!("+{c}@sms"), &format!("m{m}"), "hello");
            }
        }
        assert_eq!(r.conversations.len(), CONVERSATIONS);
        assert!(r
            .conversations
            .iter()
            .all(|(_, l)| l.len() == PER_CONVERSATION));
    }
}
