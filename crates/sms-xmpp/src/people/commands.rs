//! Ad-hoc commands (XEP-0050) on the gateway's JID: the list, each
//! command's form and what its submission does.

use super::*;

impl XmppProcess {
    /// The commands `from` may run, as disco#items.
    pub(crate) fn command_items(&self, from: Option<&Jid>) -> Element {
        let mut q = Element::builder("query", ns::DISCO_ITEMS).attr(nc("node"), COMMANDS_NS);
        for (node, name, admin) in COMMANDS {
            if self.may_run(from, *admin) {
                q = q.append(
                    Element::builder("item", ns::DISCO_ITEMS)
                        .attr(nc("jid"), self.domain.as_str())
                        .attr(nc("node"), *node)
                        .attr(nc("name"), *name),
                );
            }
        }
        q.build()
    }

    /// An ad-hoc command (XEP-0050) on the gateway's JID.
    pub(crate) fn answer_command(&self, iq: &Iq, payload: &Element) -> Answer {
        let now_err = |e| Answer::Now(vec![translate::reply(iq, Err(e)).into()]);
        let node = payload.attr("node").unwrap_or_default().to_owned();
        let Some(&(_, name, admin_only)) = COMMANDS.iter().find(|(n, _, _)| *n == node) else {
            return now_err(error(
                ErrorType::Cancel,
                DefinedCondition::ItemNotFound,
                format!("There is no command {node:?} here."),
            ));
        };
        let allowed = self.may_run(iq.from(), admin_only);
        if !allowed {
            let who = if admin_only { "admins" } else { "users" };
            return now_err(error(
                ErrorType::Auth,
                DefinedCondition::Forbidden,
                format!("\"{name}\" is for the {who} of {}.", self.domain),
            ));
        }
        let from = iq.from().expect("allowed").to_bare();
        let session = payload
            .attr("sessionid")
            .map(str::to_owned)
            .unwrap_or_else(|| self.new_id());
        let action = payload.attr("action").unwrap_or("execute");
        if action == "cancel" {
            let c = Element::builder("command", COMMANDS_NS)
                .attr(nc("node"), node.as_str())
                .attr(nc("sessionid"), session.as_str())
                .attr(nc("status"), "canceled")
                .build();
            return Answer::Now(vec![translate::reply(iq, Ok(Some(c))).into()]);
        }
        let submitted = payload
            .get_child("x", DATA_NS)
            .filter(|x| x.attr("type") == Some("submit"))
            .map(form_values);
        let values = match submitted {
            Some(Ok(values)) => values,
            Some(Err(why)) => return now_err(bad(why)),
            None => {
                // The first step: the form (or, for reports, the answer).
                return Answer::Now(vec![self
                    .command_first_step(iq, &node, &session, &from)
                    .into()]);
            }
        };
        self.command_submitted(iq, &node, &session, &from, &values)
    }

    pub(super) fn executing(&self, node: &str, session: &str, x: Element) -> Element {
        Element::builder("command", COMMANDS_NS)
            .attr(nc("node"), node)
            .attr(nc("sessionid"), session)
            .attr(nc("status"), "executing")
            .append(
                Element::builder("actions", COMMANDS_NS)
                    .attr(nc("execute"), "complete")
                    .append(Element::builder("complete", COMMANDS_NS)),
            )
            .append(x)
            .build()
    }

