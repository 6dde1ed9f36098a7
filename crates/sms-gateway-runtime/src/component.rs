//! The supervising component: starts the XMPP, Gateway and PSTN processes,
//! restarts one that panics or returns (capped exponential backoff), and
//! owns what must outlive such a crash: the channels between the processes
//! (so a message queued towards a process waits for its next incarnation),
//! the Gateway's memory, the configuration and the webhook socket.

use crate::config::Config;
use crate::pstn::PstnProcess;
use crate::store::{MemoryStore, Store};
use crate::Providers;
use crate::{run_gateway, GatewayIo};
use crate::{Gateway, GatewayState, Routing};
use crate::{OutgoingStanza, PstnCommand, PstnEvent, XmppEvent};
use async_trait::async_trait;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long the processes get to stop after shutdown.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Capacity of the channel from the XMPP process to the Gateway. Small on
/// purpose: a chat read from the server is not acknowledged to anyone
/// (XEP-0114 has no acknowledgements) until the Gateway has stored it, so
/// the XMPP process must not read far ahead of the store.
const XMPP_EVENTS_CAPACITY: usize = 4;

/// Capacity of each other channel between processes.
const CHANNEL_CAPACITY: usize = 1024;
/// A process that ran this long before failing starts its backoff afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Why a process stopped.
pub type ProcessError = Box<dyn std::error::Error + Send + Sync>;

/// A resource the component owns and lends to each incarnation of a process:
/// the process locks it while it runs; after a crash the next one takes it.
pub type Lent<T> = Arc<tokio::sync::Mutex<T>>;

/// The XMPP side's channels, lent by the component to each incarnation of
/// the XMPP process.
#[derive(Clone)]
pub struct XmppChannels {
    /// Chats for the Gateway.
    pub to_gateway: mpsc::Sender<XmppEvent>,
    /// Stanzas from the Gateway. Lock it for as long as the process runs;
    /// what is left unread waits for the next incarnation.
    pub from_gateway: Lent<mpsc::Receiver<OutgoingStanza>>,
}

/// The XMPP process, as the component sees it. `sms-xmpp` provides the real
/// one; tests and embedders may bring their own.
#[async_trait]
pub trait XmppLink: Send + Sync + 'static {
    /// Runs the link until `shutdown` (then closes the stream and returns
    /// `Ok`). Returning or panicking otherwise makes the component restart it.
    async fn run(
        &self,
        channels: XmppChannels,
        shutdown: CancellationToken,
    ) -> Result<(), ProcessError>;

    /// How many chats reached the link after shutdown began, too late to
    /// be handled (the server may still send while the stream closes). If
    /// any, the stop does not count as clean, so their senders are told at
    /// the next start ([`crate::Gateway::start_run`]).
    fn dropped_at_stop(&self) -> usize {
        0
    }

    /// Where XEP-0363 upload slots come from, for `media.store = "upload"`
    /// (the XMPP process asks the user's server). The default has none.
    fn upload_slots(&self) -> Option<Arc<dyn crate::media::UploadSlots>> {
        None
    }
}

