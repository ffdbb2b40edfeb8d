//! A connection whose every request head is checked before hyper sees it ([`Checked`]).
//!
//! hyper answers a head it cannot parse with a bare status line and an empty body, before any
//! handler runs. [`Checked`] sits between the socket and hyper and applies hyper's own rules
//! ([`crate::request_head::check`]) to each request head of the connection, the first and
//! every later one on a keep-alive connection:
//!
//! - it follows HTTP/1.1 message framing (RFC 9112 §6) in what the client sends: a head, then
//!   a body of `Content-Length` bytes or chunks (then the trailer section), then the next head.
//!   A head reaches hyper only once it is whole and passed; body bytes pass as they arrive, so
//!   pipelined requests work as before.
//! - it follows hyper's answers the same way (a response head, then a body by length or by
//!   chunks, none for `HEAD`, `204` and `304`; an interim `100 Continue` is not an answer), so
//!   it knows when every request handed to hyper so far has been answered.
//! - a head that breaks a rule is answered with the envelope once every earlier request of the
//!   connection has been answered, so the refusal follows their responses in order. Then the
//!   write side is shut and hyper reads the end of the stream, so it ends the connection.
//! - a head that started but is not whole within `header_read_timeout` of the connection going
//!   idle (opened, or its last request answered) is answered `408 request_timeout` the same
//!   way; a connection that sent nothing by then is closed without an answer.
//!
//! After a request that ends the connection (`Connection: close`, HTTP/1.0 without
//! keep-alive), or a chunked body that does not parse (hyper refuses that body itself), the
//! bytes that follow pass unchecked: hyper reads no further request on that connection.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::request_head::{self, Body, HeadError, ResponseHead, Step};

/// How much is read from the socket at once.
const READ_CHUNK: usize = 8192;

/// A TCP connection checked request by request; hand it to hyper.
pub struct Checked {
    stream: TcpStream,
    requests: Requests,
    answers: Answers,
    header_read_timeout: Duration,
    /// When the head being waited for is late, armed when the connection went idle after
    /// this many heads.
    deadline: Option<(u64, Pin<Box<Sleep>>)>,
    refusal: Option<Refusal>,
    /// The client ended its side of the stream.
    eof: bool,
}

impl Checked {
    pub fn new(stream: TcpStream, header_read_timeout: Duration) -> Self {
        Self {
            stream,
            requests: Requests::default(),
            answers: Answers::default(),
            header_read_timeout,
            deadline: None,
            refusal: None,
            eof: false,
        }
    }

    /// Every request handed to hyper has been answered.
    fn idle(&self) -> bool {
        self.answers.lost || self.answers.count >= self.requests.heads
    }

    fn refuse(&mut self, error: HeadError) {
        tracing::debug!(error = %error, "refused a request head");
        self.requests.phase = Phase::Refused;
        self.refusal = Some(Refusal {
            bytes: error.response(),
            written: 0,
            shut: false,
        });
    }

    /// Writes the refusal and shuts the write side; errors mean the client left, which is fine.
    fn poll_refusal(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(refusal) = self.refusal.as_mut() else {
            return Poll::Ready(());
        };
        while refusal.written < refusal.bytes.len() {
            match Pin::new(&mut self.stream).poll_write(cx, &refusal.bytes[refusal.written..]) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(n)) if n > 0 => refusal.written += n,
                Poll::Ready(_) => refusal.written = refusal.bytes.len(),
            }
        }
        if !refusal.shut {
            if Pin::new(&mut self.stream).poll_shutdown(cx).is_pending() {
                return Poll::Pending;
            }
            refusal.shut = true;
        }
        Poll::Ready(())
    }

    /// Reads more of the socket into the request buffer; `Ready(Ok(()))` also at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.requests.compact();
        let mut chunk = [0u8; READ_CHUNK];
        let mut read = ReadBuf::new(&mut chunk);
        match Pin::new(&mut self.stream).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {
                if read.filled().is_empty() {
                    self.eof = true;
                } else {
                    self.requests.buf.extend_from_slice(read.filled());
                }
                Poll::Ready(Ok(()))
            }
        }
    }

    /// Whether the head being waited for is late; arms the deadline when the connection is idle.
    fn late(&mut self, cx: &mut Context<'_>) -> bool {
        if !(self.idle() && self.requests.phase == Phase::Head) {
            self.deadline = None;
            return false;
        }
        let heads = self.requests.heads;
        if self
            .deadline
            .as_ref()
            .is_none_or(|(armed, _)| *armed != heads)
        {
            let sleep = Box::pin(tokio::time::sleep(self.header_read_timeout));
            self.deadline = Some((heads, sleep));
        }
        self.deadline
            .as_mut()
            .is_some_and(|(_, sleep)| sleep.as_mut().poll(cx).is_ready())
    }
}

/// The refusal being written.
struct Refusal {
    bytes: Vec<u8>,
    written: usize,
    shut: bool,
}

/// Where the client's bytes are in their framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Head,
    Body(Body),
    /// Not followed any more: everything passes.
    Unchecked,
    /// A head was refused: nothing more reaches hyper.
    Refused,
}

/// What the client sent, and how much of it hyper may have.
struct Requests {
    buf: Vec<u8>,
    /// Bytes of `buf` already given to hyper.
    given: usize,
    /// Bytes of `buf` hyper may have (`given..released` are waiting for hyper).
    released: usize,
    phase: Phase,
    /// The current request ends the connection.
    closes: bool,
    /// Request heads handed to hyper.
    heads: u64,
    /// For each request not answered yet: whether it is a `HEAD` (its answer has no body).
    head_methods: VecDeque<bool>,
}

