//! What can go wrong on the link, for logs and for callers of this crate.

/// Why the XMPP process lost (or could not make) its link, or could not
/// write a stanza. Every kind is followed by a reconnect with backoff,
/// except [`Error::Stanza`], which drops that one stanza.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server's component port could not be reached.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The server refused the component (wrong secret or domain), or the
    /// handshake failed.
    #[error("login failed: {0}")]
    Login(String),
    /// Writing to the link failed.
    #[error("write failed: {0}")]
    Write(String),
    /// The link broke, the server closed it, or it went silent.
    #[error("{0}")]
    Lost(String),
    /// A stanza could not be built from what the Gateway asked (a bug's
    /// safety net: everything is cleaned first).
    #[error("cannot build a stanza: {0}")]
    Stanza(String),
    /// The Gateway's channel is closed: the component is going away.
    #[error("the gateway channel is closed")]
    GatewayGone,
}
