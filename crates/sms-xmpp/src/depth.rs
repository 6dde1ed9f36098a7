//! A bound on how deep the XML from the server may nest.
//!
//! Parsing a stanza into xmpp-parsers' types recurses once per level of
//! nesting, with large frames: measured here, a chat whose payload was
//! 10,000 elements deep (70 KB, well inside Prosody's 256 KiB stanza limit)
//! overflowed the gateway's stack and aborted the process, which any XMPP
//! user on any server could do. Bounding the recursion inside tokio-xmpp is
//! not possible from outside it, so the bytes are bounded before they reach
//! it: [`DepthLimited`] drops every element nested deeper than
//! [`MAX_DEPTH`] (with its content) from the stream. What is left is still
//! well-formed; the stanza keeps its body and shallower payloads, and the
//! link stays up.
//!
//! The scanner reads the server's serialisation of a stanza, which servers
//! produce themselves (no comments, processing instructions or DTDs, as RFC
//! 6120 §11.1 requires); it tracks tags, end tags, empty-element tags and
//! quoted attribute values, and nothing else.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The deepest element kept, counting `<stream:stream>` as 1 and a stanza
/// as 2: 30 levels of payload, more than any real extension uses.
pub const MAX_DEPTH: usize = 32;

/// The most read from the server at once.
const SCRATCH: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Character data (or between tags).
    Text,
    /// Just read `<`, not yet kept or dropped.
    Open,
    /// Inside a start tag; `slash` if the last byte was `/`.
    StartTag { slash: bool },
    /// Inside a quoted attribute value of a start tag.
    Quoted(u8),
    /// Inside an end tag.
    EndTag,
    /// Inside `<?…>` or `<!…>`, which change no depth.
    Other,
}

/// The scanner: feed it bytes, it appends the ones to keep.
#[derive(Debug)]
struct Scanner {
    state: State,
    /// Elements open around the current position.
    depth: usize,
    /// Whether the tag being read is kept.
    keep_tag: bool,
    /// Elements dropped so far (for the log).
    dropped: u64,
}

impl Scanner {
    fn new() -> Self {
        Scanner {
            state: State::Text,
            depth: 0,
            keep_tag: true,
            dropped: 0,
        }
    }

