//! The PSTN process: the HTTP server that receives every provider account's
//! webhooks, and the sender that calls provider APIs for the Gateway.
//!
//! Webhooks arrive at `{public_url path}/{account}/{hook}`. The provider of
//! that account authenticates and parses the request; its events go to the
//! Gateway; the answer goes out only once the Gateway has taken them, so a
//! carrier whose webhook was not answered 2xx retries it (invariant 2).

use crate::config::Config;
use crate::message::{InboundRejected, PstnCommand, PstnEvent};
use crate::provider::{PstnProvider, WebhookEvent, WebhookRequest};
use crate::Lent;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::collections::{BTreeMap, HashMap};
use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

/// Largest webhook body accepted; larger ones get 413.
pub const MAX_WEBHOOK_BODY: usize = 1024 * 1024;

/// How long webhooks are answered 503 on shutdown before the server stops.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// How many API requests one account may have in flight at once.
const SENDS_PER_ACCOUNT: usize = 16;

/// The PSTN side's share of the component: the accounts, the channels, and
/// the listening socket (bound once, so it survives restarts of the process).
#[derive(Clone)]
pub struct PstnProcess {
    inner: Arc<Inner>,
}

struct Inner {
    base_path: String,
    public_base: String,
    accounts: BTreeMap<String, Arc<dyn PstnProvider>>,
    limits: HashMap<String, Arc<Semaphore>>,
    to_gateway: mpsc::Sender<PstnEvent>,
    commands: Lent<mpsc::Receiver<PstnCommand>>,
    listener: std::net::TcpListener,
    /// Set on shutdown: webhooks are answered 503 so carriers retry later.
    draining: AtomicBool,
}

impl PstnProcess {
    /// A PSTN process for `config`'s accounts, serving on `listener`.
    pub fn new(
        config: &Config,
        accounts: BTreeMap<String, Arc<dyn PstnProvider>>,
        listener: std::net::TcpListener,
        to_gateway: mpsc::Sender<PstnEvent>,
        commands: Lent<mpsc::Receiver<PstnCommand>>,
    ) -> Self {
        let limits = accounts
            .keys()
            .map(|k| (k.clone(), Arc::new(Semaphore::new(SENDS_PER_ACCOUNT))))
            .collect();
        PstnProcess {
            inner: Arc::new(Inner {
                base_path: config.http.base_path(),
                public_base: config.http.public_base().to_owned(),
                accounts,
                limits,
                to_gateway,
                commands,
                listener,
                draining: AtomicBool::new(false),
            }),
        }
    }

    /// Serves webhooks and sends texts until `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) -> std::io::Result<()> {
        use axum::serve::ListenerExt;
        // Nagle's algorithm would hold a webhook's small answer until the
        // carrier acknowledged the previous one: up to 40 ms per request
        // on a kept-alive connection.
        let listener =
            tokio::net::TcpListener::from_std(self.inner.listener.try_clone()?)?.tap_io(|tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY on a webhook connection");
                }
            });
        let app = axum::Router::new()
            .fallback(hook)
            .layer(DefaultBodyLimit::max(MAX_WEBHOOK_BODY))
            .with_state(self.inner.clone());
        // On shutdown, answer 503 for a moment (requests on open connections
        // get a clear "retry later" rather than a reset), then stop serving.
        let inner = self.inner.clone();
        let stop = shutdown.clone();
        let drained = async move {
            stop.cancelled().await;
            inner.draining.store(true, Ordering::SeqCst);
            tokio::time::sleep(DRAIN_GRACE).await;
        };
        let server = axum::serve(listener, app).with_graceful_shutdown(drained);
        let (served, ()) = tokio::join!(server.into_future(), self.send_loop(shutdown));
        served
    }

    async fn send_loop(&self, shutdown: CancellationToken) {
        let mut commands = self.inner.commands.lock().await;
        loop {
            #[cfg(feature = "fault-injection")]
            crate::fault::trip(crate::fault::Process::Pstn);
            let cmd = tokio::select! {
                () = shutdown.cancelled() => return,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => cmd,
                    None => return,
                },
            };
            match cmd {
                PstnCommand::Send {
                    account,
                    parts,
                    ticket,
                    retry_until,
                } => {
                    let inner = self.inner.clone();
                    // Each chat is sent on its own task, limited per account, so
                    // a slow carrier account does not hold up the others; the
                    // parts of one chat go out in order.
                    tokio::spawn(async move {
                        let (ids, error) = inner
                            .send_parts(ticket, &account, &parts, retry_until)
                            .await;
                        // The channel is the component's: it outlives a Gateway restart.
                        let _ = inner
                            .to_gateway
                            .send(PstnEvent::SendResult { ticket, ids, error })
                            .await;
                    });
                }
            }
        }
    }
}

