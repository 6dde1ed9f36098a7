//! The metrics listener (`[metrics] listen`): `/metrics` in Prometheus'
//! text format, `/healthz` (the process answers) and `/readyz` (the XMPP
//! link is up, the store's last commit succeeded, not every carrier
//! account is failing), for Prometheus, systemd, Kubernetes and load
//! balancers. Never on the public webhook port: the channels' depths and
//! the carriers' health are nobody else's business.

use crate::metrics::Metrics;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What `/metrics` reads besides the counters: how full each channel
/// between the processes is, as (name, depth) at the time of the scrape.
pub(crate) type Depths = Arc<dyn Fn() -> Vec<(&'static str, usize)> + Send + Sync>;

/// The content type of Prometheus' (OpenMetrics) text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves the metrics routes on `listener` until `shutdown`.
pub(crate) async fn serve(
    listener: std::net::TcpListener,
    metrics: Arc<Metrics>,
    depths: Depths,
    shutdown: CancellationToken,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot serve metrics");
            return;
        }
    };
    let scrape = {
        let metrics = metrics.clone();
        move || {
            let (metrics, depths) = (metrics.clone(), depths.clone());
            async move {
                for (queue, depth) in depths() {
                    metrics.queue(queue, depth);
                }
                ([(header::CONTENT_TYPE, OPENMETRICS)], metrics.encode()).into_response()
            }
        }
    };
    let ready = move || {
        let metrics = metrics.clone();
        async move { readiness(&metrics) }
    };
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route("/readyz", axum::routing::get(ready));
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "the metrics listener failed");
    }
}

/// `/readyz`: 200, or 503 saying what is wrong.
fn readiness(metrics: &Metrics) -> Response {
    match metrics.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}