    pub(super) fn command_first_step(
        &self,
        iq: &Iq,
        node: &str,
        session: &str,
        from: &BareJid,
    ) -> Iq {
        let hidden = || Field::new("FORM_TYPE", FieldType::Hidden, "").value(COMMANDS_NS);
        let accounts: Vec<(String, String)> = self
            .accounts
            .names()
            .into_iter()
            .map(|a| (a.clone(), a))
            .collect();
        let x = match node {
            "new-chat" => form(
                DataFormType::Form,
                "New chat by number",
                "Type the number as you would dial it; the contact is added to your contacts.",
                vec![
                    hidden(),
                    Field::new("number", FieldType::TextSingle, "Phone number").required(),
                ],
            ),
            "new-group" => form(
                DataFormType::Form,
                "New group text",
                "Type the numbers of the others in the group, separated by commas, as you would dial them; you are invited to the group's room.",
                vec![
                    hidden(),
                    Field::new("numbers", FieldType::TextSingle, "Phone numbers").required(),
                ],
            ),
            "settings" => {
                let Some(u) = self.users.get(from) else {
                    return translate::reply(iq, Err(bad("You are not a user.")));
                };
                // Clients show a fixed field's value and not its label
                // (Gajim, Profanity), so the value says what it is (#28).
                form(
                    DataFormType::Form,
                    "My settings",
                    "",
                    vec![
                        hidden(),
                        Field::new("number", FieldType::Fixed, "Your number")
                            .value(format!("Your number: {}", u.number)),
                        Field::new("account", FieldType::Fixed, "Carrier account")
                            .value(format!("Carrier account: {}", u.account)),
                        Field::new("caller_id", FieldType::Boolean, "Show contacts' names (caller ID)")
                            .value(if u.caller_id { "1" } else { "0" }),
                    ],
                )
            }
            "unregister" => form(
                DataFormType::Form,
                "Unregister",
                "Your number goes back to the operator; texts to it no longer reach you.",
                vec![
                    hidden(),
                    Field::new("confirm", FieldType::Boolean, "Unregister me")
                        .value("0")
                        .required(),
                ],
            ),
            "add-user" => form(
                DataFormType::Form,
                "Add user",
                "",
                vec![
                    hidden(),
                    Field::new("jid", FieldType::JidSingle, "User's JID").required(),
                    Field::new("number", FieldType::TextSingle, "Their phone number (E.164)").required(),
                    Field::new("account", FieldType::ListSingle, "Carrier account")
                        .options(accounts)
                        .required(),
                ],
            ),
            "remove-user" => {
                let stored: Vec<(String, String)> = self
                    .users
                    .users()
                    .into_iter()
                    .chain(self.users.waiting())
                    .filter(|u| u.origin != Origin::Config)
                    .map(|u| (format!("{} ({})", u.jid, u.number), u.jid.to_string()))
                    .collect();
                if stored.is_empty() {
                    return translate::reply(iq, Ok(Some(completed(node, session, "info", "No user can be removed here: users of the config are removed in the config.", None))));
                }
                form(
                    DataFormType::Form,
                    "Remove user",
                    "Users of the config are removed in the config.",
                    vec![
                        hidden(),
                        Field::new("jid", FieldType::ListSingle, "User")
                            .options(stored)
                            .required(),
                    ],
                )
            }
            "pending" => {
                let waiting: Vec<(String, String)> = self
                    .users
                    .waiting()
                    .into_iter()
                    .map(|u| {
                        (
                            format!("{} ({}, {})", u.jid, u.number, u.account),
                            u.jid.to_string(),
                        )
                    })
                    .collect();
                if waiting.is_empty() {
                    return translate::reply(
                        iq,
                        Ok(Some(completed(
                            node,
                            session,
                            "info",
                            "No registration waits.",
                            None,
                        ))),
                    );
                }
                form(
                    DataFormType::Form,
                    "Pending registrations",
                    "",
                    vec![
                        hidden(),
                        Field::new("jid", FieldType::ListSingle, "Registration")
                            .options(waiting)
                            .required(),
                        Field::new("decision", FieldType::ListSingle, "Decision")
                            .options(vec![
                                ("Approve".into(), "approve".into()),
                                ("Refuse".into(), "refuse".into()),
                            ])
                            .value("approve")
                            .required(),
                    ],
                )
            }
            "list-users" => {
                let lines: Vec<String> = self
                    .users
                    .users()
                    .into_iter()
                    .chain(self.users.waiting())
                    .map(|u| {
                        let origin = match u.origin {
                            Origin::Config => "config",
                            Origin::Stored { approved: true } => "registered",
                            _ => "waiting for approval",
                        };
                        format!("{} {} {} ({origin})", u.jid, u.number, u.account)
                    })
                    .collect();
                let mut f = Field::new("users", FieldType::TextMulti, "Users");
                for l in lines {
                    f = f.value(l);
                }
                let x = form(DataFormType::Result_, "Users", "", vec![hidden(), f]);
                return translate::reply(
                    iq,
                    Ok(Some(completed(
                        node,
                        session,
                        "info",
                        "The users of this gateway.",
                        Some(x),
                    ))),
                );
            }
            "status" => {
                let s = self
                    .status
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                let mut errors = Field::new("carrier_errors", FieldType::TextMulti, "Last carrier errors");
                let recent = self.activity.recent_errors();
                if recent.is_empty() {
                    errors = errors.value("none since the start");
                }
                for e in recent {
                    errors = errors.value(e);
                }
                let roster = self
                    .people()
                    .roster_access
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ");
                let x = form(
                    DataFormType::Result_,
                    "Gateway status",
                    "",
                    vec![
                        hidden(),
                        Field::new("link", FieldType::TextSingle, "XMPP link").value(s.link.clone()),
                        Field::new(
                            "unacked",
                            FieldType::TextSingle,
                            "Stanzas written, not yet acknowledged",
                        )
                        .value(s.unacked.to_string()),
                        Field::new("users", FieldType::TextSingle, "Users")
                            .value(self.users.users().len().to_string()),
                        Field::new("waiting", FieldType::TextSingle, "Registrations waiting")
                            .value(self.users.waiting().len().to_string()),
                        Field::new("roster", FieldType::TextSingle, "Servers granting roster access")
                            .value(if roster.is_empty() {
                                "none".into()
                            } else {
                                roster
                            }),
                        errors,
                    ],
                );
                return translate::reply(
                    iq,
                    Ok(Some(completed(node, session, "info", "", Some(x)))),
                );
            }
            _ => return translate::reply(iq, Err(bad("Unknown command."))),
        };
        translate::reply(iq, Ok(Some(self.executing(node, session, x))))
    }

