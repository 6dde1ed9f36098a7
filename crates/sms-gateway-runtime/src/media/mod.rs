//! Inbound media kept where the user can get them without the carrier's
//! credentials: [`LocalMedia`] (files served by the gateway's own HTTP
//! server at `{public_url}/media/{id}/{name}`) or an XEP-0363 upload
//! service on the user's server ([`UploadSink`], slots from `sms-xmpp`),
//! fetched by [`MediaService`] with the core's [`Fetcher`].

mod local;
mod service;
#[cfg(test)]
mod tests;
mod upload;

pub use local::LocalMedia;
pub use service::MediaService;
pub use sms_gateway_core::media::*;
pub use upload::{Slot, UploadSink, UploadSlots};

#[cfg(test)]
use local::is_id;
