//! The XEP-0114 link itself, on tokio-xmpp's `XmppStream`.
//!
//! tokio-xmpp's `Component` ends its stream on the first stanza that
//! xmpp-parsers cannot read and on a soft read timeout. We log in the same
//! way it does but keep the stream, so each of those is handled where it
//! belongs: a stanza we cannot read is answered with an error and the link
//! stays up; a soft timeout makes us ping; only I/O errors and the server's
//! stream end replace the link.

use futures_util::{SinkExt, StreamExt};
use std::borrow::Cow;
use std::io;
use std::time::Duration;
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio_xmpp::parsers::component::Handshake;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::xmlstream::{
    initiate_stream, FallibleStreamElement, ReadError, StreamElementError, StreamHeader, Timeouts,
    XmppStream, XmppStreamElement,
};
use tokio_xmpp::Stanza;

use crate::depth::DepthLimited;

/// A logged-in component stream. Reads pass [`DepthLimited`], which leaves
/// out XML nested deeper than the parser's recursion can take, over
/// [`QuickAck`].
pub type Link = XmppStream<BufStream<DepthLimited<QuickAck>>>;

/// The TCP connection to the server, acknowledging what it reads at once.
///
/// Servers write to components with Nagle's algorithm on (Prosody's
/// `tcp_nodelay` is off by default): a small write waits until the
/// previous one is acknowledged. Each batch the gateway writes ends with a
/// ping that the server writes back to it; the server's next write (the
/// user's next chat) then waited for our kernel's delayed ACK, up to 40 ms
/// (measured: unloaded round trips of 44 ms instead of 0.4). Linux's
/// `TCP_QUICKACK` after each read makes the ACK immediate; it is not
/// sticky, hence after every read. Elsewhere this is a plain `TcpStream`.
#[derive(Debug)]
pub struct QuickAck(TcpStream);

impl QuickAck {
    fn quickack(&self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let on: libc::c_int = 1;
            // SAFETY: a valid socket descriptor, an option of the size given.
            unsafe {
                libc::setsockopt(
                    self.0.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_QUICKACK,
                    std::ptr::addr_of!(on).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
    }
}

impl tokio::io::AsyncRead for QuickAck {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut this.0).poll_read(cx, buf);
        if matches!(r, std::task::Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.quickack();
        }
        r
    }
}

impl tokio::io::AsyncWrite for QuickAck {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// What reading the link gave.
pub enum Incoming {
    /// A stanza.
    Stanza(Box<Stanza>),
    /// A stanza xmpp-parsers could not read: its kind and header, to answer it.
    Invalid {
        /// `message`, `iq` or `presence`.
        kind: &'static str,
        /// Its `from`.
        from: Option<String>,
        /// Its `to`.
        to: Option<String>,
        /// Its `id`.
        id: Option<String>,
        /// Its `type`.
        type_: Option<String>,
        /// Why it could not be read.
        error: String,
    },
    /// The link has been silent for the read timeout: send something.
    Idle,
    /// Nothing for us (a nonza we do not use, a recoverable parse error).
    Nothing,
    /// The link is gone.
    Closed(String),
}

/// Connects to `server`, opens a stream to `domain` and performs the
/// XEP-0114 handshake with `secret`.
pub async fn login(
    server: &str,
    domain: &str,
    secret: &str,
    timeouts: Timeouts,
) -> Result<Link, crate::Error> {
    let tcp = TcpStream::connect(server)
        .await
        .map_err(|e| crate::Error::Connect(format!("{server}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let header = StreamHeader {
        to: Some(Cow::Owned(domain.to_owned())),
        from: None,
        id: None,
    };
    let mut pending = initiate_stream(
        BufStream::new(DepthLimited::new(QuickAck(tcp))),
        ns::COMPONENT,
        header,
        timeouts,
    )
    .await
    .map_err(|e| crate::Error::Login(format!("stream start failed: {e}")))?;
    let stream_id = pending
        .take_header()
        .id
        .map(|id| id.into_owned())
        .ok_or_else(|| crate::Error::Login("the server sent no stream id".into()))?;
    let mut link: Link = pending.skip_features();
    link.send(&XmppStreamElement::ComponentHandshake(
        Handshake::from_stream_id_and_password(stream_id, secret),
    ))
    .await
    .map_err(|e| crate::Error::Login(format!("handshake not sent: {e}")))?;
    loop {
        match link.next().await {
            Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::ComponentHandshake(_)))) => {
                return Ok(link)
            }
            Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::StreamError(e)))) => {
                return Err(crate::Error::Login(format!(
                    "the server refused the component: {e}"
                )))
            }
            Some(Ok(_)) => {
                return Err(crate::Error::Login(
                    "the server refused the handshake (wrong secret or domain?)".into(),
                ))
            }
            Some(Err(ReadError::SoftTimeout)) => continue,
            Some(Err(e)) => return Err(crate::Error::Login(format!("handshake failed: {e}"))),
            None => {
                return Err(crate::Error::Login(
                    "the server closed the stream during the handshake".into(),
                ))
            }
        }
    }
}

