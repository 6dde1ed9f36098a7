//! # sms-xmpp
//!
//! The XMPP process of sms-over-xmpp: one XEP-0114 link to the XMPP server's
//! component port, on tokio-xmpp. It logs in, keeps an idle link alive,
//! reconnects with capped backoff when the link drops, answers protocol
//! duties itself (ping, disco, unknown IQs), hands chats to the Gateway and
//! writes what the Gateway sends back.
//!
//! Keep-alive: tokio-xmpp ends a component stream that has been silent for
//! its read timeout. Every `keepalive_secs` we send an XEP-0199 ping to our
//! own domain; the server routes it back to us, so an idle but healthy link
//! always has traffic, and a link that stays silent for three intervals is
//! dead and is replaced.

mod translate;

pub use translate::{answer_iq, message_to_event, outgoing_to_stanza, FEATURES};

use async_trait::async_trait;
use futures_util::StreamExt;
use sms_gateway_core::component::backoff;
use sms_gateway_core::config::XmppConfig;
use sms_gateway_core::{
    CancellationToken, OutgoingStanza, ProcessError, XmppChannels, XmppEvent, XmppLink,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_xmpp::connect::{DnsConfig, TcpServerConnector};
use tokio_xmpp::jid::Jid;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::ping::Ping;
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Component, Stanza};

/// How long a login may take before we give up and retry.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait for the server to close its side after we closed ours.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

type Link = Component<TcpServerConnector>;

/// The XMPP process. One value serves every incarnation the supervisor starts.
pub struct XmppProcess {
    server: String,
    domain: String,
    secret: sms_gateway_core::Secret,
    keepalive: Duration,
    next_id: AtomicU64,
}

enum SessionEnd {
    Shutdown,
    Lost(String),
}

impl XmppProcess {
    /// A process for the `[xmpp]` section of the config.
    pub fn new(config: &XmppConfig) -> Self {
        XmppProcess {
            server: config.server.clone(),
            domain: config.domain.clone(),
            secret: config.secret.clone(),
            keepalive: Duration::from_secs(config.keepalive_secs),
            next_id: AtomicU64::new(1),
        }
    }

    fn new_id(&self) -> String {
        format!("sox-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    async fn connect(&self) -> Result<Link, String> {
        let timeouts = Timeouts {
            // Three keep-alive intervals of silence and the link is dead.
            read_timeout: self.keepalive * 3,
            response_timeout: self.keepalive,
        };
        let login = Component::new_plaintext(
            &self.domain,
            self.secret.expose(),
            DnsConfig::addr(&self.server),
            timeouts,
        );
        match tokio::time::timeout(LOGIN_TIMEOUT, login).await {
            Ok(Ok(link)) => Ok(link),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {LOGIN_TIMEOUT:?}")),
        }
    }

    async fn session(
        &self,
        link: &mut Link,
        from_gateway: &mut mpsc::Receiver<OutgoingStanza>,
        to_gateway: &mpsc::Sender<XmppEvent>,
        shutdown: &CancellationToken,
        unsent: &mut Option<OutgoingStanza>,
    ) -> SessionEnd {
        let mut keepalive =
            tokio::time::interval_at(tokio::time::Instant::now() + self.keepalive, self.keepalive);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // A stanza whose write failed on the last link goes first.
            if let Some(out) = unsent.take() {
                if let Err(e) = self.write(link, &out).await {
                    *unsent = Some(out);
                    return SessionEnd::Lost(e);
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return SessionEnd::Shutdown,
                stanza = link.next() => match stanza {
                    Some(stanza) => {
                        if let Err(e) = self.on_stanza(link, stanza, to_gateway).await {
                            return SessionEnd::Lost(e);
                        }
                    }
                    None => return SessionEnd::Lost("the server closed the stream, or it went silent".into()),
                },
                out = from_gateway.recv() => match out {
                    Some(out) => {
                        if let Err(e) = self.write(link, &out).await {
                            *unsent = Some(out);
                            return SessionEnd::Lost(e);
                        }
                    }
                    // The component owns the sender: closed means it is going away.
                    None => return SessionEnd::Shutdown,
                },
                _ = keepalive.tick() => {
                    let to = Jid::new(&self.domain).map_err(|e| e.to_string());
                    let ping = to.map(|to| Iq::from_get(self.new_id(), Ping).with_to(to.clone()).with_from(to));
                    match ping {
                        Ok(ping) => if let Err(e) = link.send_stanza(ping.into()).await {
                            return SessionEnd::Lost(e.to_string());
                        },
                        Err(e) => tracing::error!(error = %e, "cannot build keep-alive ping"),
                    }
                }
            }
        }
    }

    async fn write(&self, link: &mut Link, out: &OutgoingStanza) -> Result<(), String> {
        let stanza = match outgoing_to_stanza(out, || self.new_id()) {
            Ok(s) => s,
            Err(e) => {
                // Built from our own routing tables: a bug, not a link problem.
                tracing::error!(error = %e, "dropping a stanza that cannot be built");
                return Ok(());
            }
        };
        link.send_stanza(stanza).await.map_err(|e| e.to_string())
    }

    async fn on_stanza(
        &self,
        link: &mut Link,
        stanza: Stanza,
        to_gateway: &mpsc::Sender<XmppEvent>,
    ) -> Result<(), String> {
        match stanza {
            Stanza::Message(m) => {
                if let Some(ev) = message_to_event(&m) {
                    // Waits when the Gateway is busy: back-pressure on the link.
                    if to_gateway.send(ev).await.is_err() {
                        return Err("the gateway channel is closed".into());
                    }
                } else if m.type_ == tokio_xmpp::parsers::message::MessageType::Error {
                    tracing::warn!(from = ?m.from.as_ref().map(|j| j.to_string()), "a message we sent bounced");
                }
                Ok(())
            }
            Stanza::Iq(iq) => {
                if let Some(answer) = answer_iq(&iq, &self.domain) {
                    link.send_stanza(answer.into())
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            }
            // Presence is not handled yet: nothing to answer.
            Stanza::Presence(_) => Ok(()),
        }
    }
}

#[async_trait]
impl XmppLink for XmppProcess {
    async fn run(
        &self,
        channels: XmppChannels,
        shutdown: CancellationToken,
    ) -> Result<(), ProcessError> {
        let mut from_gateway = channels.from_gateway.lock().await;
        let mut unsent = None;
        let mut failures = 0u32;
        loop {
            let attempt = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                r = self.connect() => r,
            };
            let mut link = match attempt {
                Ok(link) => {
                    tracing::info!(server = %self.server, domain = %self.domain, "connected to the XMPP server");
                    failures = 0;
                    link
                }
                Err(e) => {
                    let delay = backoff(failures);
                    failures = failures.saturating_add(1);
                    tracing::warn!(server = %self.server, error = %e, retry_in = ?delay, "cannot log in to the XMPP server");
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            match self
                .session(
                    &mut link,
                    &mut from_gateway,
                    &channels.to_gateway,
                    &shutdown,
                    &mut unsent,
                )
                .await
            {
                SessionEnd::Shutdown => {
                    // Send our </stream:stream>, then read until the server
                    // closes its side, so it sees an orderly close.
                    if let Err(e) = link.send_end().await {
                        tracing::debug!(error = %e, "closing the XMPP stream");
                    }
                    let drain = async { while link.next().await.is_some() {} };
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, drain).await;
                    tracing::info!("XMPP stream closed");
                    return Ok(());
                }
                SessionEnd::Lost(reason) => {
                    tracing::warn!(%reason, "lost the XMPP link; reconnecting");
                }
            }
        }
    }
}
