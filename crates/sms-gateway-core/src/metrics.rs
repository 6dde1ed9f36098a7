//! What the gateway counts, for Prometheus (`[metrics] listen`), and what
//! `/readyz` asks: the XMPP link, the store, the carrier accounts.
//!
//! One [`Metrics`] per gateway, shared by the three processes (it lives in
//! [`crate::Providers`]). Labels are bounded: account names come from the
//! config, hooks and outcomes from fixed lists, HTTP statuses are three
//! digits. No phone number or JID is ever a label.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

/// An account.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccountLabel {
    /// The account's name in the config.
    pub account: String,
}

/// An account and what came of something.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// The account's name in the config.
    pub account: String,
    /// From a fixed list per metric.
    pub outcome: String,
}

/// A webhook request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLabels {
    /// The account (`unknown` for a path naming none).
    pub account: String,
    /// `message`, `status`, `media` or `other`.
    pub hook: String,
    /// The HTTP status answered.
    pub status: String,
}

/// A channel between the processes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    /// `to_gateway_xmpp`, `to_gateway_pstn`, `to_xmpp`, `to_pstn`.
    pub queue: String,
}

/// Why a request was refused, from a fixed list ([`Metrics::refused`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The reason.
    pub reason: String,
}

/// The per-account counters, by what they count.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
#[non_exhaustive]
pub enum Counted {
    /// `sms_texts_sent_total`.
    TextsSent,
    /// `sms_texts_received_total`.
    TextsReceived,
    /// `sms_deliveries_total`.
    Deliveries,
    /// `sms_send_retries_total`.
    Retries,
    /// `sms_media_fetches_total`.
    Media,
    /// `sms_group_texts_total`.
    GroupTexts,
}

/// Each counter's outcomes, all created at zero at start.
const OUTCOMES: [(Counted, &[&str]); 6] = [
    (Counted::TextsSent, &["accepted", "refused", "failed"]),
    (Counted::TextsReceived, &["new", "repeat", "refused"]),
    (Counted::Deliveries, &["delivered", "failed"]),
    (
        Counted::Retries,
        &["rate_limited", "carrier_error", "network"],
    ),
    (Counted::Media, &["fetched", "failed"]),
    (Counted::GroupTexts, &["sent", "received"]),
];

