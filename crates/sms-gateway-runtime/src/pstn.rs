//! The PSTN process: the HTTP server that receives every provider account's
//! webhooks, and the sender that calls provider APIs for the Gateway.
//!
//! Webhooks arrive at `{public_url path}/{account}/{hook}`. The provider of
//! that account authenticates and parses the request; its events go to the
//! Gateway; the answer goes out only once the Gateway has taken them, so a
//! carrier whose webhook was not answered 2xx retries it (invariant 2).

use crate::config::Config;
use crate::{PstnCommand, PstnEvent};
/// What the component lends a process (see `crate::component::Lent`).
type Lent<T> = std::sync::Arc<tokio::sync::Mutex<T>>;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

/// How long webhooks are answered 503 on shutdown before the server stops.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// How long requests already sent to a carrier get to be answered at
/// shutdown.
const STOP_GRACE: Duration = Duration::from_secs(3);

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
    accounts: Arc<crate::accounts::Accounts>,
    /// Sends in flight per account, at most [`SENDS_PER_ACCOUNT`] each.
    limits: std::sync::Mutex<HashMap<String, Arc<Semaphore>>>,
    to_gateway: mpsc::Sender<PstnEvent>,
    commands: Lent<mpsc::Receiver<PstnCommand>>,
    listener: std::net::TcpListener,
    /// Set on shutdown: webhooks are answered 503 so carriers retry later.
    draining: AtomicBool,
    /// What one client may take of the webhook server (`[http]`).
    webhook_limits: WebhookLimits,
    /// Fetches inbound media, and serves them at `/media/` when local.
    media: Option<Arc<crate::media::MediaService>>,
    /// What is counted (`[metrics]`).
    metrics: Arc<crate::metrics::Metrics>,
    /// How long a text waits for its media (`media.wait_secs`).
    media_wait: Duration,
}

/// The bounds on what anyone reaching the webhook port can make the gateway
/// hold or wait for: the port is open to the world, and a request is
/// authenticated only once it has been read.
#[derive(Debug, Clone, Copy)]
struct WebhookLimits {
    connections: usize,
    header_timeout: Duration,
    body_timeout: Duration,
    form_body: usize,
    body: usize,
    ack_timeout: Duration,
}