impl Inner {
    /// Sends `parts` in order through `account`, retrying temporary failures
    /// until `retry_until` (Unix seconds) and stopping at the first failure
    /// that is not retried: the ids accepted, and that failure if any.
    async fn send_parts(
        &self,
        ticket: u64,
        account: &str,
        parts: &[crate::OutboundSms],
        retry_until: u64,
    ) -> (Vec<String>, Option<crate::ProviderError>) {
        let (Some(provider), Some(limit)) = (self.accounts.get(account), self.limits.get(account))
        else {
            let e = crate::ProviderError::new(
                crate::ProviderErrorKind::Rejected,
                format!("no provider account {account:?}"),
            );
            return (vec![], Some(e));
        };
        let mut ids = Vec::with_capacity(parts.len());
        for sms in parts {
            let mut attempt: u32 = 0;
            loop {
                let result = {
                    // The permit is held for the request only, not the wait.
                    let _permit = limit
                        .acquire()
                        .await
                        .expect("the semaphore is never closed");
                    provider.send(sms).await
                };
                match result {
                    Ok(id) => {
                        ids.push(id);
                        break;
                    }
                    Err(e) if e.is_temporary() => {
                        let delay = e
                            .retry_after
                            .unwrap_or_else(|| retry_delay(ticket, attempt));
                        let now = crate::gateway::unix_now();
                        if now + delay.as_secs() > retry_until {
                            tracing::warn!(%account, ticket, attempts = attempt + 1, error = %e, "giving up: the retry deadline has passed");
                            let mut e = e;
                            e.message = format!("{} (tried {} times)", e.message, attempt + 1);
                            return (ids, Some(e));
                        }
                        tracing::info!(%account, ticket, attempt = attempt + 1, retry_in = ?delay, error = %e, "temporary failure; retrying");
                        tokio::time::sleep(delay).await;
                        attempt += 1;
                    }
                    Err(e) => return (ids, Some(e)),
                }
            }
        }
        (ids, None)
    }
}

/// The wait before retry `attempt + 1` of chat `ticket`: 1 s doubling to 5
/// minutes, each spread over ±50% so that many chats failing together do
/// not retry together. The spread is a hash of the ticket and attempt, so a
/// run is reproducible.
pub fn retry_delay(ticket: u64, attempt: u32) -> Duration {
    use std::hash::{Hash, Hasher};
    let base = Duration::from_secs(1)
        .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
        .min(MAX_RETRY_DELAY);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (ticket, attempt).hash(&mut h);
    let spread = (h.finish() % 1000) as u32; // 0..1000 → 0.5 .. 1.5
    base.mul_f64(0.5 + f64::from(spread) / 1000.0)
}

/// The longest wait between two retries.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

async fn hook(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if inner.draining.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [
                (header::RETRY_AFTER, "5"),
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            ],
            "shutting down; retry later\n",
        )
            .into_response();
    }
    let Some(rest) = uri.path().strip_prefix(inner.base_path.as_str()) else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let rest = rest.trim_matches('/');
    if rest.is_empty() {
        return text(
            StatusCode::OK,
            concat!(
                "sms-over-xmpp ",
                env!("CARGO_PKG_VERSION"),
                ": an SMS gateway for XMPP. Carrier webhooks are served at {account}/message and {account}/status below this URL.\n"
            ),
        );
    }
    let Some((account, hook_name)) = rest.split_once('/') else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    if hook_name.contains('/') {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    let Some(provider) = inner.accounts.get(account) else {
        return text(StatusCode::NOT_FOUND, "no such account\n");
    };
    let mut url = format!("{}/{account}/{hook_name}", inner.public_base);
    if let Some(q) = uri.query() {
        url.push('?');
        url.push_str(q);
    }
    let mut hdrs = BTreeMap::new();
    for (name, value) in &headers {
        if let Ok(v) = value.to_str() {
            hdrs.entry(name.as_str().to_owned())
                .or_insert_with(|| v.to_owned());
        }
    }
    let req = WebhookRequest {
        method: method.as_str().to_owned(),
        hook: hook_name.to_owned(),
        url,
        headers: hdrs,
        body,
    };
    let reply = match provider.webhook(&req) {
        Ok(reply) => reply,
        Err(e) => {
            tracing::warn!(%account, hook = %hook_name, error = %e, "webhook refused");
            let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            return text(status, format!("{e}\n"));
        }
    };
    for event in reply.events {
        match event {
            WebhookEvent::Inbound(sms) => {
                let (ack, answer) = oneshot::channel();
                let ev = PstnEvent::Inbound {
                    account: account.to_owned(),
                    sms,
                    ack,
                };
                if inner.to_gateway.send(ev).await.is_err() {
                    return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
                }
                match answer.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e @ InboundRejected::UnknownNumber(_))) => {
                        return text(StatusCode::NOT_FOUND, format!("{e}\n"));
                    }
                    Ok(Err(e @ InboundRejected::Unavailable)) => {
                        return text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"));
                    }
                    // The Gateway restarted while holding it: let the carrier retry.
                    Err(_) => {
                        return text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "gateway restarting; retry\n",
                        )
                    }
                }
            }
            WebhookEvent::Status(report) => {
                let ev = PstnEvent::Status {
                    account: account.to_owned(),
                    report,
                };
                if inner.to_gateway.send(ev).await.is_err() {
                    return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
                }
            }
        }
    }
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    (
        status,
        [(header::CONTENT_TYPE, reply.content_type)],
        reply.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_with_spread_and_cap() {
        for ticket in 0..50 {
            let first = retry_delay(ticket, 0);
            assert!(
                first >= Duration::from_millis(500) && first <= Duration::from_millis(1500),
                "{first:?}"
            );
            let fourth = retry_delay(ticket, 3);
            assert!(
                fourth >= Duration::from_secs(4) && fourth <= Duration::from_secs(12),
                "{fourth:?}"
            );
            assert!(retry_delay(ticket, 30) <= Duration::from_secs(450));
        }
        // Spread: not every chat waits the same.
        let firsts: std::collections::HashSet<Duration> =
            (0..50).map(|t| retry_delay(t, 0)).collect();
        assert!(firsts.len() > 10);
        assert_eq!(retry_delay(7, 2), retry_delay(7, 2), "reproducible");
    }
}
