//! What the link holds for the Gateway until the server has taken it, and
//! how it is written: in batches, each followed by a ping to our own
//! domain that the server routes back once it has taken the batch.

use super::*;

/// What the Gateway asked for, with what makes its stanza: kept until the
/// server has taken it, so that writing it again (on a new link) writes
/// the same stanza, with the same id.
pub(crate) struct Built {
    pub(crate) out: OutgoingStanza,
    /// The stanza's id (an error's is the user's chat's, so unused).
    pub(crate) id: String,
    /// The contact's name, for the first chat from it.
    pub(crate) nick: Option<String>,
    /// The stanza itself, when it was made as the Gateway's request was
    /// taken (roster items, answers to registrations and commands).
    pub(crate) ready: Option<Stanza>,
    /// For a phone's reaction text: the id of the message it is on, and
    /// the emoji (XEP-0444, #31).
    pub(crate) reaction: Option<(String, String)>,
}

impl Built {
    /// The stored inbound text this stanza completes, if any.
    pub(crate) fn inbound_id(&self) -> Option<u64> {
        match &self.out {
            OutgoingStanza::Chat { inbound_id, .. } | OutgoingStanza::Group { inbound_id, .. } => {
                *inbound_id
            }
            _ => None,
        }
    }

    /// The stanza, the same every time.
    pub(crate) fn stanza(&self) -> Result<Stanza, Error> {
        if let Some(ready) = &self.ready {
            // `Stanza` is not `Clone`; its three kinds are.
            return Ok(match ready {
                Stanza::Iq(iq) => Stanza::Iq(iq.clone()),
                Stanza::Message(m) => Stanza::Message(m.clone()),
                Stanza::Presence(p) => Stanza::Presence(p.clone()),
            });
        }
        let mut stanza = outgoing_to_stanza(&self.out, || self.id.clone())?;
        if let (OutgoingStanza::Chat { .. }, Stanza::Message(m)) = (&self.out, &mut stanza) {
            if let Some(name) = &self.nick {
                m.payloads.push(translate::nick(name));
            }
            // A chat written again after a lost link is the same stanza:
            // XEP-0359 lets a client that de-duplicates see it.
            m.payloads.push(
                OriginId {
                    id: self.id.clone(),
                }
                .into(),
            );
            if let Some((on, emoji)) = &self.reaction {
                m.payloads.extend(crate::reactions::payloads(on, emoji));
            }
        }
        Ok(stanza)
    }
}

/// Stanzas written with one flush, and the id of the ping that followed
/// them (`None`: a ping was out already; a later one covers this batch).
pub(crate) struct Batch {
    pub(crate) ping_id: Option<String>,
    pub(crate) stanzas: Vec<Built>,
}

/// What the link holds for the Gateway across reconnects.
#[derive(Default)]
pub(crate) struct Outbox {
    /// Built, not yet written (or written on a link that failed mid-write).
    pub(crate) unsent: Vec<Built>,
    /// Written, waiting for the server to route the batch's ping back.
    pub(crate) unacked: VecDeque<Batch>,
    /// When the ping now out was written.
    pub(crate) ping_written: Option<tokio::time::Instant>,
    /// What the link read for the Gateway and the Gateway has not taken.
    pub(crate) inbox: crate::inbox::Inbox,
    /// Since when events have waited for the Gateway with none taken.
    pub(crate) inbox_since: Option<tokio::time::Instant>,
    /// Whether that wait has been reported as a stall.
    pub(crate) stalled: bool,
    /// Since when the link has not been read (the Gateway is behind).
    pub(crate) paused_at: Option<tokio::time::Instant>,
    /// The channel to the Gateway, for an event that finds nothing waiting
    /// ahead of it (set when the process runs).
    pub(crate) to_gateway: Option<tokio::sync::mpsc::Sender<sms_gateway_core::XmppEvent>>,
}

impl Outbox {
    /// Whether a ping is out on this link. At most one is: batches written
    /// meanwhile wait for the next, so under load many batches share one
    /// round trip (and the server routes one ping, not one per batch).
    pub(crate) fn ping_out(&self) -> bool {
        self.unacked.iter().any(|b| b.ping_id.is_some())
    }

    /// Whether batches wait with no ping out to cover them.
    pub(crate) fn ping_due(&self) -> bool {
        !self.unacked.is_empty() && !self.ping_out()
    }