impl PstnProcess {
    /// A PSTN process for `config`'s accounts, serving on `listener`.
    pub fn new(
        config: &Config,
        accounts: Arc<crate::accounts::Accounts>,
        listener: std::net::TcpListener,
        to_gateway: mpsc::Sender<PstnEvent>,
        commands: Lent<mpsc::Receiver<PstnCommand>>,
        media: Option<Arc<crate::media::MediaService>>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        let limits = Default::default();
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
                webhook_limits: WebhookLimits {
                    connections: config.http.max_connections,
                    header_timeout: Duration::from_secs(config.http.header_timeout_secs),
                    body_timeout: Duration::from_secs(config.http.body_timeout_secs),
                    form_body: config.http.max_form_body,
                    body: config.http.max_body,
                    ack_timeout: Duration::from_secs(config.http.ack_timeout_secs),
                },
                media,
                metrics,
                media_wait: Duration::from_secs(config.media.wait_secs),
            }),
        }
    }

    /// Serves webhooks and sends texts until `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::from_std(self.inner.listener.try_clone()?)?;
        // On shutdown, answer 503 for a moment (requests on open connections
        // get a clear "retry later" rather than a reset), then stop serving.
        let stopped = CancellationToken::new();
        let inner = self.inner.clone();
        let (stop, done) = (shutdown.clone(), stopped.clone());
        let drained = async move {
            stop.cancelled().await;
            inner.draining.store(true, Ordering::SeqCst);
            tokio::time::sleep(DRAIN_GRACE).await;
            done.cancel();
        };
        let ((), (), (), ()) = tokio::join!(
            drained,
            self.serve(listener, stopped),
            self.send_loop(shutdown.clone()),
            self.inner.prune_loop(shutdown)
        );
        Ok(())
    }

    /// The webhook server: hyper's HTTP/1 with a timer, so a client that
    /// sends its headers slowly (or holds an idle connection) is cut off
    /// after `header_timeout`, and at most `connections` are served at
    /// once (the rest wait in the listen queue). Stops at `stopped`,
    /// letting requests being answered finish.
    async fn serve(&self, listener: tokio::net::TcpListener, stopped: CancellationToken) {
        use hyper_util::rt::{TokioIo, TokioTimer};
        let limits = self.inner.webhook_limits;
        // Every path goes to `hook`, which reads the path itself: no router
        // between hyper and it (axum's cost a clone, a match and a boxed
        // future per request, #30).
        let inner = self.inner.clone();
        let permits = Arc::new(Semaphore::new(limits.connections));
        loop {
            let permit = tokio::select! {
                () = stopped.cancelled() => break,
                p = permits.clone().acquire_owned() => p.expect("never closed"),
            };
            let tcp = tokio::select! {
                () = stopped.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        // Out of file descriptors, mostly: wait, do not spin.
                        tracing::warn!(error = %e, "cannot accept a webhook connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            // Nagle's algorithm would hold a webhook's small answer until
            // the carrier acknowledged the previous one: up to 40 ms per
            // request on a kept-alive connection.
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY on a webhook connection");
            }
            // Each connection is served at most conn::MAX_REQUESTS requests:
            // the last answer says `Connection: close` (#27).
            let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let inner = inner.clone();
            let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                let last = served.fetch_add(1, Ordering::Relaxed) + 1 >= conn::MAX_REQUESTS;
                let answer = hook(inner.clone(), req.map(axum::body::Body::new));
                async move {
                    let mut answer = answer.await;
                    if last {
                        answer.headers_mut().insert(
                            axum::http::header::CONNECTION,
                            axum::http::HeaderValue::from_static("close"),
                        );
                    }
                    Ok::<_, std::convert::Infallible>(answer)
                }
            });
            let stopped = stopped.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_timeout)
                    .max_buf_size(64 * 1024);
                // A client that reads none of its answers loses the
                // connection instead of holding its slot (#27).
                let io = conn::WriteStall::new(tcp, conn::WRITE_STALL);
                let conn = builder.serve_connection(TokioIo::new(io), service);
                tokio::pin!(conn);
                let result = tokio::select! {
                    r = conn.as_mut() => r,
                    () = stopped.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "webhook connection ended");
                }
            });
        }
        // Let requests being answered finish, for a bounded time.
        let all = u32::try_from(limits.connections).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(DRAIN_GRACE * 4, permits.acquire_many(all)).await;
    }

    /// Takes the Gateway's commands until `shutdown`; each runs on a task
    /// of its own. At shutdown, retries waiting for their time and fetches
    /// stop at once (what they were doing stays in the store for the next
    /// start), and requests already sent get [`STOP_GRACE`] to be
    /// answered; then the rest is aborted, so nothing is sent once this
    /// returns.
    async fn send_loop(&self, shutdown: CancellationToken) {
        let tasks = tokio_util::task::TaskTracker::new();
        self.take_commands(&tasks, &shutdown).await;
        tasks.close();
        if tokio::time::timeout(STOP_GRACE, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = tasks.len(),
                "carrier requests still unanswered at shutdown; abandoned (their chats stay pending in the store)"
            );
        }
    }

    async fn take_commands(
        &self,
        tasks: &tokio_util::task::TaskTracker,
        shutdown: &CancellationToken,
    ) {
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
                    let shutdown = shutdown.clone();
                    // Each chat is sent on its own task, limited per account, so
                    // a slow carrier account does not hold up the others; the
                    // parts of one chat go out in order.
                    tasks.spawn(async move {
                        let Some((ids, error)) = inner
                            .send_parts(ticket, &account, &parts, retry_until, &shutdown)
                            .await
                        else {
                            // Stopped while waiting to retry: the chat is
                            // still pending in the store, and is sent by the
                            // next start.
                            return;
                        };
                        // The channel is the component's: it outlives a Gateway restart.
                        let _ = inner
                            .to_gateway
                            .send(PstnEvent::SendResult { ticket, ids, error })
                            .await;
                    });
                }
                PstnCommand::FetchMedia {
                    account,
                    id,
                    user,
                    mut sms,
                    retry_until,
                } => {
                    let inner = self.inner.clone();
                    let shutdown = shutdown.clone();
                    tasks.spawn(async move {
                        let (Some(media), Some(provider)) =
                            (inner.media.as_ref(), inner.accounts.provider(&account))
                        else {
                            // Nothing to fetch with: the carrier's links go as they are.
                            tracing::error!(%account, id, "media fetching is not set up; delivering the carrier's links");
                            for m in sms.media.iter_mut().filter(|m| m.fetched.is_none()) {
                                m.fetched = Some(crate::Fetched::Served { url: m.url.clone() });
                            }
                            let _ = inner
                                .to_gateway
                                .send(PstnEvent::MediaFetched { account, id, sms })
                                .await;
                            return;
                        };
                        let delay = |attempt| retry_delay(id, attempt);
                        let stored = sms.clone();
                        let done = {
                            let fetch = media.fetch_all(
                                provider.as_ref(),
                                &user,
                                &mut sms,
                                retry_until,
                                delay,
                                &shutdown,
                            );
                            tokio::pin!(fetch);
                            // A picture that cannot be fetched (a carrier's
                            // outage: retried for retry.deadline_secs) must not
                            // hold its text that long (#28).
                            tokio::select! {
                                done = &mut fetch => done,
                                () = tokio::time::sleep(inner.media_wait) => {
                                    let _ = inner
                                        .to_gateway
                                        .send(PstnEvent::MediaSlow {
                                            account: account.clone(),
                                            id,
                                            sms: stored,
                                        })
                                        .await;
                                    fetch.await
                                }
                            }
                        };
                        if done.is_some() {
                            for m in &sms.media {
                                let outcome = match m.fetched {
                                    Some(crate::Fetched::Failed { .. }) => "failed",
                                    _ => "fetched",
                                };
                                inner.metrics.count(
                                    crate::metrics::Counted::Media,
                                    &account,
                                    outcome,
                                );
                            }
                            let _ = inner
                                .to_gateway
                                .send(PstnEvent::MediaFetched { account, id, sms })
                                .await;
                        }
                    });
                }
            }
        }
    }
}

