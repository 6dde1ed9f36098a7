//! The Gateway process: its loop. Events from both sides are handled in
//! batches, one store commit per batch, and nothing leaves (texts, stanzas,
//! webhook answers) before the commit. A panic on one event is caught and
//! answered; the rest of the batch goes on.

use super::{Action, Gateway};
use crate::message::{ErrorCondition, OutgoingStanza, PstnCommand, PstnEvent, XmppEvent};
/// What the component lends a process (the runtime's `Lent`).
type Lent<T> = std::sync::Arc<tokio::sync::Mutex<T>>;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long the Gateway may wait to hand a stanza to the XMPP process
/// before that channel counts as stalled (logged, counted, `/readyz` fails).
pub(crate) const STALL_AFTER: Duration = Duration::from_secs(10);

/// How often old entries are expired from the store.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(3600);

/// The Gateway's channels, lent by whoever supervises it (the runtime's
/// `Component`): events in from both processes, actions out to them.
#[derive(Clone)]
pub struct GatewayIo {
    /// Events from the XMPP process.
    pub xmpp_events: Lent<mpsc::Receiver<XmppEvent>>,
    /// Events from the PSTN process.
    pub pstn_events: Lent<mpsc::Receiver<PstnEvent>>,
    /// Stanzas for the XMPP process to send.
    pub to_xmpp: mpsc::Sender<OutgoingStanza>,
    /// Commands for the PSTN process.
    pub to_pstn: mpsc::Sender<PstnCommand>,
    /// Where a stalled channel is counted.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl GatewayIo {
    /// Waits for room towards the XMPP process; past [`STALL_AFTER`] the
    /// channel counts as stalled until it moves.
    async fn wait_for_xmpp(
        &self,
    ) -> Result<mpsc::Permit<'_, OutgoingStanza>, mpsc::error::SendError<()>> {
        if let Ok(p) = tokio::time::timeout(STALL_AFTER, self.to_xmpp.reserve()).await {
            return p;
        }
        tracing::warn!(after = ?STALL_AFTER, "the XMPP process has taken nothing from the Gateway for a while");
        self.metrics.stall("to_xmpp", true);
        let p = self.to_xmpp.reserve().await;
        self.metrics.stall("to_xmpp", false);
        tracing::info!("the XMPP process takes from the Gateway again");
        p
    }

    /// Hands `action` to the process that carries it out. False only when
    /// the whole component is going away (it owns the receivers).
    pub async fn dispatch(&self, action: Action) -> bool {
        match action {
            Action::Xmpp(st) => {
                // The XMPP process never waits for the Gateway (it reads its
                // link whatever the Gateway does, #26), so this wait ends
                // when the server takes what was written, or when the link
                // is given up as unacknowledged and made again.
                // Room at once, as almost always: no timer on the hot path.
                let permit = match self.to_xmpp.try_reserve() {
                    Ok(permit) => Ok(permit),
                    Err(mpsc::error::TrySendError::Closed(())) => return false,
                    Err(mpsc::error::TrySendError::Full(())) => self.wait_for_xmpp().await,
                };
                match permit {
                    Ok(permit) => {
                        permit.send(st);
                        true
                    }
                    Err(_) => false,
                }
            }
            Action::Pstn(cmd) => self.to_pstn.send(cmd).await.is_ok(),
        }
    }
}

