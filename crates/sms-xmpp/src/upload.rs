//! XEP-0363 upload slots for `media.store = "upload"`: the media of an
//! inbound MMS are put on the user's own server, where their other
//! attachments live.
//!
//! The service is `media.upload_service`, or found on the user's server by
//! service discovery (an item of the server whose disco#info has
//! `urn:xmpp:http:upload:0`), once per server. Queries go out on the
//! component link as the component's domain; the server must let it upload
//! (Prosody's `http_file_share` does for components of the same server,
//! or with `http_file_share_access`; ejabberd's `mod_http_upload` by its
//! `access` rule).

use async_trait::async_trait;
use sms_gateway_runtime::media::{FetchError, Slot, UploadSlots};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_xmpp::jid::Jid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::disco::{
    DiscoInfoQuery, DiscoInfoResult, DiscoItemsQuery, DiscoItemsResult,
};
use tokio_xmpp::parsers::http_upload::{SlotRequest, SlotResult};

/// The XEP-0363 namespace.
const UPLOAD_NS: &str = "urn:xmpp:http:upload:0";
/// How long one query waits for its answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// The most items of a server whose disco#info is asked.
const MAX_ITEMS: usize = 20;

/// An IQ `get` for the link to send, and where its answer goes.
pub(crate) struct Query {
    pub(crate) to: Jid,
    pub(crate) payload: Element,
    pub(crate) reply: oneshot::Sender<Result<Option<Element>, String>>,
}

/// Asks upload services for slots, over the component link.
pub struct Uploads {
    service: Option<Jid>,
    queries: mpsc::Sender<Query>,
    /// Each server's upload service, once found.
    found: Mutex<HashMap<String, Jid>>,
}

impl Uploads {
    pub(crate) fn new(service: Option<&str>, queries: mpsc::Sender<Query>) -> Self {
        Uploads {
            service: service.and_then(|s| Jid::new(s).ok()),
            queries,
            found: Mutex::default(),
        }
    }

    async fn query(&self, to: Jid, payload: Element) -> Result<Option<Element>, String> {
        let (reply, answer) = oneshot::channel();
        self.queries
            .send(Query { to, payload, reply })
            .await
            .map_err(|_| "the XMPP link is stopping".to_owned())?;
        match tokio::time::timeout(QUERY_TIMEOUT, answer).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("the XMPP link was lost".into()),
            Err(_) => Err(format!("no answer within {QUERY_TIMEOUT:?}")),
        }
    }

    /// The upload service for `user`'s server.
    async fn service(&self, user: &str) -> Result<Jid, FetchError> {
        if let Some(s) = &self.service {
            return Ok(s.clone());
        }
        let server = user.rsplit('@').next().unwrap_or(user).to_lowercase();
        if let Some(s) = self
            .found
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&server)
        {
            return Ok(s.clone());
        }
        let host = Jid::new(&server)
            .map_err(|_| FetchError::Permanent("your server's address is not usable".into()))?;
        let temporary = |e: String| {
            FetchError::Temporary(format!(
                "cannot ask your server for its upload service ({e})"
            ))
        };
        let items = self
            .query(
                host.clone(),
                DiscoItemsQuery {
                    node: None,
                    rsm: None,
                }
                .into(),
            )
            .await
            .map_err(temporary)?
            .and_then(|e| DiscoItemsResult::try_from(e).ok())
            .map(|r| r.items)
            .unwrap_or_default();
        // The server itself may offer it, as ejabberd can.
        let candidates = std::iter::once(host).chain(items.into_iter().map(|i| i.jid));
        for jid in candidates.take(MAX_ITEMS + 1) {
            let info = self
                .query(jid.clone(), DiscoInfoQuery { node: None }.into())
                .await;
            let offers = matches!(&info, Ok(Some(e)) if DiscoInfoResult::try_from(e.clone())
                .is_ok_and(|r| r.features.contains(UPLOAD_NS)));
            if offers {
                tracing::info!(%server, service = %jid, "found the upload service");
                self.found
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(server, jid.clone());
                return Ok(jid);
            }
        }
        Err(FetchError::Permanent(
            "your server offers no HTTP upload service (XEP-0363) the gateway can find".into(),
        ))
    }
}

#[async_trait]
impl UploadSlots for Uploads {
    async fn slot(
        &self,
        user: &str,
        name: &str,
        size: u64,
        content_type: &str,
    ) -> Result<Slot, FetchError> {
        let service = self.service(user).await?;
        let request = SlotRequest {
            filename: name.to_owned(),
            size,
            content_type: Some(content_type.to_owned()),
        };
        let answer = self.query(service, request.into()).await.map_err(|e| {
            if e.starts_with("no answer") || e.contains("link") {
                FetchError::Temporary(format!("your server's upload service did not answer ({e})"))
            } else {
                FetchError::Permanent(format!("your server's upload service refused it ({e})"))
            }
        })?;
        let slot = answer
            .and_then(|e| SlotResult::try_from(e).ok())
            .ok_or_else(|| {
                FetchError::Permanent("your server's upload service gave no usable slot".into())
            })?;
        Ok(Slot {
            put: slot.put.url,
            headers: slot
                .put
                .headers
                .into_iter()
                .map(|h| (h.name.as_str().to_owned(), h.value))
                .collect(),
            get: slot.get.url,
        })
    }
}
