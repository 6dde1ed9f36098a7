//! What users see around their texts: presence clients believe, names in
//! rosters and vCards, registration (XEP-0077) and ad-hoc commands
//! (XEP-0050).
//!
//! - **Presence** comes from a full JID (`+15557654321@sms.example.com/sms`,
//!   and `sms.example.com/sms`): clients that track availability per
//!   resource (Gajim) show a bare JID's presence as offline. One available
//!   presence per change: a subscription, a probe (the user logging in), a
//!   start; `unavailable` from all of them at a clean stop.
//! - **Names**: where the user's server grants the component roster access
//!   (XEP-0356, advertised in a `<privilege/>` message at login), contacts
//!   are put in the user's roster with their caller-ID name in the group
//!   "SMS"; vCard4 (XEP-0292, over PubSub) and vcard-temp answer with the
//!   name either way.
//! - **Registration and commands**: forms on the gateway's JID; what they
//!   change goes to the Gateway ([`XmppEvent::Users`]), which stores it and
//!   answers ([`OutgoingStanza::Done`]); the IQ is answered then.
//!
//! One module per protocol: `presence`, `roster` (XEP-0356), `vcard`
//! (XEP-0292), `registration` (XEP-0077), `commands` (XEP-0050). This one
//! holds what they share: who may do what, the data forms, and the round
//! trip to the Gateway ([`Waiting`], answered by `done`).

use super::*;
use jid::BareJid;
use sms_gateway_core::{Origin, StoredUser, UserChange};
use tokio_xmpp::jid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::data_forms::{
    DataForm, DataFormType, Field as DataField, FieldType, Option_ as DataOption,
};
use tokio_xmpp::parsers::message::Lang;
use tokio_xmpp::parsers::ns;

mod commands;
mod presence;
mod registration;
mod roster;
mod vcard;

use commands::completed;

/// The resource contacts and the gateway send presence from.
pub const RESOURCE: &str = "sms";
/// The roster group contacts are put in.
pub const GROUP: &str = "SMS";
/// XEP-0050.
pub const COMMANDS_NS: &str = "http://jabber.org/protocol/commands";
/// XEP-0077.
pub const REGISTER_NS: &str = "jabber:iq:register";
/// XEP-0004.
pub const DATA_NS: &str = "jabber:x:data";
/// RFC 6121 rosters.
pub const ROSTER_NS: &str = "jabber:iq:roster";
/// XEP-0292's vCard4 and its PubSub node.
pub const VCARD4_NS: &str = "urn:ietf:params:xml:ns:vcard-4.0";
/// XEP-0292's PubSub node.
pub const VCARD4_NODE: &str = "urn:xmpp:vcard4";
/// XEP-0060.
pub const PUBSUB_NS: &str = "http://jabber.org/protocol/pubsub";
/// XEP-0356, in the versions servers speak (ejabberd 23: 1; Prosody's
/// mod_privilege: 2).
pub const PRIVILEGE_NS: [&str; 2] = ["urn:xmpp:privilege:1", "urn:xmpp:privilege:2"];

/// An attribute name.
fn nc(name: &'static str) -> tokio_xmpp::minidom::rxml::NcName {
    tokio_xmpp::minidom::rxml::NcName::try_from(name).expect("a valid attribute name")
}

/// How many (user, contact) pairs are remembered as announced available.
const ANNOUNCED: usize = 100_000;
/// When a user approves a contact's request (`subscribed`), the server
/// probes the contact at once (Prosody does); the contact is announced
/// already, so that one probe, if it comes within this time, is not
/// answered. Every other probe (a user's new session) is.
const PROBE_AFTER_APPROVAL: Duration = Duration::from_secs(30);
/// How many registrations and commands may wait for the Gateway at once.
const WAITING: usize = 1024;

/// The commands, by node: (node, name, for admins only).
pub const COMMANDS: &[(&str, &str, bool)] = &[
    ("new-chat", "New chat by number", false),
    ("new-group", "New group text", false),
    ("settings", "My settings", false),
    ("unregister", "Unregister", false),
    ("add-user", "Add user", true),
    ("remove-user", "Remove user", true),
    ("list-users", "List users", true),
    ("pending", "Pending registrations", true),
    ("status", "Gateway status", true),
];

/// A registration or command waiting for the Gateway's answer.
pub(crate) struct Waiting {
    /// Who asked, answered when the Gateway has done (or refused) it.
    asker: Asker,
    /// For a command: its node and session.
    command: Option<(String, String)>,
    /// What to say when it is done.
    done: String,
    /// Stanzas to send as well when it is done (notices to admins).
    then: Vec<Stanza>,
}