/// One account's series, held so that counting is an atomic add after a
/// lookup by `&str` (no label built, nothing allocated, on the hot path).
struct Handles {
    counters: std::collections::HashMap<(Counted, &'static str), Counter>,
    carrier_seconds: Histogram,
    carrier_up: Gauge,
    webhooks: std::sync::Mutex<std::collections::HashMap<(&'static str, u16), Counter>>,
}

type Histo = Family<AccountLabel, Histogram, fn() -> Histogram>;

/// The gateway's metrics.
pub struct Metrics {
    registry: Registry,
    /// Texts handed to a carrier: `accepted`, `refused` (for good),
    /// `failed` (temporary failures past the retry deadline, or timeouts).
    pub texts_sent: Family<Outcome, Counter>,
    /// Inbound texts taken (stored), per account: `new`, `repeat` (a
    /// carrier's retry), `refused` (no user has the number).
    pub texts_received: Family<Outcome, Counter>,
    /// Delivery reports: `delivered`, `failed`.
    pub deliveries: Family<Outcome, Counter>,
    /// Webhook requests answered.
    pub webhooks: Family<HookLabels, Counter>,
    /// Retries of a send, by cause: `rate_limited`, `carrier_error`,
    /// `network`.
    pub retries: Family<Outcome, Counter>,
    /// Seconds one carrier API request took.
    pub carrier_seconds: Histo,
    /// Inbound media items fetched: `fetched`, `failed`.
    pub media: Family<Outcome, Counter>,
    /// Group texts: `sent`, `received` (per account).
    pub group_texts: Family<Outcome, Counter>,
    /// Whether the XMPP link is up (logged in).
    pub xmpp_up: Gauge,
    /// Logins to the XMPP server after the first.
    pub xmpp_reconnects: Counter,
    /// Seconds one store commit took.
    pub store_commit_seconds: Histogram,
    /// Whether the last store commit succeeded.
    pub store_ok: Gauge,
    /// Chats stored and not yet accepted by a carrier.
    pub chats_sending: Gauge,
    /// Whether each account's last request reached its carrier (1) or
    /// failed for a reason not the message's own (0).
    pub carrier_up: Family<AccountLabel, Gauge>,
    /// What waits in each channel between the processes, read at each
    /// scrape.
    pub queue_depth: Family<QueueLabel, Gauge>,
    /// Times a channel stayed full (nothing taken) past its bound, by queue.
    pub queue_stalls: Family<QueueLabel, Counter>,
    /// Requests refused to share the gateway fairly, by reason:
    /// `queue_full` (the sender's share of the Gateway's queue),
    /// `not_a_user` (answered without the Gateway), `stranger_budget`
    /// (non-users past their budget), `caller_id_budget`.
    pub refused: Family<ReasonLabel, Counter>,
    /// Channels stalled now (they fail `/readyz`).
    stalled: Mutex<BTreeSet<String>>,
    logins: AtomicI64,
    /// Whether the link was lost and is not back (set only by
    /// [`Metrics::link_down`]: an embedder without an XMPP process never
    /// has inbound texts held for a link).
    link_lost: std::sync::atomic::AtomicBool,
    /// Told when the link comes up, so texts held meanwhile go out.
    link_back: tokio::sync::Notify,
    /// Each running account's series, made when the account starts (at
    /// start, or by a reload).
    handles: std::sync::RwLock<std::collections::HashMap<String, Handles>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn carrier_histogram() -> Histogram {
    // 10 ms to about 40 s.
    Histogram::new(exponential_buckets(0.01, 2.0, 13))
}

impl Metrics {
    /// Metrics for a gateway with these accounts.
    pub fn new<'a>(accounts: impl IntoIterator<Item = &'a String>) -> Self {
        let mut registry = Registry::with_prefix("sms");
        let texts_sent = Family::<Outcome, Counter>::default();
        let texts_received = Family::<Outcome, Counter>::default();
        let deliveries = Family::<Outcome, Counter>::default();
        let webhooks = Family::<HookLabels, Counter>::default();
        let retries = Family::<Outcome, Counter>::default();
        let carrier_seconds: Histo = Family::new_with_constructor(carrier_histogram);
        let media = Family::<Outcome, Counter>::default();
        let group_texts = Family::<Outcome, Counter>::default();
        let xmpp_up = Gauge::default();
        let xmpp_reconnects = Counter::default();
        let store_commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let store_ok = Gauge::default();
        store_ok.set(1);
        let chats_sending = Gauge::default();
        let carrier_up = Family::<AccountLabel, Gauge>::default();
        let queue_depth = Family::<QueueLabel, Gauge>::default();
        let queue_stalls = Family::<QueueLabel, Counter>::default();
        let refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "queue_stalls",
            "Times a channel between the processes stayed full past its bound",
            queue_stalls.clone(),
        );
        registry.register(
            "refused",
            "Requests refused to share the gateway fairly, by reason",
            refused.clone(),
        );
        registry.register(
            "texts_sent",
            "Texts handed to a carrier, by account and outcome (accepted, refused, failed)",
            texts_sent.clone(),
        );
        registry.register(
            "texts_received",
            "Inbound texts, by account and outcome (new, repeat, refused)",
            texts_received.clone(),
        );
        registry.register(
            "deliveries",
            "Delivery reports, by account and outcome (delivered, failed)",
            deliveries.clone(),
        );
        registry.register(
            "webhooks",
            "Webhook requests answered, by account, hook and HTTP status",
            webhooks.clone(),
        );
        registry.register(
            "send_retries",
            "Retries of a send, by account and cause (rate_limited, carrier_error, network)",
            retries.clone(),
        );
        registry.register(
            "carrier_request_seconds",
            "Seconds one carrier API request took, by account",
            carrier_seconds.clone(),
        );
        registry.register(
            "media_fetches",
            "Inbound media items, by account and outcome (fetched, failed)",
            media.clone(),
        );
        registry.register(
            "group_texts",
            "Group texts, by account and direction (sent, received)",
            group_texts.clone(),
        );
        registry.register(
            "xmpp_link_up",
            "1 while the component is logged in to the XMPP server",
            xmpp_up.clone(),
        );
        registry.register(
            "xmpp_reconnects",
            "Logins to the XMPP server after the first",
            xmpp_reconnects.clone(),
        );
        registry.register(
            "store_commit_seconds",
            "Seconds one store commit took",
            store_commit_seconds.clone(),
        );
        registry.register(
            "store_ok",
            "1 when the last store commit succeeded",
            store_ok.clone(),
        );
        registry.register(
            "chats_sending",
            "Chats stored and not yet accepted by a carrier",
            chats_sending.clone(),
        );
        registry.register(
            "carrier_up",
            "1 when the account's last request reached its carrier",
            carrier_up.clone(),
        );
        registry.register(
            "queue_depth",
            "What waits in each channel between the processes",
            queue_depth.clone(),
        );
        let metrics = Metrics {
            registry,
            texts_sent,
            texts_received,
            deliveries,
            webhooks,
            retries,
            carrier_seconds,
            media,
            group_texts,
            xmpp_up,
            xmpp_reconnects,
            store_commit_seconds,
            store_ok,
            chats_sending,
            carrier_up,
            queue_depth,
            queue_stalls,
            refused,
            stalled: Mutex::default(),
            logins: AtomicI64::new(0),
            link_lost: std::sync::atomic::AtomicBool::new(false),
            link_back: tokio::sync::Notify::new(),
            handles: Default::default(),
        };
        metrics.set_accounts(accounts);
        metrics
    }

    /// Makes the series of each account in `accounts` that has none, and
    /// drops the running set of any other (their counters stay, frozen;
    /// their `carrier_up` goes, so `/readyz` asks about running accounts
    /// only). For a reload that adds or removes accounts.
    pub fn set_accounts<'a>(&self, accounts: impl IntoIterator<Item = &'a String>) {
        let accounts: BTreeSet<&String> = accounts.into_iter().collect();
        let mut handles = self.handles.write().unwrap_or_else(|p| p.into_inner());
        handles.retain(|name, _| {
            let keep = accounts.contains(name);
            if !keep {
                self.carrier_up.remove(&AccountLabel {
                    account: name.clone(),
                });
            }
            keep
        });
        for a in accounts {
            if handles.contains_key(a) {
                continue;
            }
            let label = AccountLabel { account: a.clone() };
            // Up until a request says otherwise.
            let up = self.carrier_up.get_or_create(&label).clone();
            up.set(1);
            // Every series exists from the start, at zero, so a rate over
            // the first event is right and dashboards show every line.
            let mut counters = std::collections::HashMap::new();
            for (what, outcomes) in OUTCOMES {
                for o in outcomes {
                    let c = self
                        .family(what)
                        .get_or_create(&Outcome {
                            account: a.clone(),
                            outcome: (*o).to_owned(),
                        })
                        .clone();
                    counters.insert((what, *o), c);
                }
            }
            let h = Handles {
                counters,
                carrier_seconds: self.carrier_seconds.get_or_create(&label).clone(),
                carrier_up: up,
                webhooks: Default::default(),
            };
            handles.insert(a.clone(), h);
        }
    }

