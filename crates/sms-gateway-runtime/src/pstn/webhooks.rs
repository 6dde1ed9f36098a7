//! The webhook server's handler: media files, then each account's hooks,
//! bodies read within bounds, and the answer given once the Gateway has
//! taken what the webhook carried.

use super::{Inner, WebhookLimits};
use crate::provider::{WebhookEvent, WebhookRequest};
use crate::{InboundRejected, PstnEvent};
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::oneshot;

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

/// Answers a request to the webhook server, counting it (`sms_webhooks`).
pub(super) async fn hook(inner: Arc<Inner>, request: Request) -> Response {
    // A copy of the path's shared bytes, not of the path: read for the
    // count once the request has been answered.
    let uri = request.uri().clone();
    let answer = answer(inner.clone(), request).await;
    let (account, hook_name) = match uri.path().strip_prefix(inner.base_path.as_str()) {
        Some(rest) if rest.starts_with("/media/") => ("", "media"),
        Some(rest) => rest.trim_matches('/').split_once('/').unwrap_or(("", "")),
        None => ("", ""),
    };
    inner
        .metrics
        .webhook(account, hook_name, answer.status().as_u16());
    answer
}

/// The answer to a webhook that is not believed, whatever the reason.
const FORBIDDEN: &str = "forbidden\n";

async fn answer(inner: Arc<Inner>, request: Request) -> Response {
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
        // No version: it tells an attacker which advisories apply (#27).
        return text(
            StatusCode::OK,
            "sms-over-xmpp: an SMS gateway for XMPP. Carrier webhooks are served at {account}/message and {account}/status below this URL.\n",
        );
    }
    let Some((account, hook_name)) = rest.split_once('/') else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    if hook_name.contains('/') {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    let Some(provider) = inner.accounts.provider(account) else {
        // Answered as a known account answers a request it cannot
        // authenticate, so account names cannot be probed (#27).
        tracing::debug!(%account, "webhook for an account that does not exist");
        return if !matches!(hook_name, "message" | "status") {
            text(StatusCode::NOT_FOUND, "not found\n")
        } else if method != axum::http::Method::POST {
            text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n")
        } else {
            text(StatusCode::FORBIDDEN, FORBIDDEN)
        };
    };
    let body = match read_body(&inner.webhook_limits, &headers, body).await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let mut url = [&*inner.public_base, "/", account, "/", hook_name].concat();
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
            // Why a request was not believed is for the log alone: the
            // reason would tell a forger what to fix, and a clock's skew
            // (#27). Malformed requests keep their precise 4xx answer.
            if status == StatusCode::FORBIDDEN {
                return text(status, FORBIDDEN);
            }
            // Answered as for an account that does not exist (above).
            if status == StatusCode::NOT_FOUND {
                return text(status, "not found\n");
            }
            if status == StatusCode::METHOD_NOT_ALLOWED {
                return text(status, "use POST\n");
            }
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