    /// Stanzas written and not acknowledged.
    pub(crate) fn unacked_stanzas(&self) -> usize {
        self.unacked.iter().map(|b| b.stanzas.len()).sum()
    }
}

impl XmppProcess {
    /// Queues `out` in the outbox, with its id and (for the first chat
    /// from a contact) the contact's name.
    pub(crate) fn build(&self, out: OutgoingStanza, outbox: &mut Outbox) {
        let ready: Option<Vec<Stanza>> = match &out {
            OutgoingStanza::Presence {
                from,
                to,
                available,
            } => Some(
                self.presence(from, to, *available)
                    .into_iter()
                    .map(Stanza::from)
                    .collect(),
            ),
            OutgoingStanza::RosterItem {
                contact,
                user,
                name,
            } => Some(match self.roster_item(contact, user, name.as_deref()) {
                Some(stanzas) => stanzas,
                // Without roster access, only the gateway itself asks to
                // be added (phone contacts are added by the user).
                None if *contact == self.domain => self
                    .ask_to_be_added(contact, user, name.as_deref())
                    .into_iter()
                    .collect(),
                None => vec![],
            }),
            OutgoingStanza::Done { ticket, result } => Some(self.done(*ticket, result.clone())),
            OutgoingStanza::RoomJoined { .. } | OutgoingStanza::Group { .. } => {
                self.room_stanzas(&out)
            }
            _ => None,
        };
        if let Some(stanzas) = ready {
            // Only the last stanza completes a stored inbound text.
            let mut rest = out.clone();
            if let OutgoingStanza::Group { inbound_id, .. } = &mut rest {
                *inbound_id = None;
            }
            let last = stanzas.len().saturating_sub(1);
            for (i, s) in stanzas.into_iter().enumerate() {
                outbox.unsent.push(Built {
                    out: if i == last { out.clone() } else { rest.clone() },
                    id: String::new(),
                    nick: None,
                    ready: Some(s),
                    reaction: None,
                });
            }
            return;
        }
        let nick = match &out {
            // The contact's name goes with the first chat from it (XEP-0172).
            OutgoingStanza::Chat {
                from,
                to,
                nick: Some(name),
                ..
            } => self.first_nick(from, to, name),
            _ => None,
        };
        // A stored inbound text's chat has the same id at every delivery
        // (#26); anything else gets a new one.
        let id = match &out {
            OutgoingStanza::Chat {
                stable_id: Some(id),
                ..
            } => ["sms-", &muc::line_id(id)].concat(),
            _ => self.new_id(),
        };
        let reaction = match &out {
            OutgoingStanza::Chat {
                from,
                to,
                body,
                media_url: None,
                ..
            } => self.text_seen(to, from, &id, body),
            _ => None,
        };
        outbox.unsent.push(Built {
            out,
            id,
            nick,
            ready: None,
            reaction,
        });
    }

    pub(crate) async fn ping_self(&self, link: &mut Link) -> Result<(), Error> {
        let Some(me) = jid(&self.domain) else {
            return Ok(());
        };
        let ping = Iq::from_get(self.new_id(), Ping)
            .with_to(me.clone())
            .with_from(me);
        self.send(link, ping).await
    }