    /// `f` of the running account's series, if it runs.
    fn with<R>(&self, account: &str, f: impl FnOnce(&Handles) -> R) -> Option<R> {
        self.handles
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(account)
            .map(f)
    }

    fn family(&self, what: Counted) -> &Family<Outcome, Counter> {
        match what {
            Counted::TextsSent => &self.texts_sent,
            Counted::TextsReceived => &self.texts_received,
            Counted::Deliveries => &self.deliveries,
            Counted::Retries => &self.retries,
            Counted::Media => &self.media,
            Counted::GroupTexts => &self.group_texts,
        }
    }

    /// Counts `outcome` of `what` for `account`.
    pub fn count(&self, what: Counted, account: &str, outcome: &'static str) {
        let counted = self.with(account, |h| {
            h.counters.get(&(what, outcome)).map(Counter::inc).is_some()
        });
        if counted == Some(true) {
            return;
        }
        // An account not in the config: nothing counts for one, but the
        // label is bounded anyway.
        self.family(what)
            .get_or_create(&Outcome {
                account: "unknown".to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// A webhook answered: the account only if configured, the hook only
    /// if one of the known ones (a path is anyone's to invent).
    pub fn webhook(&self, account: &str, hook: &str, status: u16) {
        let hook: &'static str = match hook {
            "message" => "message",
            "status" => "status",
            "media" => "media",
            _ => "other",
        };
        let counted = self.with(account, |h| {
            let mut webhooks = h.webhooks.lock().unwrap_or_else(|p| p.into_inner());
            webhooks
                .entry((hook, status))
                .or_insert_with(|| {
                    self.webhooks
                        .get_or_create(&HookLabels {
                            account: account.to_owned(),
                            hook: hook.to_owned(),
                            status: status.to_string(),
                        })
                        .clone()
                })
                .inc();
        });
        if counted.is_some() {
            return;
        }
        let account = "unknown";
        self.webhooks
            .get_or_create(&HookLabels {
                account: account.to_owned(),
                hook: hook.to_owned(),
                status: status.to_string(),
            })
            .inc();
    }

    /// One carrier request on `account` took `seconds`; `reached` says
    /// whether the carrier answered for itself (a refusal of the message
    /// counts as reached).
    pub fn carrier_request(&self, account: &str, seconds: f64, reached: bool) {
        // Requests go through configured accounts only.
        self.with(account, |h| {
            h.carrier_seconds.observe(seconds);
            h.carrier_up.set(i64::from(reached));
        });
    }

    /// The XMPP link logged in.
    pub fn link_up(&self) {
        if self.logins.fetch_add(1, Ordering::Relaxed) > 0 {
            self.xmpp_reconnects.inc();
        }
        self.xmpp_up.set(1);
        self.link_lost.store(false, Ordering::Relaxed);
        self.link_back.notify_one();
    }

    /// Whether the link was lost and has not come back: inbound texts wait
    /// in the store meanwhile (#26).
    pub fn link_lost(&self) -> bool {
        self.link_lost.load(Ordering::Relaxed)
    }

    /// Completes when the link comes up (again); a coming-up while nobody
    /// waits is kept for the next wait.
    pub async fn link_back(&self) {
        self.link_back.notified().await
    }

    /// Whether the XMPP link is up now.
    pub fn link_is_up(&self) -> bool {
        self.xmpp_up.get() == 1
    }

    /// The XMPP link is down.
    pub fn link_down(&self) {
        self.xmpp_up.set(0);
        self.link_lost.store(true, Ordering::Relaxed);
    }

    /// Sets `queue`'s depth.
    pub fn queue(&self, queue: &str, depth: usize) {
        self.queue_depth
            .get_or_create(&QueueLabel {
                queue: queue.to_owned(),
            })
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// `queue` stayed full past its bound (`true`, counted), or moves again.
    /// A stalled queue fails `/readyz` until it moves.
    pub fn stall(&self, queue: &str, stalled: bool) {
        let mut s = self.stalled.lock().unwrap_or_else(|p| p.into_inner());
        if stalled {
            if s.insert(queue.to_owned()) {
                self.queue_stalls
                    .get_or_create(&QueueLabel {
                        queue: queue.to_owned(),
                    })
                    .inc();
            }
        } else {
            s.remove(queue);
        }
    }

    /// Counts a request refused for `reason`.
    pub fn refused(&self, reason: &'static str) {
        self.refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// What `/readyz` says: ready, or why not.
    pub fn readiness(&self) -> Result<(), String> {
        let mut why = vec![];
        for queue in self
            .stalled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            why.push(format!("the {queue} channel is stalled"));
        }
        if self.xmpp_up.get() != 1 {
            why.push("the XMPP link is down".to_owned());
        }
        if self.store_ok.get() != 1 {
            why.push("the store's last commit failed".to_owned());
        }
        let handles = self.handles.read().unwrap_or_else(|p| p.into_inner());
        if !handles.is_empty() && handles.values().all(|h| h.carrier_up.get() != 1) {
            why.push("every carrier account's last request failed".to_owned());
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why.join("; "))
        }
    }

    /// The metrics in Prometheus' text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(std::iter::empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded_and_readiness_names_what_is_wrong() {
        let m = Metrics::new(&["main".to_owned()]);
        m.webhook("main", "message", 200);
        m.webhook("+15557654321", "../../etc", 404);
        let text = m.encode();
        assert!(
            text.contains(r#"sms_webhooks_total{account="main",hook="message",status="200"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"sms_webhooks_total{account="unknown",hook="other",status="404"} 1"#),
            "{text}"
        );
        assert!(!text.contains("15557654321"), "{text}");
        assert_eq!(m.readiness(), Err("the XMPP link is down".into()));
        m.link_up();
        assert_eq!(m.readiness(), Ok(()));
        m.carrier_request("main", 0.2, false);
        assert!(m.readiness().unwrap_err().contains("carrier"));
        m.carrier_request("main", 0.2, true);
        m.link_down();
        m.link_up();
        assert!(m.encode().contains("sms_xmpp_reconnects_total 1"));
        assert_eq!(m.readiness(), Ok(()));
    }
}