/// Why the component could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ComponentError {
    /// The media directory could not be opened, or media cannot be fetched.
    #[error("media ({key}): {reason}")]
    Media {
        /// The key to look at.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// The webhook address could not be bound.
    #[error("cannot listen on {addr} (http.listen): {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The metrics address could not be bound.
    #[error("cannot listen on {addr} (metrics.listen): {source}")]
    MetricsListen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The supervisor. Build it from a validated config and its providers.
pub struct Component {
    config: Arc<Config>,
    providers: Providers,
    state: Arc<Mutex<GatewayState>>,
    store: Arc<dyn Store>,
    to_pstn: mpsc::Sender<PstnCommand>,
    pstn_commands: Lent<mpsc::Receiver<PstnCommand>>,
    to_gateway_pstn: mpsc::Sender<PstnEvent>,
    pstn_events: Lent<mpsc::Receiver<PstnEvent>>,
    to_gateway_xmpp: mpsc::Sender<XmppEvent>,
    xmpp_events: Lent<mpsc::Receiver<XmppEvent>>,
    to_xmpp: mpsc::Sender<OutgoingStanza>,
    xmpp_commands: Lent<mpsc::Receiver<OutgoingStanza>>,
    media_dir: Option<std::path::PathBuf>,
}

fn lent<T>(rx: T) -> Lent<T> {
    Arc::new(tokio::sync::Mutex::new(rx))
}

impl Component {
    /// A component for `config` (which must have passed
    /// [`Config::validate`], giving `providers`).
    pub fn new(config: Config, providers: Providers) -> Self {
        let (to_pstn, pstn_commands) = mpsc::channel(CHANNEL_CAPACITY);
        let (to_gateway_pstn, pstn_events) = mpsc::channel(CHANNEL_CAPACITY);
        let (to_gateway_xmpp, xmpp_events) = mpsc::channel(XMPP_EVENTS_CAPACITY);
        let (to_xmpp, xmpp_commands) = mpsc::channel(CHANNEL_CAPACITY);
        Component {
            config: Arc::new(config),
            providers,
            state: Arc::default(),
            store: Arc::new(MemoryStore::default()),
            to_pstn,
            pstn_commands: lent(pstn_commands),
            to_gateway_pstn,
            pstn_events: lent(pstn_events),
            to_gateway_xmpp,
            xmpp_events: lent(xmpp_events),
            to_xmpp,
            xmpp_commands: lent(xmpp_commands),
            media_dir: None,
        }
    }

    /// Keeps fetched media in `dir` (with `media.store = "local"`). The
    /// default is `media.dir`, or `media` in the working directory; the
    /// binary puts it next to the store.
    pub fn with_media_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.media_dir = Some(dir.into());
        self
    }

    /// The media service `media.store` asks for.
    fn media(
        &self,
        xmpp: &dyn XmppLink,
    ) -> Result<Option<Arc<crate::media::MediaService>>, ComponentError> {
        use crate::config::MediaStoreKind;
        use crate::media::{LocalMedia, MediaService, MediaSink, UploadSink};
        let config = &self.config.media;
        let local = || -> Result<Arc<LocalMedia>, ComponentError> {
            let dir = self
                .media_dir
                .clone()
                .or_else(|| config.dir.clone())
                .unwrap_or_else(|| "media".into());
            let local = LocalMedia::open(
                &dir,
                &format!("{}/media", self.config.http.public_base()),
                Duration::from_secs(config.keep_days.saturating_mul(86_400)),
                config.max_total_bytes,
            )
            .map_err(|e| ComponentError::Media {
                key: "media.dir",
                reason: format!("cannot open {}: {e}", dir.display()),
            })?;
            let (files, bytes) = local.usage();
            tracing::info!(dir = %dir.display(), files, bytes, "media files kept here");
            Ok(Arc::new(local))
        };
        let (sink, served): (Arc<dyn MediaSink>, Option<Arc<LocalMedia>>) = match config.store {
            MediaStoreKind::Link => {
                if !config.relay_private_urls {
                    return Ok(None);
                }
                let l = local()?;
                (l.clone(), Some(l))
            }
            MediaStoreKind::Local => {
                let l = local()?;
                (l.clone(), Some(l))
            }
            MediaStoreKind::Upload => {
                let slots = xmpp.upload_slots().ok_or(ComponentError::Media {
                    key: "media.store",
                    reason: "\"upload\" needs an XMPP link that can ask for upload slots".into(),
                })?;
                let upload = UploadSink::new(slots, Duration::from_secs(config.timeout_secs))
                    .map_err(|reason| ComponentError::Media {
                        key: "media.store",
                        reason,
                    })?;
                let served = if config.relay_private_urls {
                    Some(local()?)
                } else {
                    None
                };
                (Arc::new(upload), served)
            }
        };
        let service =
            MediaService::new(config, sink, served).map_err(|reason| ComponentError::Media {
                key: "media",
                reason,
            })?;
        Ok(Some(Arc::new(service)))
    }

    /// Keeps what must survive a crash in `store` (the default keeps it in
    /// memory only).
    pub fn with_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = store;
        self
    }

    /// What applies a reloaded config to this component while it runs
    /// ([`crate::reload`]): take it before [`Component::run`].
    pub fn reloader(&self) -> crate::reload::Reloader {
        crate::reload::Reloader::new(self.config.clone(), self.providers.clone())
    }

    /// Runs everything until `shutdown` is cancelled, then stops the
    /// processes (the XMPP link closes its stream) and returns. What was
    /// pending in the store when it last stopped is resumed first.
    pub async fn run(
        self,
        xmpp: Arc<dyn XmppLink>,
        shutdown: CancellationToken,
    ) -> Result<(), ComponentError> {
        let addr = self.config.http.listen;
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| ComponentError::Listen { addr, source })?;
        tracing::info!(
            %addr,
            public_url = %self.config.http.public_base(),
            accounts = ?self.providers,
            "webhook server listening"
        );
        let metrics_listener = match self.config.metrics.listen {
            Some(addr) => Some(
                std::net::TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(|source| ComponentError::MetricsListen { addr, source })?,
            ),
            None => None,
        };
        let media = self.media(xmpp.as_ref())?;
        let pstn = PstnProcess::new(
            &self.config,
            self.providers.accounts.clone(),
            listener,
            self.to_gateway_pstn.clone(),
            self.pstn_commands.clone(),
            media,
            self.providers.metrics.clone(),
        );
        let routing = Arc::new(Routing::new(&self.config, &self.providers));
        let retry_deadline = Duration::from_secs(self.config.retry.deadline_secs);
        let keep = self.config.store.keep();
        let store = self.store.clone();
        let make_gateway = {
            let (routing, state, store) = (routing.clone(), self.state.clone(), store.clone());
            move || {
                Gateway::with_store(
                    routing.clone(),
                    state.clone(),
                    store.clone(),
                    retry_deadline,
                )
            }
        };
        let gateway = make_gateway();
        // The users who registered, and the presence of the contacts they
        // are subscribed to; then, after an unclean stop, users hear of it.
        let mut recovered = gateway.load_people().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the registered users and contacts");
            vec![]
        });
        recovered.extend(gateway.start_run());
        recovered.extend(gateway.recover(keep).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the store: nothing pending is resumed");
            vec![]
        }));
        let gateway_io = GatewayIo {
            xmpp_events: self.xmpp_events.clone(),
            pstn_events: self.pstn_events.clone(),
            to_xmpp: self.to_xmpp.clone(),
            to_pstn: self.to_pstn.clone(),
            metrics: self.providers.metrics.clone(),
        };
        let channels = XmppChannels {
            to_gateway: self.to_gateway_xmpp.clone(),
            from_gateway: self.xmpp_commands.clone(),
        };

        let mut set = tokio::task::JoinSet::new();
        if let Some(listener) = metrics_listener {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "metrics and health checks listening");
            }
            let senders = (
                self.to_gateway_xmpp.clone(),
                self.to_gateway_pstn.clone(),
                self.to_xmpp.clone(),
                self.to_pstn.clone(),
            );
            let depths: crate::health::Depths = Arc::new(move || {
                let (a, b, c, d) = &senders;
                vec![
                    ("to_gateway_xmpp", a.max_capacity() - a.capacity()),
                    ("to_gateway_pstn", b.max_capacity() - b.capacity()),
                    ("to_xmpp", c.max_capacity() - c.capacity()),
                    ("to_pstn", d.max_capacity() - d.capacity()),
                ]
            });
            set.spawn(crate::health::serve(
                listener,
                self.providers.metrics.clone(),
                depths,
                shutdown.clone(),
            ));
        }
        {
            let shutdown = shutdown.clone();
            set.spawn(supervise("pstn", shutdown.clone(), move || {
                let pstn = pstn.clone();
                let shutdown = shutdown.clone();
                async move { pstn.run(shutdown).await.map_err(ProcessError::from) }
            }));
        }
        {
            let shutdown = shutdown.clone();
            let io = gateway_io.clone();
            set.spawn(supervise("gateway", shutdown.clone(), move || {
                let gateway = make_gateway();
                let io = io.clone();
                let shutdown = shutdown.clone();
                async move {
                    run_gateway(gateway, io, shutdown, keep).await;
                    Ok(())
                }
            }));
        }
        {
            let shutdown = shutdown.clone();
            let xmpp = xmpp.clone();
            set.spawn(supervise("xmpp", shutdown.clone(), move || {
                let xmpp = xmpp.clone();
                let channels = channels.clone();
                let shutdown = shutdown.clone();
                async move { xmpp.run(channels, shutdown).await }
            }));
        }
        // What was pending before the restart goes out first, once the
        // processes that take it are running.
        if !recovered.is_empty() {
            let io = gateway_io.clone();
            set.spawn(async move {
                for action in recovered {
                    if !io.dispatch(action).await {
                        return;
                    }
                }
            });
        }
        shutdown.cancelled().await;
        // Bounded: whatever has not finished by then is in the store.
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, async {
            while set.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!("processes did not stop in time; leaving the rest to the store");
            set.abort_all();
        }
        match xmpp.dropped_at_stop() {
            0 => gateway.end_run(),
            n => tracing::warn!(
                dropped = n,
                "chats arrived while stopping; users will be told at the next start"
            ),
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Runs `make()` again and again until `shutdown`, waiting a capped,
/// doubling delay between failures.
async fn supervise<F, Fut>(name: &'static str, shutdown: CancellationToken, mut make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), ProcessError>> + Send + 'static,
{
    let mut failures: u32 = 0;
    loop {
        let started = tokio::time::Instant::now();
        let outcome = tokio::spawn(make()).await;
        if shutdown.is_cancelled() {
            return;
        }
        match outcome {
            Ok(Ok(())) => tracing::error!(process = name, "process returned; restarting it"),
            Ok(Err(e)) => {
                tracing::error!(process = name, error = %e, "process failed; restarting it")
            }
            Err(e) if e.is_panic() => {
                let p = e.into_panic();
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "?".into());
                tracing::error!(process = name, panic = %msg, "process panicked; restarting it");
            }
            Err(e) => {
                tracing::error!(process = name, error = %e, "process cancelled; restarting it")
            }
        }
        if started.elapsed() >= HEALTHY_RUN {
            failures = 0;
        }
        let delay = crate::backoff(failures);
        failures = failures.saturating_add(1);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// What another task hands over while the Gateway works through a
    /// batch (under load, one poll of the I/O driver wakes the XMPP process
    /// and several webhooks at once) shares that batch's commit.
    #[tokio::test]
    async fn events_handed_over_meanwhile_share_the_batch_commit() {
        let cfg = Config::from_toml(
            "[xmpp]\nserver = \"127.0.0.1:5347\"\ndomain = \"sms.example.com\"\nsecret = \"x\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1/\"\n\
             [providers.main]\ntype = \"sandbox\"\ntoken = \"sandbox-test-token\"\n",
        )
        .unwrap();
        let providers = cfg.validate(&crate::sandbox::registry()).unwrap();
        let store = Arc::new(MemoryStore::default());
        let gateway = Gateway::with_store(
            Arc::new(Routing::new(&cfg, &providers)),
            Arc::default(),
            store.clone(),
            crate::DEFAULT_RETRY_DEADLINE,
        );
        let (xmpp_tx, xmpp_rx) = mpsc::channel(16);
        let (_pstn_tx, pstn_rx) = mpsc::channel(16);
        let (to_xmpp, _to_xmpp) = mpsc::channel(16);
        let (to_pstn, _to_pstn) = mpsc::channel(16);
        let io = GatewayIo {
            xmpp_events: lent(xmpp_rx),
            pstn_events: lent(pstn_rx),
            to_xmpp,
            to_pstn,
            metrics: providers.metrics.clone(),
        };
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(run_gateway(
            gateway,
            io,
            shutdown.clone(),
            crate::store::Retention {
                texts: Duration::from_secs(3600),
                seen: Duration::from_secs(3600),
            },
        ));
        let settle = || async {
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
        };
        settle().await;
        // This runtime has one thread: the Gateway runs on the first event,
        // and the task spawned here runs only once the Gateway yields.
        xmpp_tx.send(XmppEvent::Delivered(1)).await.unwrap();
        let tx = xmpp_tx.clone();
        tokio::spawn(async move { tx.send(XmppEvent::Delivered(2)).await.unwrap() });
        settle().await;
        assert_eq!(store.commits(), 1, "both events in one batch");
        // Alone, an event is committed at once.
        xmpp_tx.send(XmppEvent::Delivered(3)).await.unwrap();
        settle().await;
        assert_eq!(store.commits(), 2);
        shutdown.cancel();
        run.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_process_is_restarted_and_keeps_its_channel() {
        let (tx, rx) = mpsc::channel::<u32>(16);
        let rx = lent(rx);
        let runs = Arc::new(AtomicU32::new(0));
        let got = Arc::new(Mutex::new(Vec::new()));
        let shutdown = CancellationToken::new();
        for i in 0..4 {
            tx.send(i).await.unwrap();
        }
        let task = tokio::spawn(supervise("test", shutdown.clone(), {
            let (rx, runs, got) = (rx.clone(), runs.clone(), got.clone());
            move || {
                let (rx, runs, got) = (rx.clone(), runs.clone(), got.clone());
                async move {
                    let run = runs.fetch_add(1, Ordering::SeqCst);
                    let mut rx = rx.lock().await;
                    // Each incarnation takes one message and then dies.
                    let m = rx.recv().await.unwrap();
                    got.lock().unwrap().push(m);
                    if run % 2 == 0 {
                        panic!("boom {run}");
                    }
                    Ok(())
                }
            }
        }));
        // Virtual time: the restarts' backoff passes instantly.
        while got.lock().unwrap().len() < 4 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        shutdown.cancel();
        tx.send(99).await.unwrap();
        task.await.unwrap();
        assert_eq!(
            *got.lock().unwrap(),
            vec![0, 1, 2, 3],
            "nothing lost or duplicated"
        );
        assert!(runs.load(Ordering::SeqCst) >= 4);
    }
}