    /// Character data, quoted values and the rest of tags are passed in
    /// runs found with `memchr`, up to the next byte that changes state
    /// (#30: it was all byte by byte, a push per byte).
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Text => {
                    let rest = &input[i..];
                    let run = memchr::memchr(b'<', rest).unwrap_or(rest.len());
                    if self.depth <= MAX_DEPTH {
                        out.extend_from_slice(&rest[..run]);
                    }
                    i += run;
                    if i < input.len() {
                        self.state = State::Open;
                        i += 1;
                    }
                }
                State::Quoted(q) => {
                    let rest = &input[i..];
                    let (run, closed) = match memchr::memchr(q, rest) {
                        Some(p) => (p + 1, true),
                        None => (rest.len(), false),
                    };
                    if self.keep_tag {
                        out.extend_from_slice(&rest[..run]);
                    }
                    if closed {
                        self.state = State::StartTag { slash: false };
                    }
                    i += run;
                }
                // Inside a tag, up to the next byte that changes state: a
                // quote or `>` in a start tag, `>` in the others.
                State::StartTag { .. } | State::EndTag | State::Other => {
                    let rest = &input[i..];
                    let start = matches!(self.state, State::StartTag { .. });
                    let stop = if start {
                        memchr::memchr3(b'"', b'\'', b'>', rest)
                    } else {
                        memchr::memchr(b'>', rest)
                    };
                    match stop {
                        Some(0) => {
                            self.byte(rest[0], out);
                            i += 1;
                        }
                        found => {
                            // Not empty: `rest` is not, and 0 is above.
                            let run = found.unwrap_or(rest.len());
                            if self.keep_tag {
                                out.extend_from_slice(&rest[..run]);
                            }
                            if start {
                                // Whether the byte before a `>` is `/`.
                                self.state = State::StartTag {
                                    slash: rest[run - 1] == b'/',
                                };
                            }
                            i += run;
                        }
                    }
                }
                State::Open => {
                    self.byte(input[i], out);
                    i += 1;
                }
            }
        }
    }

    /// One byte, whatever the state: the scanner as it was written first,
    /// which the runs above must agree with (tested).
    fn byte(&mut self, b: u8, out: &mut Vec<u8>) {
        match self.state {
            State::Text => {
                if b == b'<' {
                    self.state = State::Open;
                } else if self.depth <= MAX_DEPTH {
                    out.push(b);
                }
            }
            State::Open => {
                let (state, keep) = match b {
                    b'/' => (State::EndTag, self.depth <= MAX_DEPTH),
                    b'?' | b'!' => (State::Other, self.depth <= MAX_DEPTH),
                    _ => {
                        let keep = self.depth < MAX_DEPTH;
                        if !keep && self.depth == MAX_DEPTH {
                            self.dropped += 1;
                        }
                        (State::StartTag { slash: false }, keep)
                    }
                };
                self.state = state;
                self.keep_tag = keep;
                if keep {
                    out.push(b'<');
                    out.push(b);
                }
            }
            State::StartTag { .. } | State::Quoted(_) | State::EndTag | State::Other => {
                if self.keep_tag {
                    out.push(b);
                }
                self.state = match (self.state, b) {
                    (State::StartTag { .. }, b'"' | b'\'') => State::Quoted(b),
                    (State::Quoted(q), _) if b == q => State::StartTag { slash: false },
                    (State::Quoted(q), _) => State::Quoted(q),
                    (State::StartTag { slash }, b'>') => {
                        if !slash {
                            self.depth += 1;
                        }
                        State::Text
                    }
                    (State::StartTag { .. }, _) => State::StartTag { slash: b == b'/' },
                    (State::EndTag, b'>') => {
                        self.depth = self.depth.saturating_sub(1);
                        State::Text
                    }
                    (State::Other, b'>') => State::Text,
                    (s, _) => s,
                };
            }
        }
    }
}

/// `xml` as [`DepthLimited`] passes it on: for the fuzz target, which
/// parses what the link would.
pub fn limit_depth(xml: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(xml.len());
    Scanner::new().feed(xml, &mut out);
    out
}

/// A byte stream whose reads leave out elements nested deeper than
/// [`MAX_DEPTH`]; writes pass through.
#[derive(Debug)]
pub struct DepthLimited<T> {
    inner: T,
    scanner: Scanner,
    scratch: Vec<u8>,
    kept: Vec<u8>,
}

