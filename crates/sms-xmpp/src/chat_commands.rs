//! Commands written in chat to the gateway's own address (#31), for clients
//! without an ad-hoc command UI (Dino has none): `help`, `status`,
//! `register [number]`, `new <number>`. Each does what its XEP-0050 or
//! XEP-0077 counterpart does and answers in chat, from the gateway's
//! address.

use crate::people::Answer;
use crate::XmppProcess;
use sms_gateway_core::ChatMessage;
use tokio_xmpp::jid::BareJid;

/// The longest chat read as a command; longer ones get the help.
const MAX_COMMAND: usize = 200;

impl XmppProcess {
    /// Whether `c` is written to the gateway's own address (not a contact,
    /// a room or several addresses): a command.
    pub(crate) fn is_chat_command(&self, c: &ChatMessage) -> bool {
        c.addresses.is_empty() && !c.groupchat && c.to == self.domain
    }

    /// The answer to command chat `c` from `from`, a user or a stranger
    /// (whose chats reach here only within the strangers' budget).
    pub(crate) fn chat_command(&self, from: &BareJid, c: &ChatMessage) -> Answer {
        let say = |text: String| Answer::Now(vec![self.notice(from, &text)]);
        let line = c.body.trim();
        let (word, rest) = match line.split_once(char::is_whitespace) {
            Some((w, r)) => (w, r.trim()),
            None => (line, ""),
        };
        let user = self.users.get(from);
        let admin = self.admins.contains(from);
        if line.chars().count() > MAX_COMMAND {
            return say(self.chat_help(user.is_some(), admin));
        }
        match word.to_lowercase().as_str() {
            "help" | "?" | "commands" => say(self.chat_help(user.is_some(), admin)),
            "status" => say(self.chat_status(from, admin)),
            "register" => self.chat_register(from, rest),
            "new" | "chat" if user.is_some() => {
                if rest.is_empty() {
                    return say("Write new and the number, as you would dial it: new +1 555 765 4321".into());
                }
                match self.start_chat(from, rest) {
                    Ok((_, text, mut out)) => {
                        out.insert(0, self.notice(from, &text));
                        Answer::Now(out)
                    }
                    Err(why) => say(format!("Not done: {why}")),
                }
            }
            _ if user.is_none() => say(format!(
                "You are not a user of this SMS gateway. {}",
                self.registration_hint(from)
            )),
            _ => say(format!(
                "To text someone, write to their number at this gateway (+15557654321@{}), or write new and the number here. {}",
                self.domain,
                "Write help for the commands."
            )),
        }
    }

    /// The list of commands for this kind of sender.
    fn chat_help(&self, user: bool, admin: bool) -> String {
        let mut lines = vec![format!("Commands you can write here (to {}):", self.domain)];
        lines.push("help: this list.".into());
        lines.push("status: your number and settings.".into());
        if user {
            lines.push("new +1 555 765 4321: start a chat with that number (it is added to your contacts).".into());
        }
        lines.push(
            "register: the numbers you can register with; register +15550001111 takes one.".into(),
        );
        if admin {
            lines.push("Admins: status also says how the gateway is.".into());
        }
        lines.push(format!(
            "To text someone, write to their number at this gateway: +15557654321@{}. Clients with ad-hoc commands (Gajim, Conversations, Profanity's /cmd) offer these and more as commands on {}.",
            self.domain, self.domain
        ));
        lines.join("\n")
    }

    /// `status`: who the sender is to the gateway, and for admins how the
    /// gateway is.
    fn chat_status(&self, from: &BareJid, admin: bool) -> String {
        let mut lines = vec![];
        match self.users.get_any(from) {
            Some(u) if u.approved() => lines.push(format!(
                "You are a user: your texts come from {} (carrier account {}). Caller ID (contacts' names) is {}.",
                u.number,
                u.account,
                if u.caller_id { "on" } else { "off" }
            )),
            Some(u) => lines.push(format!(
                "Your registration for {} waits for an admin's approval.",
                u.number
            )),
            None => lines.push(format!(
                "You are not a user of this SMS gateway. {}",
                self.registration_hint(from)
            )),
        }
        if admin {
            let s = self
                .status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            lines.push(format!("XMPP link: {}.", s.link));
            lines.push(format!(
                "Users: {}; registrations waiting: {}.",
                self.users.users().len(),
                self.users.waiting().len()
            ));
            let recent = self.activity.recent_errors();
            if recent.is_empty() {
                lines.push("Carrier errors: none since the start.".into());
            } else {
                lines.push("Last carrier errors:".into());
                lines.extend(recent);
            }
        }
        lines.join("\n")
    }

    /// What a sender who is not a user can do about it.
    fn registration_hint(&self, from: &BareJid) -> String {
        if self.registration.open_to_domain(from.domain().as_str()) {
            "Write register to see the numbers you can register with.".into()
        } else {
            format!(
                "Registration is not open to users of {}; ask the operator.",
                from.domain()
            )
        }
    }

    /// `register` (the free numbers) or `register <number>` (take it).
    fn chat_register(&self, from: &BareJid, number: &str) -> Answer {
        let say = |text: String| Answer::Now(vec![self.notice(from, &text)]);
        if let Some(e) = self.registration_refused(from) {
            return say(e.texts.into_values().next().unwrap_or_default());
        }
        if number.is_empty() {
            let free = self.free_numbers();
            if free.is_empty() {
                return say("No number is free for registration now; ask the operator.".into());
            }
            let approval = if self.registration.approval {
                " An admin approves each registration."
            } else {
                ""
            };
            let list: Vec<String> = free.into_iter().map(|(label, _)| label).collect();
            return say(format!(
                "Numbers you can register with: {}. Write register and the number to take one, e.g. register {}.{approval}",
                list.join(", "),
                list[0].split(' ').next().unwrap_or_default()
            ));
        }
        match self.registration(from, Some(number)) {
            Ok((change, done, then)) => self.ask_in_chat(from, change, done, then),
            Err(why) => say(format!("Not registered: {why}")),
        }
    }
}