    /// A user starts a chat with the number they typed: the contact's
    /// address, what to tell them, and the roster push (or subscription
    /// request) that puts the contact in their roster; or why not.
    pub(crate) fn start_chat(
        &self,
        from: &BareJid,
        typed: &str,
    ) -> Result<(String, String, Vec<Stanza>), String> {
        let n = self.phone.parse(typed).map_err(|e| format!("{e}."))?;
        let contact = format!("{n}@{}", self.domain);
        let user = self.users.get(from).ok_or("You are not a user.")?;
        let name = self.name_for(&n, &user.number, from);
        let mut out = vec![];
        let text = match self.roster_item(&contact, from.as_str(), name.as_deref()) {
            Some(stanzas) => {
                out.extend(stanzas);
                format!("{contact} is in your contacts now: write to it to text {n}.")
            }
            None => {
                // No roster access: the contact asks to be added, and the
                // client offers to.
                out.extend(self.ask_to_be_added(&contact, from.as_str(), name.as_deref()));
                format!("{contact} asks to be added to your contacts: accept it, and write to it to text {n}.")
            }
        };
        Ok((contact, text, out))
    }

    pub(super) fn command_submitted(
        &self,
        iq: &Iq,
        node: &str,
        session: &str,
        from: &BareJid,
        values: &HashMap<String, Vec<String>>,
    ) -> Answer {
        let refuse = |t: String| Answer::Now(vec![translate::reply(iq, Err(bad(t))).into()]);
        let cmd = Some((node.to_owned(), session.to_owned()));
        let parse_jid = |var: &str| -> Result<BareJid, String> {
            let v = first(values, var).ok_or_else(|| format!("Field '{var}' is required."))?;
            sms_gateway_core::config::normalize_bare_jid(v)
                .and_then(|t| BareJid::new(&t).ok())
                .ok_or_else(|| {
                    format!("Field '{var}': {v:?} is not a bare JID such as alice@example.com.")
                })
        };
        match node {
            "new-chat" => {
                let Some(typed) = first(values, "number") else {
                    return refuse("Field 'number' is required.".into());
                };
                let (contact, text, mut out) = match self.start_chat(from, typed) {
                    Ok(started) => started,
                    Err(e) => return refuse(format!("Field 'number': {e}")),
                };
                let x = form(
                    DataFormType::Result_,
                    "New chat",
                    "",
                    vec![Field::new("jid", FieldType::JidSingle, "Write to").value(contact.clone())],
                );
                out.insert(
                    0,
                    translate::reply(
                        iq,
                        Ok(Some(completed(node, session, "info", &text, Some(x)))),
                    )
                    .into(),
                );
                Answer::Now(out)
            }
            "new-group" => {
                let Some(typed) = first(values, "numbers") else {
                    return refuse("Field 'numbers' is required.".into());
                };
                let user = self.users.get(from).expect("a user ran it");
                let numbers =
                    match sms_gateway_core::group::participants(typed, &self.phone, &user.number) {
                        Ok(n) => n,
                        Err(e) => return refuse(format!("Field 'numbers': {e}")),
                    };
                let room = format!(
                    "{}@{}",
                    sms_gateway_core::group::room_local(&numbers),
                    self.domain
                );
                let x = form(
                    DataFormType::Result_,
                    "New group text",
                    "",
                    vec![Field::new("jid", FieldType::JidSingle, "Group chat").value(room.clone())],
                );
                let text = format!("Join {room} (you are invited): what you write there goes to all of them as one group text.");
                Answer::Now(vec![
                    translate::reply(
                        iq,
                        Ok(Some(completed(node, session, "info", &text, Some(x)))),
                    )
                    .into(),
                    self.invite_to(&room, from),
                ])
            }
            "settings" => {
                let on = match first(values, "caller_id") {
                    Some("1" | "true") => true,
                    Some("0" | "false") | None => false,
                    Some(v) => {
                        return refuse(format!("Field 'caller_id': {v:?} is not a boolean."))
                    }
                };
                let done = format!("Caller ID is {}.", if on { "on" } else { "off" });
                self.ask(
                    iq,
                    cmd,
                    UserChange::CallerId {
                        jid: from.clone(),
                        on,
                    },
                    done,
                    vec![],
                )
            }
            "unregister" => match first(values, "confirm") {
                Some("1" | "true") => self.ask(
                    iq,
                    cmd,
                    UserChange::Remove { jid: from.clone() },
                    "You are unregistered.".into(),
                    self.farewell(from),
                ),
                _ => refuse("Field 'confirm': check it to unregister.".into()),
            },
            "add-user" => {
                let jid = match parse_jid("jid") {
                    Ok(j) => j,
                    Err(e) => return refuse(e),
                };
                let Some(typed) = first(values, "number") else {
                    return refuse("Field 'number' is required.".into());
                };
                let number = match PhoneNumber::parse(typed, None) {
                    Ok(n) => n,
                    Err(e) => return refuse(format!("Field 'number': {e}.")),
                };
                let Some(account) = first(values, "account").filter(|a| self.accounts.contains(a))
                else {
                    return refuse(format!(
                        "Field 'account': pick one of {}.",
                        self.accounts.names().join(", ")
                    ));
                };
                let done = format!("{jid} is a user, with number {number} on {account}.");
                self.ask(
                    iq,
                    cmd,
                    UserChange::Put {
                        jid,
                        user: StoredUser {
                            number,
                            account: account.to_owned(),
                            approved: true,
                        },
                    },
                    done,
                    vec![],
                )
            }
            "remove-user" => match parse_jid("jid") {
                Ok(jid) => {
                    let done = format!("{jid} is no longer a user.");
                    self.ask(iq, cmd, UserChange::Remove { jid }, done, vec![])
                }
                Err(e) => refuse(e),
            },
            "pending" => {
                let jid = match parse_jid("jid") {
                    Ok(j) => j,
                    Err(e) => return refuse(e),
                };
                if self.users.get_any(&jid).is_none_or(|u| u.approved()) {
                    return refuse(format!("Field 'jid': {jid} has no registration waiting."));
                }
                let tell = |text: String| vec![self.notice(&jid, &text)];
                match first(values, "decision") {
                    Some("approve") => self.ask(
                        iq,
                        cmd,
                        UserChange::Approve { jid: jid.clone() },
                        format!("{jid} is approved."),
                        tell(format!(
                            "Your registration with {} is approved: you can text now.",
                            self.domain
                        )),
                    ),
                    Some("refuse") => self.ask(
                        iq,
                        cmd,
                        UserChange::Remove { jid: jid.clone() },
                        format!("{jid}'s registration is refused."),
                        tell(format!(
                            "Your registration with {} was refused by an admin.",
                            self.domain
                        )),
                    ),
                    _ => refuse("Field 'decision': approve or refuse.".into()),
                }
            }
            // Reports have no second step.
            _ => Answer::Now(vec![self
                .command_first_step(iq, node, session, from)
                .into()]),
        }
    }
}

/// A completed command, with a note and maybe a result form.
pub(super) fn completed(
    node: &str,
    session: &str,
    kind: &str,
    text: &str,
    x: Option<Element>,
) -> Element {
    let mut c = Element::builder("command", COMMANDS_NS)
        .attr(nc("node"), node)
        .attr(nc("sessionid"), session)
        .attr(nc("status"), "completed");
    if !text.is_empty() {
        c = c.append(
            Element::builder("note", COMMANDS_NS)
                .attr(nc("type"), kind)
                .append(translate::xml_safe(text).into_owned()),
        );
    }
    if let Some(x) = x {
        c = c.append(x);
    }
    c.build()
}