impl<T> DepthLimited<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        DepthLimited {
            inner,
            scanner: Scanner::new(),
            scratch: Vec::new(),
            kept: Vec::new(),
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for DepthLimited<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            // What was kept but did not fit last time goes first.
            if !this.kept.is_empty() {
                let n = this.kept.len().min(buf.remaining());
                buf.put_slice(&this.kept[..n]);
                this.kept.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            this.scratch.resize(buf.remaining().min(SCRATCH), 0);
            let mut read = ReadBuf::new(&mut this.scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let n = read.filled().len();
                    if n == 0 {
                        return Poll::Ready(Ok(())); // end of stream
                    }
                    let before = this.scanner.dropped;
                    this.scanner.feed(&this.scratch[..n], &mut this.kept);
                    if this.scanner.dropped > before {
                        tracing::warn!(
                            max_depth = MAX_DEPTH,
                            "dropped XML nested too deep from a stanza (a hostile or broken sender)"
                        );
                    }
                    // Everything read may have been dropped: read on, never
                    // answer 0 bytes (that would mean the end of the stream).
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for DepthLimited<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// The runs give what the byte-by-byte scanner gives, for every chunking
    /// of inputs with deep nesting, quotes of both kinds holding `<` and
    /// `>`, empty-element tags and `<?…>` (#30).
    #[test]
    fn runs_agree_with_byte_by_byte() {
        let deep = "<a>".repeat(40) + "deep text" + &"</a>".repeat(40);
        let mut inputs = vec![
            deep,
            "<x a='1>2' b=\"<q>\"/><y>t&amp;u</y><?pi x?><!-- c --><z/>end".to_owned(),
            "<m><body>hello</body><a x='it''s'/></m>".to_owned(),
        ];
        // Pseudo-random mixes of the bytes that change state.
        let alphabet = b"<>/'\"?!ab =";
        let mut seed: u32 = 7;
        for _ in 0..200 {
            let mut v = String::new();
            for _ in 0..120 {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                v.push(alphabet[(seed >> 16) as usize % alphabet.len()] as char);
            }
            inputs.push(v);
        }
        for input in &inputs {
            let mut reference = Scanner::new();
            let mut want = Vec::new();
            for &b in input.as_bytes() {
                reference.byte(b, &mut want);
            }
            for chunk in [1, 2, 3, 7, 64, 4096] {
                let mut s = Scanner::new();
                let mut got = Vec::new();
                for part in input.as_bytes().chunks(chunk) {
                    s.feed(part, &mut got);
                }
                assert_eq!(got, want, "{input:?} in chunks of {chunk}");
                assert_eq!((s.depth, s.dropped), (reference.depth, reference.dropped));
            }
        }
    }

    fn filter(input: &str, chunk: usize) -> String {
        let mut s = Scanner::new();
        let mut out = Vec::new();
        for part in input.as_bytes().chunks(chunk) {
            s.feed(part, &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    fn nested(depth: usize) -> String {
        format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth))
    }

    #[test]
    fn shallow_xml_passes_unchanged_however_it_is_split() {
        let xml = "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' id='a>b' x=\"q'/>\"><message to='x' id=\"&lt;\"><body>1 &gt; 0 / 2</body><x xmlns='y'/><z a='/'/></message>";
        for chunk in [1, 2, 3, 7, 1000] {
            assert_eq!(filter(xml, chunk), xml, "chunk {chunk}");
        }
        let ok = nested(MAX_DEPTH);
        assert_eq!(filter(&ok, 5), ok);
    }

    #[test]
    fn elements_past_the_limit_are_left_out_and_the_rest_stays_well_formed() {
        let deep = format!("<s><m><body>kept</body>{}</m><m2/></s>", nested(50_000));
        for chunk in [1, 4096] {
            let out = filter(&deep, chunk);
            // <s> and <m> are levels 1 and 2; 30 <a> fit under them.
            let want = format!(
                "<s><m><body>kept</body>{}</m><m2/></s>",
                nested(MAX_DEPTH - 2)
            );
            assert_eq!(out, want, "chunk {chunk}");
            let _: tokio_xmpp::minidom::Element =
                out.replace("<s>", "<s xmlns='x'>").parse().unwrap();
        }
        // Text and attributes inside a dropped element go with it.
        let with_text = format!(
            "{}<b k='>'>text</b><c/>{}",
            "<a>".repeat(MAX_DEPTH),
            "</a>".repeat(MAX_DEPTH)
        );
        assert_eq!(filter(&with_text, 3), nested(MAX_DEPTH));
    }

    #[tokio::test]
    async fn reads_skip_what_was_dropped_and_end_at_the_end() {
        let deep = format!("<s>{}<t>after</t>", nested(10_000));
        let mut r = DepthLimited::new(deep.as_bytes());
        let mut out = String::new();
        let mut buf = [0u8; 7];
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            out.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        }
        assert_eq!(out, format!("<s>{}<t>after</t>", nested(MAX_DEPTH - 1)));
    }
}