impl Default for Requests {
    fn default() -> Self {
        Self {
            buf: Vec::with_capacity(READ_CHUNK),
            given: 0,
            released: 0,
            phase: Phase::Head,
            closes: false,
            heads: 0,
            head_methods: VecDeque::new(),
        }
    }
}

impl Requests {
    /// Follows the framing through what was read; an error is a head hyper would refuse.
    fn advance(&mut self) -> Result<(), HeadError> {
        loop {
            let pending = &self.buf[self.released..];
            match self.phase {
                Phase::Refused => return Ok(()),
                Phase::Unchecked => {
                    self.released = self.buf.len();
                    return Ok(());
                }
                Phase::Head => {
                    if pending.is_empty() {
                        return Ok(());
                    }
                    let Some(head) = request_head::check(pending)? else {
                        return Ok(());
                    };
                    self.released += head.len;
                    self.heads += 1;
                    self.head_methods.push_back(head.head_method);
                    self.closes = head.closes;
                    match head.body {
                        Some(body) => self.phase = Phase::Body(body),
                        None => self.end_message(),
                    }
                }
                Phase::Body(mut body) => match body.step(pending) {
                    Step::Used(n) => {
                        self.released += n;
                        self.phase = Phase::Body(body);
                    }
                    Step::Done(n) => {
                        self.released += n;
                        self.end_message();
                    }
                    Step::More => return Ok(()),
                    Step::Broken => self.phase = Phase::Unchecked,
                },
            }
        }
    }

    fn end_message(&mut self) {
        self.phase = if self.closes {
            Phase::Unchecked
        } else {
            Phase::Head
        };
    }

    /// Bytes of a head that started and is not whole yet.
    fn partial_head(&self) -> bool {
        self.buf[self.released..]
            .iter()
            .any(|&b| b != b'\r' && b != b'\n')
    }

    /// Drops what hyper already has.
    fn compact(&mut self) {
        if self.given > 0 {
            self.buf.drain(..self.given);
            self.released -= self.given;
            self.given = 0;
        }
    }
}

/// What hyper wrote, followed to count its final answers.
#[derive(Default)]
struct Answers {
    /// Written bytes not followed yet (part of a head or of a chunk-size line).
    pending: Vec<u8>,
    /// The body being written, if any.
    body: Option<Body>,
    /// Final answers written whole.
    count: u64,
    /// What hyper wrote did not follow HTTP framing (never expected): stop waiting on it.
    lost: bool,
}

impl Answers {
    fn wrote(&mut self, bytes: &[u8], head_methods: &mut VecDeque<bool>) {
        if self.lost {
            return;
        }
        if self.pending.is_empty() {
            let used = self.follow(bytes, head_methods);
            self.pending.extend_from_slice(&bytes[used..]);
        } else {
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(bytes);
            let used = self.follow(&pending, head_methods);
            pending.drain(..used);
            self.pending = pending;
        }
        if self.lost {
            self.pending = Vec::new();
        }
    }

    /// Follows whole parts of `bytes`; how many bytes it used.
    fn follow(&mut self, bytes: &[u8], head_methods: &mut VecDeque<bool>) -> usize {
        let mut at = 0;
        while at < bytes.len() && !self.lost {
            let rest = &bytes[at..];
            if let Some(mut body) = self.body {
                match body.step(rest) {
                    Step::Used(0) | Step::More => return at,
                    Step::Used(n) => {
                        self.body = Some(body);
                        at += n;
                    }
                    Step::Done(n) => {
                        self.body = None;
                        self.count += 1;
                        at += n;
                    }
                    Step::Broken => self.lost = true,
                }
                continue;
            }
            let head_method = head_methods.front().copied().unwrap_or(false);
            match request_head::response_head(rest, head_method) {
                ResponseHead::Partial => return at,
                ResponseHead::Unknown => self.lost = true,
                ResponseHead::Interim(len) => at += len,
                ResponseHead::Final(len, body) => {
                    at += len;
                    head_methods.pop_front();
                    match body {
                        Some(body) => self.body = Some(body),
                        None => self.count += 1,
                    }
                }
            }
        }
        at
    }
}

impl AsyncRead for Checked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let requests = &mut this.requests;
            if requests.given < requests.released {
                let ready = &requests.buf[requests.given..requests.released];
                let n = ready.len().min(out.remaining());
                out.put_slice(&ready[..n]);
                requests.given += n;
                return Poll::Ready(Ok(()));
            }
            if this.refusal.is_some() {
                // The refusal follows the answers to every earlier request: hyper polls
                // again once it has written them.
                if !this.idle() {
                    return Poll::Pending;
                }
                std::task::ready!(this.poll_refusal(cx));
                return Poll::Ready(Ok(()));
            }
            if let Err(error) = requests.advance() {
                this.refuse(error);
                continue;
            }
            if requests.given < requests.released {
                continue;
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.late(cx) {
                if this.requests.partial_head() {
                    this.refuse(HeadError::Timeout(this.header_read_timeout));
                    continue;
                }
                // Nothing was sent: the end of the stream makes hyper close the connection.
                this.eof = true;
                return Poll::Ready(Ok(()));
            }
            std::task::ready!(this.poll_fill(cx))?;
        }
    }
}

impl AsyncWrite for Checked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = std::task::ready!(Pin::new(&mut this.stream).poll_write(cx, buf))?;
        this.answers
            .wrote(&buf[..written], &mut this.requests.head_methods);
        Poll::Ready(Ok(written))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = std::task::ready!(Pin::new(&mut this.stream).poll_write_vectored(cx, bufs))?;
        let mut left = written;
        for buf in bufs {
            if left == 0 {
                break;
            }
            let n = buf.len().min(left);
            this.answers
                .wrote(&buf[..n], &mut this.requests.head_methods);
            left -= n;
        }
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.refusal.as_ref().is_some_and(|r| r.shut) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}