    /// Writes what is unsent in one go, followed by a ping to our own
    /// domain, with one flush (so usually one system call); the batch then
    /// waits in `outbox.unacked` for the ping to come back. On an I/O
    /// failure it stays unsent, for the next link.
    ///
    /// A stanza the XML writer refuses is dropped and logged (tokio-xmpp
    /// rewinds its buffer, so the stream is intact): it would be refused
    /// again on every link, and a link replaced for it would loop for ever
    /// (invariant 6). Everything reaching here has been through
    /// [`translate::xml_safe`], so this is a bug's safety net.
    pub(crate) async fn write_batch(
        &self,
        link: &mut Link,
        outbox: &mut Outbox,
    ) -> Result<(), Error> {
        let mut refused = vec![];
        for (i, built) in outbox.unsent.iter().enumerate() {
            let stanza = match built.stanza() {
                Ok(s) => s,
                Err(e) => {
                    // Built from our own routing tables: a bug, not a link problem.
                    tracing::error!(error = %e, what = kind(&built.out), "dropping a stanza that cannot be built");
                    refused.push(i);
                    continue;
                }
            };
            match link::feed(link, stanza).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                    tracing::error!(error = %e, what = kind(&built.out), "the XML writer refused a stanza; dropped");
                    refused.push(i);
                }
                Err(e) => return Err(Error::Write(e.to_string())),
            }
        }
        let ping_id = if outbox.ping_out() {
            None
        } else {
            let id = self.new_id();
            self.feed_ping(link, &id).await?;
            outbox.ping_written = Some(tokio::time::Instant::now());
            Some(id)
        };
        link::flush(link)
            .await
            .map_err(|e| Error::Write(e.to_string()))?;
        let mut stanzas = std::mem::take(&mut outbox.unsent);
        // Dropped for good: a stored text they complete is done with, or
        // it would fail again at every start.
        for i in refused.into_iter().rev() {
            if let Some(id) = stanzas.remove(i).inbound_id() {
                outbox.inbox.control(XmppEvent::Delivered(id));
            }
        }
        outbox.unacked.push_back(Batch { ping_id, stanzas });
        Ok(())
    }

    /// Queues a ping to our own domain, with id `id`.
    pub(crate) async fn feed_ping(&self, link: &mut Link, id: &str) -> Result<(), Error> {
        let Some(me) = jid(&self.domain) else {
            return Ok(());
        };
        let ping = Iq::from_get(id.to_owned(), Ping)
            .with_to(me.clone())
            .with_from(me);
        link::feed(link, ping.into())
            .await
            .map_err(|e| Error::Write(e.to_string()))
    }

    /// Writes a ping for the batches written while the last one was out.
    pub(crate) async fn write_ping(
        &self,
        link: &mut Link,
        outbox: &mut Outbox,
    ) -> Result<(), Error> {
        let id = self.new_id();
        self.feed_ping(link, &id).await?;
        link::flush(link)
            .await
            .map_err(|e| Error::Write(e.to_string()))?;
        if let Some(last) = outbox.unacked.back_mut() {
            last.ping_id = Some(id);
        }
        outbox.ping_written = Some(tokio::time::Instant::now());
        Ok(())
    }

    /// The server routed back the ping written after a batch: it has taken
    /// that batch and every one before it. Returns whether `id` was one.
    pub(crate) fn acknowledged(&self, id: &str, outbox: &mut Outbox) -> bool {
        let Some(n) = outbox
            .unacked
            .iter()
            .position(|b| b.ping_id.as_deref() == Some(id))
        else {
            return false;
        };
        outbox.ping_written = None;
        let mut delivered = vec![];
        for batch in outbox.unacked.drain(..=n) {
            delivered.extend(batch.stanzas.iter().filter_map(Built::inbound_id));
        }
        // Handed to the Gateway ahead of everything else, never refused
        // (#26): there are never more than stanzas written.
        for id in delivered {
            outbox.inbox.control(XmppEvent::Delivered(id));
        }
        if !outbox.inbox.is_empty() && outbox.inbox_since.is_none() {
            outbox.inbox_since = Some(tokio::time::Instant::now());
        }
        true
    }

    /// At a clean stop: waits (at most [`ACK_AT_STOP`]) for the server to
    /// acknowledge what was written. What it does not acknowledge stays
    /// pending in the store and is delivered again at the next start.
    pub(crate) async fn await_acks(&self, link: &mut Link, outbox: &mut Outbox) {
        if outbox.ping_due() && self.write_ping(link, outbox).await.is_err() {
            return;
        }
        let wait = async {
            while !outbox.unacked.is_empty() {
                match link::read(link).await {
                    Incoming::Stanza(stanza) => {
                        if let Stanza::Iq(Iq::Get {
                            from: Some(from),
                            id,
                            ..
                        }) = *stanza
                        {
                            if from.to_string() == self.domain {
                                self.acknowledged(&id, outbox);
                            }
                        }
                    }
                    Incoming::Closed(_) => return,
                    _ => {}
                }
            }
        };
        let _ = tokio::time::timeout(ACK_AT_STOP, wait).await;
        if !outbox.unacked.is_empty() {
            let n: usize = outbox.unacked.iter().map(|b| b.stanzas.len()).sum();
            tracing::warn!(stanzas = n, "stopping with stanzas the server has not acknowledged; stored texts among them are delivered again at the next start");
        }
    }
}
