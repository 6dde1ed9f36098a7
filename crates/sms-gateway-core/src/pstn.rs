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
/// What the component lends a process (see `crate::component::Lent`).
type Lent<T> = std::sync::Arc<tokio::sync::Mutex<T>>;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};
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
    accounts: BTreeMap<String, Arc<dyn PstnProvider>>,
    limits: HashMap<String, Arc<Semaphore>>,
    to_gateway: mpsc::Sender<PstnEvent>,
    commands: Lent<mpsc::Receiver<PstnCommand>>,
    listener: std::net::TcpListener,
    /// Set on shutdown: webhooks are answered 503 so carriers retry later.
    draining: AtomicBool,
    /// What one client may take of the webhook server (`[http]`).
    webhook_limits: WebhookLimits,
    /// Fetches inbound media, and serves them at `/media/` when local.
    media: Option<Arc<crate::media::MediaService>>,
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
        accounts: BTreeMap<String, Arc<dyn PstnProvider>>,
        listener: std::net::TcpListener,
        to_gateway: mpsc::Sender<PstnEvent>,
        commands: Lent<mpsc::Receiver<PstnCommand>>,
        media: Option<Arc<crate::media::MediaService>>,
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
                webhook_limits: WebhookLimits {
                    connections: config.http.max_connections,
                    header_timeout: Duration::from_secs(config.http.header_timeout_secs),
                    body_timeout: Duration::from_secs(config.http.body_timeout_secs),
                    form_body: config.http.max_form_body,
                    body: config.http.max_body,
                    ack_timeout: Duration::from_secs(config.http.ack_timeout_secs),
                },
                media,
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
        let app = axum::Router::new()
            .fallback(hook)
            .with_state(self.inner.clone());
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
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            let stopped = stopped.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_timeout)
                    .max_buf_size(64 * 1024);
                let conn = builder.serve_connection(TokioIo::new(tcp), service);
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
                            (inner.media.as_ref(), inner.accounts.get(&account))
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
                        let done = media
                            .fetch_all(
                                provider.as_ref(),
                                &user,
                                &mut sms,
                                retry_until,
                                delay,
                                &shutdown,
                            )
                            .await;
                        if done.is_some() {
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
        let (Some(provider), Some(limit)) = (self.accounts.get(account), self.limits.get(account))
        else {
            let e = crate::ProviderError::new(
                crate::ProviderErrorKind::Rejected,
                format!("no provider account {account:?}"),
            );
            return Some((vec![], Some(e)));
        };
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
                        let now = crate::time::unix_now();
                        if now.saturating_add(delay.as_secs()) > retry_until {
                            tracing::warn!(%account, ticket, attempts = attempt + 1, error = %e, "giving up: the retry deadline has passed");
                            let mut e = e;
                            e.message = format!("{} (tried {} times)", e.message, attempt + 1);
                            return Some((ids, Some(e)));
                        }
                        tracing::info!(%account, ticket, attempt = attempt + 1, retry_in = ?delay, error = %e, "temporary failure; retrying");
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
                    local.prune(crate::time::unix_now());
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

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// Reads a request's body within the limits: a form body at most
/// `form_body` bytes, any other `body` bytes (413 past that, checked against
/// `Content-Length` before reading), all of it within `body_timeout` (408).
async fn read_body(
    limits: &WebhookLimits,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, Response> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let is_form =
        crate::provider::media_type(content_type.unwrap_or("")) == crate::provider::FORM_MEDIA_TYPE;
    let limit = if is_form {
        limits.form_body
    } else {
        limits.body
    };
    let too_large = || {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("bodies of this type are limited to {limit} bytes\n"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(limits.body_timeout, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(e)) => Err(text(
            StatusCode::BAD_REQUEST,
            format!("cannot read the body: {e}\n"),
        )),
        Err(_) => Err(text(
            StatusCode::REQUEST_TIMEOUT,
            "the body took too long to arrive\n",
        )),
    }
}

/// 503 with `Retry-After`: the carrier will try again.
fn retry_later(why: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::RETRY_AFTER, "5"),
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        ],
        format!("{why}; retry later\n"),
    )
        .into_response()
}

async fn hook(State(inner): State<Arc<Inner>>, request: Request) -> Response {
    if inner.draining.load(Ordering::SeqCst) {
        return retry_later("shutting down");
    }
    if let Some(file) = request
        .uri()
        .path()
        .strip_prefix(inner.base_path.as_str())
        .and_then(|p| p.strip_prefix("/media/"))
    {
        let file = file.to_owned();
        return match inner.media.as_ref().and_then(|m| m.local()) {
            Some(local) => local.serve(&file, request).await,
            None => text(StatusCode::NOT_FOUND, "not found\n"),
        };
    }
    let (parts, body) = request.into_parts();
    let (method, uri, headers) = (parts.method, parts.uri, parts.headers);
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
    let body = match read_body(&inner.webhook_limits, &headers, body).await {
        Ok(body) => body,
        Err(answer) => return answer,
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
    // The wait for the Gateway is bounded: past it the carrier is told to
    // retry. What was handed on meanwhile is still stored, and the retry
    // is then recognised as a repeat.
    let handed_on = tokio::time::timeout(
        inner.webhook_limits.ack_timeout,
        hand_on(&inner, account, reply.events),
    )
    .await;
    match handed_on {
        Ok(Ok(())) => {}
        Ok(Err(answer)) => return answer,
        Err(_) => {
            tracing::warn!(%account, hook = %hook_name, "the gateway did not take a webhook in time; answered 503");
            return retry_later("the gateway is busy");
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

/// Hands a webhook's events to the Gateway, waiting for inbound texts to
/// be stored: `Err` is the answer to give instead of the provider's.
async fn hand_on(inner: &Inner, account: &str, events: Vec<WebhookEvent>) -> Result<(), Response> {
    for event in events {
        match event {
            WebhookEvent::Inbound(sms) => {
                let (ack, answer) = oneshot::channel();
                let ev = PstnEvent::Inbound {
                    account: account.to_owned(),
                    sms,
                    ack,
                };
                if inner.to_gateway.send(ev).await.is_err() {
                    return Err(retry_later("shutting down"));
                }
                match answer.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e @ InboundRejected::UnknownNumber(_))) => {
                        return Err(text(StatusCode::NOT_FOUND, format!("{e}\n")));
                    }
                    Ok(Err(e @ InboundRejected::Unavailable)) => {
                        return Err(text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")));
                    }
                    // The Gateway restarted while holding it: let the carrier retry.
                    Err(_) => return Err(retry_later("gateway restarting")),
                }
            }
            WebhookEvent::Status(report) => {
                let ev = PstnEvent::Status {
                    account: account.to_owned(),
                    report,
                };
                if inner.to_gateway.send(ev).await.is_err() {
                    return Err(retry_later("shutting down"));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