/// Who asked for a change: a request (registration, a command), answered
/// with its result, or a chat to the gateway's address, answered in chat.
// Kept inside a boxed `Waiting`, one per request in flight: the size is
// paid once per request, not per variant moved around.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Asker {
    /// An IQ: registration (XEP-0077) or an ad-hoc command (XEP-0050).
    Iq(Iq),
    /// A command written in chat (#31), by this user.
    Chat(BareJid),
}

/// What the gateway knows of its users' servers and what it has said.
#[derive(Default)]
pub(crate) struct People {
    /// (user, contact) pairs announced available, and when, for
    /// `unavailable` at stop and quiet probes.
    announced: HashMap<(String, String), tokio::time::Instant>,
    /// Servers that granted roster access (XEP-0356), with the namespace.
    roster_access: HashMap<String, &'static str>,
    /// Roster items sent and not yet answered, by IQ id: (contact, user, name).
    roster_sets: HashMap<String, (String, String, Option<String>)>,
    /// (user, contact) pairs whose subscription the user just approved,
    /// and when: the server's probe that follows is not answered.
    approved: HashMap<(String, String), tokio::time::Instant>,
    /// Registrations and commands waiting for the Gateway, by ticket.
    waiting: HashMap<u64, Box<Waiting>>,
    next_ticket: u64,
}

/// Who asks: a stranger, a user, or an admin (who may also be a user).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Stranger,
    User,
    Admin,
}

/// The values of a submitted data form, by field, read with xmpp-parsers'
/// XEP-0004 parser; a form it refuses (a field without `var`, options
/// outside a list, two `FORM_TYPE`s) is to be answered `bad-request` with
/// the reason returned.
fn form_values(form: &Element) -> Result<HashMap<String, Vec<String>>, String> {
    let form = DataForm::try_from(form.clone()).map_err(|e| {
        let e = e.to_string();
        format!("The form is malformed: {}.", e.trim_end_matches('.'))
    })?;
    Ok(form
        .fields
        .into_iter()
        .filter_map(|f| {
            let values = f.values.iter().map(|v| v.trim().to_owned()).collect();
            Some((f.var?, values))
        })
        .collect())
}

fn first<'a>(values: &'a HashMap<String, Vec<String>>, var: &str) -> Option<&'a str> {
    values
        .get(var)
        .and_then(|v| v.first())
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

/// A data form field: xmpp-parsers' XEP-0004 [`DataField`], built the way
/// the forms here need it (a label, values, options as (label, value)).
pub(crate) struct Field(DataField);

impl Field {
    fn new(var: &str, type_: FieldType, label: &str) -> Self {
        let mut f = DataField::new(var, type_);
        if !label.is_empty() {
            f.label = Some(label.to_owned());
        }
        Field(f)
    }
    fn value(mut self, v: impl Into<String>) -> Self {
        self.0
            .values
            .push(translate::xml_safe(&v.into()).into_owned());
        self
    }
    fn options(mut self, o: Vec<(String, String)>) -> Self {
        let clean = |s: &str| translate::xml_safe(s).into_owned();
        self.0.options = o
            .into_iter()
            .map(|(label, value)| DataOption {
                label: Some(clean(&label)),
                value: clean(&value),
            })
            .collect();
        self
    }
    fn required(mut self) -> Self {
        self.0.required = true;
        self
    }
}

/// An XEP-0004 form of `type_` (`Form` or `Result_`), made by
/// xmpp-parsers; what users or carriers wrote in it made XML-safe.
fn form(type_: DataFormType, title: &str, instructions: &str, fields: Vec<Field>) -> Element {
    data_form(type_, title, instructions, fields).into()
}

/// The same form as xmpp-parsers' type, for payloads that carry one
/// (XEP-0077's `FormQuery`).
fn data_form(type_: DataFormType, title: &str, instructions: &str, fields: Vec<Field>) -> DataForm {
    let clean = |s: &str| translate::xml_safe(s).into_owned();
    DataForm {
        type_,
        title: Some(clean(title)),
        instructions: (!instructions.is_empty()).then(|| clean(instructions)),
        fields: fields.into_iter().map(|f| f.0).collect(),
    }
}

fn error(
    type_: ErrorType,
    cond: DefinedCondition,
    text: impl Into<String>,
) -> tokio_xmpp::parsers::stanza_error::StanzaError {
    translate::stanza_error(type_, cond, text)
}