/// Runs `gateway` on `io` until `shutdown`: events handled in batches,
/// one store commit per batch, nothing sent before its commit; entries
/// older than `keep` expired hourly; in a cluster, the lease renewed.
pub async fn run_gateway(
    gateway: Gateway,
    io: GatewayIo,
    shutdown: CancellationToken,
    keep: crate::store::Retention,
) {
    let mut xmpp_events = io.xmpp_events.lock().await;
    let mut pstn_events = io.pstn_events.lock().await;
    let mut learned = gateway.names_learned();
    let mut expiry = tokio::time::interval_at(
        tokio::time::Instant::now() + EXPIRY_INTERVAL,
        EXPIRY_INTERVAL,
    );
    // In a cluster, the lease is renewed (and the work of instances that
    // are gone taken over) every third of it, first at once.
    let mut lease = gateway
        .member()
        .map(|m| tokio::time::interval((m.lease / 3).max(Duration::from_millis(100))));
    let wake = gateway.wake();
    // Made once, not at every turn of the loop: each of these registers a
    // waiter under a lock when made and removes it when dropped (#30).
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let mut link_back = Box::pin(io.metrics.link_back());
    loop {
        #[cfg(feature = "fault-injection")]
        crate::fault::trip(crate::fault::Process::Gateway);
        let first = tokio::select! {
            () = &mut cancelled => return,
            _ = async {
                match (lease.as_mut(), &wake) {
                    (Some(l), Some(w)) => {
                        tokio::select! {
                            _ = l.tick() => {}
                            () = w.notified() => {}
                        }
                    }
                    (Some(l), None) => {
                        l.tick().await;
                    }
                    _ => std::future::pending().await,
                }
            } => {
                // Handed on by a task of their own, as at a restart: a
                // dead instance's work can be more than the channels hold,
                // and the Gateway must go on reading their results.
                let adopted = gateway.adopt();
                if !adopted.is_empty() {
                    let io = io.clone();
                    tokio::spawn(async move {
                        for action in adopted {
                            if !io.dispatch(action).await {
                                return;
                            }
                        }
                    });
                }
                continue;
            }
            () = &mut link_back => {
                link_back.set(io.metrics.link_back());
                // Texts held while the link was down go out, oldest first,
                // from a task of their own: the Gateway goes on taking
                // webhooks (new texts wait behind the held ones, in order).
                if gateway.begin_release() {
                    let (gateway, io) = (gateway.clone(), io.clone());
                    tokio::spawn(async move {
                        loop {
                            let batch = gateway.next_released();
                            if batch.is_empty() {
                                return;
                            }
                            for action in batch {
                                if !io.dispatch(action).await {
                                    return;
                                }
                            }
                        }
                    });
                }
                continue;
            }
            _ = expiry.tick() => {
                match gateway.begin() {
                    Ok(mut tx) => {
                        gateway.expire(&mut *tx, keep);
                        if let Err(e) = tx.commit() {
                            tracing::error!(error = %e, "cannot commit the expiry of old entries");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot expire old entries"),
                }
                continue;
            }
            Some(ev) = xmpp_events.recv() => Event::Xmpp(ev),
            Some(ev) = pstn_events.recv() => Event::Pstn(ev),
            Some((contact, user)) = learned.recv() => Event::Learned(contact, user),
        };
        // A burst is handled as one batch: one store transaction for all
        // of it, and nothing leaves (texts, stanzas, webhook answers)
        // before its commit. A store that cannot start one holds the
        // event (and, behind it, the channels: back-pressure) until it can.
        let mut failures = 0;
        let mut tx = loop {
            match gateway.begin() {
                Ok(tx) => break tx,
                Err(e) => {
                    let wait = crate::time::backoff(failures);
                    failures += 1;
                    tracing::error!(error = %e, retry_in = ?wait, "cannot start a store transaction; events wait");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        };
        let mut actions = Vec::new();
        let mut acks = Vec::new();
        let mut next = Some(first);
        let mut handled = 0;
        while let Some(ev) = next.take() {
            // A bug hit by one event must not take the rest of the batch
            // (handled, not yet committed) down with it: it is caught here,
            // and that event alone is answered with an error.
            match ev {
                Event::Xmpp(ev) => {
                    let reply_to = match &ev {
                        XmppEvent::Chat(c) => Some((c.to.clone(), c.from.clone(), c.id.clone())),
                        _ => None,
                    };
                    match caught(|| gateway.on_xmpp(&mut *tx, ev)) {
                        Some(a) => actions.extend(a),
                        None => actions.extend(reply_to.map(|(from, to, id)| {
                            Action::Xmpp(OutgoingStanza::Error {
                                from,
                                to,
                                id,
                                condition: ErrorCondition::InternalServerError,
                                text: "The gateway failed on this message (a bug, logged); it was not sent.".into(),
                            })
                        })),
                    }
                }
                Event::Learned(contact, user) => {
                    if let Some(a) = caught(|| gateway.on_name_learned(&mut *tx, &contact, &user)) {
                        actions.extend(a);
                    }
                }
                // Its webhook's answer is dropped: 503, and the carrier retries.
                Event::Pstn(ev) => {
                    if let Some((a, ack)) = caught(|| gateway.on_pstn(&mut *tx, ev)) {
                        actions.extend(a);
                        acks.extend(ack);
                    }
                }
            }
            handled += 1;
            if handled < BATCH_MAX {
                next = waiting(&mut xmpp_events, &mut pstn_events, handled);
                if next.is_none() {
                    // Before committing, the other processes' tasks that
                    // are ready run once: under load they hand over more
                    // events, which then share this batch's one commit
                    // (one WAL write) instead of each starting another.
                    // Idle, nothing else is ready and this returns at once.
                    tokio::task::yield_now().await;
                    next = waiting(&mut xmpp_events, &mut pstn_events, handled);
                }
            }
        }
        let started = std::time::Instant::now();
        let committed = tx.commit();
        gateway.commit_done(started.elapsed(), committed.is_ok());
        if let Err(e) = committed {
            // Nothing of the batch is durable. The webhooks are refused
            // (their carriers retry: a text may then reach the user twice,
            // never zero times); the chats still go out, with their state
            // in memory only.
            tracing::error!(error = %e, "cannot commit a store batch");
            for ack in acks.drain(..) {
                ack.fail();
            }
        }
        for action in actions {
            if !io.dispatch(action).await {
                return;
            }
        }
        for ack in acks {
            ack.send();
        }
    }
}

/// Runs `f`, turning a panic (already reported by the panic hook) into
/// `None`.
fn caught<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        #[cfg(feature = "fault-injection")]
        crate::fault::trip(crate::fault::Process::GatewayEvent);
        f()
    }))
    .map_err(|_| {
        tracing::error!("the Gateway panicked on one event; the rest of its batch goes on")
    })
    .ok()
}

/// An event already waiting for the Gateway, taken from both sides in turn.
fn waiting(
    xmpp: &mut mpsc::Receiver<XmppEvent>,
    pstn: &mut mpsc::Receiver<PstnEvent>,
    turn: usize,
) -> Option<Event> {
    if turn % 2 == 0 {
        xmpp.try_recv()
            .ok()
            .map(Event::Xmpp)
            .or_else(|| pstn.try_recv().ok().map(Event::Pstn))
    } else {
        pstn.try_recv()
            .ok()
            .map(Event::Pstn)
            .or_else(|| xmpp.try_recv().ok().map(Event::Xmpp))
    }
}

/// An event for the Gateway, from either side (or caller ID).
enum Event {
    Xmpp(XmppEvent),
    Pstn(PstnEvent),
    /// Caller ID found a contact's name for a user's number.
    Learned(crate::phone::PhoneNumber, crate::phone::PhoneNumber),
}

/// The most events handled in one batch.
const BATCH_MAX: usize = 64;