impl Inner {
    /// The account's bound on sends in flight (made at its first send, so
    /// an account added by a reload has one too).
    fn sends(&self, account: &str) -> Arc<Semaphore> {
        let mut limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = limits.get(account) {
            return l.clone();
        }
        let l = Arc::new(Semaphore::new(SENDS_PER_ACCOUNT));
        limits.insert(account.to_owned(), l.clone());
        l
    }

    /// Sends `parts` in order through `account`, retrying temporary failures
    /// until `retry_until` (Unix seconds) and stopping at the first failure
    /// that is not retried: the ids accepted, and that failure if any.
    async fn send_parts(
        &self,
        ticket: u64,
        account: &str,
        parts: &[crate::OutboundSms],
        retry_until: u64,
        shutdown: &CancellationToken,
    ) -> Option<(Vec<String>, Option<crate::ProviderError>)> {
        let Some(provider) = self.accounts.provider(account) else {
            let e = crate::ProviderError::new(
                crate::ProviderErrorKind::Rejected,
                format!("no provider account {account:?}"),
            );
            return Some((vec![], Some(e)));
        };
        let limit = self.sends(account);
        let relayed;
        let parts = if parts
            .iter()
            .any(|p| p.media.iter().any(|m| crate::media::is_private_url(m)))
        {
            match self.relay_private(parts).await {
                Ok(p) => {
                    relayed = p;
                    &relayed[..]
                }
                Err(e) => return Some((vec![], Some(e))),
            }
        } else {
            parts
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
                    let started = std::time::Instant::now();
                    let result = provider.send(sms).await;
                    // Reached: the carrier answered for itself (a refusal
                    // of this message included).
                    let reached = match &result {
                        Ok(_) => true,
                        Err(e) => e.kind == crate::ProviderErrorKind::Rejected,
                    };
                    self.metrics
                        .carrier_request(account, started.elapsed().as_secs_f64(), reached);
                    result
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
                        let now = crate::unix_now();
                        if now.saturating_add(delay.as_secs()) > retry_until {
                            tracing::warn!(%account, ticket, attempts = attempt + 1, error = %e, "giving up: the retry deadline has passed");
                            let mut e = e;
                            e.message = format!("{} (tried {} times)", e.message, attempt + 1);
                            return Some((ids, Some(e)));
                        }
                        tracing::info!(%account, ticket, attempt = attempt + 1, retry_in = ?delay, error = %e, "temporary failure; retrying");
                        let cause = match e.kind {
                            crate::ProviderErrorKind::RateLimited => "rate_limited",
                            crate::ProviderErrorKind::CarrierError => "carrier_error",
                            _ => "network",
                        };
                        self.metrics
                            .count(crate::metrics::Counted::Retries, account, cause);
                        tokio::select! {
                            () = shutdown.cancelled() => return None,
                            () = tokio::time::sleep(delay) => {}
                        }
                        attempt += 1;
                    }
                    Err(e) => return Some((ids, Some(e))),
                }
            }
        }
        Some((ids, None))
    }
}

impl Inner {
    /// `parts` with each media link on a private address replaced by the
    /// gateway's own `/media/` copy (the Gateway lets such links through
    /// only with `media.relay_private_urls`).
    async fn relay_private(
        &self,
        parts: &[crate::OutboundSms],
    ) -> Result<Vec<crate::OutboundSms>, crate::ProviderError> {
        let refused = |why: String| {
            crate::ProviderError::new(
                crate::ProviderErrorKind::Rejected,
                format!("the gateway could not relay a media link on a private address: {why}"),
            )
        };
        let Some(media) = &self.media else {
            return Err(refused("media are not set up".into()));
        };
        let mut out = parts.to_vec();
        for part in &mut out {
            for url in &mut part.media {
                if crate::media::is_private_url(url) {
                    *url = media.relay(url).await.map_err(|e| refused(e.to_string()))?;
                }
            }
        }
        Ok(out)
    }

    /// Deletes old media files, hourly.
    async fn prune_loop(&self, shutdown: CancellationToken) {
        let Some(local) = self.media.as_ref().and_then(|m| m.local()) else {
            return;
        };
        let mut every = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = every.tick() => {
                    local.prune(crate::unix_now());
                }
            }
        }
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

mod conn;
mod webhooks;
use webhooks::hook;

#[cfg(test)]
mod tests;