/// Reads the next thing from the link.
pub async fn read(link: &mut Link) -> Incoming {
    match link.next().await {
        None => Incoming::Closed("the server closed the connection".into()),
        Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::Stanza(st)))) => {
            Incoming::Stanza(Box::new(st))
        }
        Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::StreamError(e)))) => {
            Incoming::Closed(format!("stream error from the server: {e}"))
        }
        Some(Ok(FallibleStreamElement::Ok(_))) => Incoming::Nothing,
        Some(Ok(FallibleStreamElement::Err(StreamElementError::InvalidStanza {
            name,
            header,
            error,
            ..
        }))) => Incoming::Invalid {
            kind: match name.to_string().as_str() {
                "message" => "message",
                "iq" => "iq",
                _ => "presence",
            },
            from: header.from,
            to: header.to,
            id: header.id,
            type_: header.type_,
            error: error.to_string(),
        },
        Some(Ok(FallibleStreamElement::Err(e))) => {
            tracing::warn!(error = %e, "ignoring an element we cannot read");
            Incoming::Nothing
        }
        Some(Err(ReadError::SoftTimeout)) => Incoming::Idle,
        Some(Err(ReadError::ParseError(e))) => {
            tracing::warn!(error = %e, "ignoring an element we cannot read");
            Incoming::Nothing
        }
        Some(Err(ReadError::StreamFooterReceived)) => {
            Incoming::Closed("the server ended the stream".into())
        }
        Some(Err(ReadError::HardError(e))) => Incoming::Closed(format!("connection lost: {e}")),
    }
}

/// Writes a stanza.
pub async fn write(link: &mut Link, stanza: Stanza) -> io::Result<()> {
    feed(link, stanza).await?;
    flush(link).await
}

/// Queues a stanza without flushing: [`flush`] sends what was fed.
/// Messages are written by [`crate::wire::MessageXml`].
pub async fn feed(link: &mut Link, stanza: Stanza) -> io::Result<()> {
    match stanza {
        Stanza::Message(m) => link.feed(&crate::wire::MessageXml(&m)).await,
        other => link.feed(&XmppStreamElement::Stanza(other)).await,
    }
}

/// Sends everything fed so far.
pub async fn flush(link: &mut Link) -> io::Result<()> {
    SinkExt::<&XmppStreamElement>::flush(link).await
}

/// Ends our side of the stream and waits (at most `within`) for the server to
/// end its side, so the server sees an orderly close. Returns how many
/// messages with a body the server sent meanwhile: nobody can take them
/// any more, so the caller must make their loss known.
pub async fn close(link: &mut Link, within: Duration) -> usize {
    if let Err(e) = link.shutdown().await {
        tracing::debug!(error = %e, "closing the XMPP stream");
        return 0;
    }
    let mut dropped = 0;
    let drain = async {
        while let Some(item) = link.next().await {
            match item {
                Ok(FallibleStreamElement::Ok(XmppStreamElement::Stanza(Stanza::Message(m))))
                    if !m.bodies.is_empty() =>
                {
                    dropped += 1;
                }
                Err(ReadError::StreamFooterReceived) | Err(ReadError::HardError(_)) => break,
                _ => {}
            }
        }
    };
    let _ = tokio::time::timeout(within, drain).await;
    dropped
}

/// A fake XMPP server's side of the component handshake, for tests.
#[cfg(test)]
pub(crate) mod testing {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// Reads from `s` into `buf` until `buf` holds `pat`.
    pub(crate) async fn read_until(s: &mut TcpStream, buf: &mut String, pat: &str) {
        let mut chunk = [0u8; 4096];
        while !buf.contains(pat) {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before {pat:?}; got {buf:?}");
            buf.push_str(std::str::from_utf8(&chunk[..n]).unwrap());
        }
    }

    /// Accepts one component login (stream header, handshake) and returns
    /// the stream and an empty buffer for what comes next.
    pub(crate) async fn accept_login(listener: &TcpListener) -> (TcpStream, String) {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = String::new();
        read_until(&mut s, &mut buf, ">").await;
        s.write_all(b"<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='sms.example.com'>").await.unwrap();
        read_until(&mut s, &mut buf, "</handshake>").await;
        s.write_all(b"<handshake/>").await.unwrap();
        buf.clear();
        (s, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{accept_login, read_until};
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A server that sends a chat after our stream end, before its own:
    /// the chat cannot be handled, and `close` says so.
    #[tokio::test]
    async fn chats_that_arrive_while_closing_are_counted() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut s, mut buf) = accept_login(&listener).await;
            read_until(&mut s, &mut buf, "</stream:stream>").await;
            s.write_all(b"<message type='chat' from='alice@example.com/a' to='+15557654321@sms.example.com' id='late'><body>too late</body></message><message from='alice@example.com/a' to='+15557654321@sms.example.com'><composing xmlns='http://jabber.org/protocol/chatstates'/></message></stream:stream>").await.unwrap();
        });
        let mut link = login(&addr, "sms.example.com", "secret", Timeouts::tight())
            .await
            .unwrap();
        assert_eq!(close(&mut link, Duration::from_secs(5)).await, 1);
        server.await.unwrap();
    }

    /// A stanza the XML writer refuses (a form feed in its body) fails
    /// alone: the stream is intact and the next stanza goes through.
    #[tokio::test]
    async fn a_refused_stanza_leaves_the_stream_intact() {
        use tokio_xmpp::parsers::message::{Lang, Message};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut s, mut buf) = accept_login(&listener).await;
            read_until(&mut s, &mut buf, "</message>").await;
            buf
        });
        let mut link = login(&addr, "sms.example.com", "secret", Timeouts::tight())
            .await
            .unwrap();
        let to = tokio_xmpp::jid::Jid::new("alice@example.com").unwrap();
        let bad = Message::chat(to.clone()).with_body(Lang::new(), "form\u{c}feed".into());
        let err = feed(&mut link, Stanza::Message(bad)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        let good = Message::chat(to).with_body(Lang::new(), "after".into());
        feed(&mut link, Stanza::Message(good)).await.unwrap();
        flush(&mut link).await.unwrap();
        let written = server.await.unwrap();
        assert!(written.contains("<body>after</body>"), "{written}");
        assert!(!written.contains("form"), "{written}");
    }
}