fn bad(text: impl Into<String>) -> tokio_xmpp::parsers::stanza_error::StanzaError {
    error(ErrorType::Modify, DefinedCondition::BadRequest, text)
}

/// What to do with a request the people module answers.
pub(crate) enum Answer {
    /// Stanzas to send now (the reply first).
    Now(Vec<Stanza>),
    /// A change for the Gateway; the reply waits for its answer.
    Ask(UserChange, Box<Waiting>),
}

impl XmppProcess {
    fn people(&self) -> std::sync::MutexGuard<'_, People> {
        self.people.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `from` may run a command (`admin_only` or a user's): users
    /// run users' commands; admins run admins' commands, and users' ones
    /// only if they are users too.
    fn may_run(&self, from: Option<&Jid>, admin_only: bool) -> bool {
        match self.role(from) {
            Role::Stranger => false,
            Role::User => !admin_only,
            Role::Admin => {
                admin_only || from.is_some_and(|f| self.users.get(&f.to_bare()).is_some())
            }
        }
    }

    /// A chat from the gateway's own JID to `to`.
    pub(crate) fn notice(&self, to: &BareJid, text: &str) -> Stanza {
        let mut m = Message::chat(Jid::from(to.clone()));
        m.from = jid(&self.domain);
        m.id = Some(Id(self.new_id()));
        m.with_body(Lang::new(), translate::xml_safe(text).into_owned())
            .into()
    }

    fn role(&self, from: Option<&Jid>) -> Role {
        let Some(bare) = from.map(|f| f.to_bare()) else {
            return Role::Stranger;
        };
        if self.admins.contains(&bare) {
            Role::Admin
        } else if self.users.get(&bare).is_some() {
            Role::User
        } else {
            Role::Stranger
        }
    }

    /// `jid` (a contact or the domain) with the presence resource.
    pub(crate) fn full(&self, bare: &str) -> Option<Jid> {
        jid(&format!("{bare}/{RESOURCE}"))
    }

    fn ask(
        &self,
        iq: &Iq,
        command: Option<(String, String)>,
        change: UserChange,
        done: String,
        then: Vec<Stanza>,
    ) -> Answer {
        if self.people().waiting.len() >= WAITING {
            return Answer::Now(vec![translate::reply(
                iq,
                Err(error(
                    ErrorType::Wait,
                    DefinedCondition::ResourceConstraint,
                    "The gateway is busy; try again in a moment.",
                )),
            )
            .into()]);
        }
        Answer::Ask(
            change,
            Box::new(Waiting {
                asker: Asker::Iq(iq.clone()),
                command,
                done,
                then,
            }),
        )
    }

    /// Asks the Gateway for `change` on behalf of a command written in
    /// chat by `user`: the answer comes in chat.
    pub(crate) fn ask_in_chat(
        &self,
        user: &BareJid,
        change: UserChange,
        done: String,
        then: Vec<Stanza>,
    ) -> Answer {
        if self.people().waiting.len() >= WAITING {
            return Answer::Now(vec![
                self.notice(user, "The gateway is busy; try again in a moment.")
            ]);
        }
        Answer::Ask(
            change,
            Box::new(Waiting {
                asker: Asker::Chat(user.clone()),
                command: None,
                done,
                then,
            }),
        )
    }

    /// Keeps `waiting` for the Gateway's answer; the ticket to send with it.
    pub(crate) fn wait_for(&self, waiting: Box<Waiting>) -> u64 {
        let mut people = self.people();
        people.next_ticket += 1;
        let t = people.next_ticket;
        people.waiting.insert(t, waiting);
        t
    }

    /// The Gateway's answer to `ticket`: the reply to what waited for it.
    pub(crate) fn done(&self, ticket: u64, result: Result<(), String>) -> Vec<Stanza> {
        let Some(w) = self.people().waiting.remove(&ticket) else {
            return vec![];
        };
        let ok = result.is_ok();
        let iq = match &w.asker {
            Asker::Iq(iq) => iq,
            Asker::Chat(user) => {
                let mut out = vec![match result {
                    Ok(()) => self.notice(user, &w.done),
                    Err(why) => self.notice(user, &format!("Not done: {why}")),
                }];
                if ok {
                    out.extend(w.then);
                }
                return out;
            }
        };
        let reply = match (&w.command, result) {
            (None, Ok(())) => translate::reply(iq, Ok(None)),
            (None, Err(why)) => translate::reply(
                iq,
                Err(error(
                    ErrorType::Cancel,
                    DefinedCondition::NotAcceptable,
                    why,
                )),
            ),
            (Some((node, session)), r) => {
                let (kind, text) = match r {
                    Ok(()) => ("info", w.done.clone()),
                    Err(why) => ("error", why),
                };
                translate::reply(iq, Ok(Some(completed(node, session, kind, &text, None))))
            }
        };
        let mut out = vec![reply.into()];
        if ok {
            if w.command.is_none() {
                // Registration: the user also reads what happens next.
                if let Some(to) = iq.from() {
                    out.push(self.notice(&to.to_bare(), &w.done));
                }
            }
            out.extend(w.then);
        }
        out
    }
}

/// What *Gateway status* shows of the link, kept up to date by the session.
#[derive(Debug, Clone, Default)]
pub(crate) struct Status {
    pub(crate) link: String,
    pub(crate) unacked: usize,
}

impl XmppProcess {
    /// The answer to a registration or command request from anyone, as the
    /// XML written back (the Gateway's part left out): for the fuzz target.
    #[doc(hidden)]
    pub fn answer_request_for_fuzzing(&self, iq: &Iq) -> Vec<String> {
        let outbox = Outbox::default();
        match self.answer_people(iq, &outbox) {
            Some(Answer::Now(stanzas)) => stanzas.into_iter().map(translate::written).collect(),
            // Handed to the Gateway: nothing is written yet.
            Some(Answer::Ask(..)) => vec![],
            None => vec![],
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A process for the test config, with `extra` TOML at its end.
    pub(crate) fn process(extra: &str) -> XmppProcess {
        let config = Config::from_toml(&format!(
            r#"
[xmpp]
server = "127.0.0.1:5347"
domain = "sms.example.com"
secret = "s"
[http]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1/"
[phone]
default_prefix = "+1"
[providers.main]
type = "sandbox"
token = "sandbox-test-token"
registration_numbers = ["+15550002222", "+15550003333"]
[[users]]
jid = "alice@example.com"
number = "+15550001111"
provider = "main"
[admins]
jids = ["root@example.com"]
{extra}
"#
        ))
        .unwrap();
        let mut registry = sms_gateway_core::ProviderRegistry::new();
        registry.register("sandbox", sms_gateway_runtime::SandboxProvider::from_config);
        let providers = config.validate(&registry).unwrap();
        XmppProcess::new(&config, &providers)
    }

    fn iq(xml: &str) -> Iq {
        Iq::try_from(xml.parse::<Element>().unwrap()).unwrap()
    }

    fn answer(p: &XmppProcess, xml: &str) -> Vec<String> {
        p.answer_request_for_fuzzing(&iq(xml))
    }

    const REGISTER_GET: &str = "<iq xmlns='jabber:component:accept' type='get' id='r' from='bob@example.com/x' to='sms.example.com'><query xmlns='jabber:iq:register'/></iq>";

    fn register_set(from: &str, number: &str) -> String {
        format!("<iq xmlns='jabber:component:accept' type='set' id='r' from='{from}' to='sms.example.com'><query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'><field var='number'><value>{number}</value></field></x></query></iq>")
    }

    #[tokio::test]
    async fn registration_is_closed_unless_the_domain_is_open() {
        let closed = process("");
        let a = answer(&closed, REGISTER_GET);
        assert!(
            a[0].contains("not-allowed") && a[0].contains("not open to users of example.com"),
            "{a:?}"
        );
        let a = answer(&closed, &register_set("bob@example.com/x", "+15550002222"));
        assert!(a[0].contains("not-allowed"), "{a:?}");
        let open = process("[registration]\nopen_to = [\"Example.com\"]\n");
        let a = answer(&open, REGISTER_GET);
        assert!(
            a[0].contains("+15550002222") && a[0].contains("+15550003333"),
            "{a:?}"
        );
        // A configured user sees the registration, and cannot change it here.
        let a = answer(&open, &REGISTER_GET.replace("bob@", "alice@"));
        assert!(
            a[0].contains("<registered/>") && a[0].contains("+15550001111"),
            "{a:?}"
        );
        let a = answer(&open, &register_set("alice@example.com/x", "+15550002222"));
        assert!(a[0].contains("not-allowed"), "{a:?}");
        // Bad input names the field; a good one goes to the Gateway.
        for bad in ["", "call me", "+15550009999"] {
            let a = answer(&open, &register_set("bob@example.com/x", bad));
            assert!(
                a[0].contains("bad-request") && a[0].contains("number"),
                "{bad}: {a:?}"
            );
        }
        let a = answer(&open, &register_set("bob@example.com/x", "+1 555 000 2222"));
        assert!(a.is_empty(), "handed to the Gateway: {a:?}");
    }

    fn command(from: &str, node: &str, form: &str) -> String {
        format!("<iq xmlns='jabber:component:accept' type='set' id='c' from='{from}' to='sms.example.com'><command xmlns='http://jabber.org/protocol/commands' node='{node}'>{form}</command></iq>")
    }

    #[tokio::test]
    async fn commands_are_for_users_and_admins_and_name_bad_fields() {
        let p = process("");
        for (from, node, allowed) in [
            ("mallory@evil.example/x", "new-chat", false),
            ("alice@example.com/x", "new-chat", true),
            ("alice@example.com/x", "list-users", false),
            ("root@example.com/x", "list-users", true),
            ("root@example.com/x", "settings", false),
            ("alice@example.com/x", "no-such", false),
        ] {
            let a = answer(&p, &command(from, node, ""));
            assert_eq!(
                !a[0].contains("type=\"error\"") && !a[0].contains("type='error'"),
                allowed,
                "{from} {node}: {a:?}"
            );
        }
        let a = answer(&p, &command("mallory@evil.example/x", "new-chat", ""));
        assert!(a[0].contains("forbidden"), "{a:?}");
        // My settings: each fixed value says what it is (#28).
        let a = answer(&p, &command("alice@example.com/x", "settings", ""));
        assert!(a[0].contains("<value>Your number: +1"), "{a:?}");
        assert!(a[0].contains("<value>Carrier account: "), "{a:?}");
        let form = |fields: &str| format!("<x xmlns='jabber:x:data' type='submit'>{fields}</x>");
        let a = answer(
            &p,
            &command(
                "alice@example.com/x",
                "new-chat",
                &form("<field var='number'><value>555 765 4321</value></field>"),
            ),
        );
        assert!(
            a[0].contains("+15557654321@sms.example.com") && a[0].contains("completed"),
            "{a:?}"
        );
        // A form XEP-0004 does not allow (a field without `var`) is
        // refused with the parser's reason, not read as empty (#29: forms
        // through xmpp-parsers).
        let malformed = answer(
            &p,
            &command(
                "alice@example.com/x",
                "new-chat",
                &form("<field><value>555 765 4321</value></field>"),
            ),
        );
        assert!(
            malformed[0].contains("bad-request")
                && malformed[0]
                    .contains("The form is malformed: Required attribute 'var' missing.<"),
            "{malformed:?}"
        );
        assert!(
            a.iter()
                .any(|s| s.contains("type=\"subscribe\"") || s.contains("type='subscribe'")),
            "without roster access the contact asks to be added: {a:?}"
        );
        // New group text: the numbers as dialled, the room's JID back, and
        // an invitation to it; a bad number is named.
        let a = answer(
            &p,
            &command(
                "alice@example.com/x",
                "new-group",
                &form("<field var='numbers'><value>555 333 4444, (555) 111-2222</value></field>"),
            ),
        );
        let room = "+15551112222,+15553334444@sms.example.com";
        assert!(a[0].contains(room) && a[0].contains("completed"), "{a:?}");
        assert!(
            a[1].contains("jabber:x:conference") && a[1].contains(room),
            "{a:?}"
        );
        let a = answer(
            &p,
            &command(
                "alice@example.com/x",
                "new-group",
                &form("<field var='numbers'><value>555 333 4444, pizza</value></field>"),
            ),
        );
        assert!(
            a[0].contains("bad-request") && a[0].contains("pizza"),
            "{a:?}"
        );
        let a = answer(
            &p,
            &command(
                "root@example.com/x",
                "add-user",
                &form("<field var='jid'><value>not a jid@@</value></field>"),
            ),
        );
        assert!(
            a[0].contains("bad-request") && a[0].contains("'jid'"),
            "{a:?}"
        );
        let a = answer(&p, &command("root@example.com/x", "add-user", &form("<field var='jid'><value>dave@example.com</value></field><field var='number'><value>+15550004444</value></field><field var='account'><value>nope</value></field>")));
        assert!(a[0].contains("'account'") && a[0].contains("main"), "{a:?}");
        let a = answer(&p, &command("root@example.com/x", "list-users", ""));
        assert!(
            a[0].contains("alice@example.com +15550001111 main (config)"),
            "{a:?}"
        );
        let a = answer(
            &p,
            &command(
                "alice@example.com/x",
                "unregister",
                &form("<field var='confirm'><value>0</value></field>"),
            ),
        );
        assert!(a[0].contains("'confirm'"), "{a:?}");
    }

    #[tokio::test]
    async fn a_servers_privilege_message_grants_roster_pushes_and_a_refusal_takes_it_back() {
        let p = process("");
        let m = |xml: &str| Message::try_from(xml.parse::<Element>().unwrap()).unwrap();
        assert!(p
            .roster_item(
                "+15557654321@sms.example.com",
                "alice@example.com",
                Some("Jane")
            )
            .is_none());
        // Only a server may grant it.
        assert!(p.on_privilege(&m("<message xmlns='jabber:component:accept' from='mallory@example.com' to='sms.example.com'><privilege xmlns='urn:xmpp:privilege:2'><perm access='roster' type='both'/></privilege></message>")));
        assert!(p
            .roster_item(
                "+15557654321@sms.example.com",
                "alice@example.com",
                Some("Jane")
            )
            .is_none());
        assert!(p.on_privilege(&m("<message xmlns='jabber:component:accept' from='example.com' to='sms.example.com'><privilege xmlns='urn:xmpp:privilege:1'><perm access='roster' type='both'/></privilege></message>")));
        let out = p
            .roster_item(
                "+15557654321@sms.example.com",
                "alice@example.com",
                Some("Jane"),
            )
            .unwrap();
        let Stanza::Iq(set) = &out[0] else { panic!() };
        let xml = String::from(&Element::from(set.clone()));
        assert!(
            xml.contains("name=\"Jane\"") || xml.contains("name='Jane'"),
            "{xml}"
        );
        assert!(xml.contains("<group>SMS</group>"), "{xml}");
        // Refused (ejabberd 23.01): the contact asks to be added instead,
        // and the grant is not used again.
        let refused = Iq::Error {
            from: jid("alice@example.com"),
            to: jid("sms.example.com"),
            id: set.id().to_owned(),
            payload: None,
            error: translate::stanza_error(
                ErrorType::Cancel,
                DefinedCondition::InternalServerError,
                "x",
            ),
        };
        let (fallback, _) = p.roster_answer(&refused).unwrap();
        assert!(
            matches!(&fallback[..], [Stanza::Presence(p)] if p.type_ == PresenceType::Subscribe)
        );
        assert!(p
            .roster_item("+15557654321@sms.example.com", "alice@example.com", None)
            .is_none());
    }

    #[tokio::test]
    async fn one_available_presence_per_change_and_one_per_login() {
        let p = process("");
        let presence = |type_: &str| {
            let t = if type_.is_empty() {
                String::new()
            } else {
                format!(" type='{type_}'")
            };
            Presence::try_from(
                format!("<presence xmlns='jabber:component:accept'{t} from='alice@example.com/x' to='+15557654321@sms.example.com'/>")
                    .parse::<Element>()
                    .unwrap(),
            )
            .unwrap()
        };
        let available = |out: &[Presence]| {
            out.iter()
                .filter(|p| p.type_ == PresenceType::None)
                .inspect(|p| {
                    assert_eq!(
                        p.from.as_ref().map(|f| f.to_string()).as_deref(),
                        Some("+15557654321@sms.example.com/sms")
                    )
                })
                .count()
        };
        let (out, event) = p.answer_presence(&presence("subscribe"));
        assert_eq!(available(&out), 1);
        assert!(matches!(
            event,
            Some(XmppEvent::Subscription {
                subscribed: true,
                ..
            })
        ));
        // Approving the contact's request, and the server's probe after it:
        // nothing new to say.
        assert_eq!(available(&p.answer_presence(&presence("subscribed")).0), 0);
        assert_eq!(available(&p.answer_presence(&presence("probe")).0), 0);
        // The user's own presence needs no answer; a later login's probe does.
        assert_eq!(available(&p.answer_presence(&presence("")).0), 0);
        assert_eq!(available(&p.answer_presence(&presence("probe")).0), 1);
        assert_eq!(available(&p.answer_presence(&presence("probe")).0), 1);
        // A stop says unavailable once per announced pair.
        let bye = p.goodbyes();
        assert_eq!(bye.len(), 1);
        assert_eq!(bye[0].type_, PresenceType::Unavailable);
    }
}
