//! The first request head of a connection, read and checked before hyper sees it, so that what
//! hyper would answer with a bare status line and an empty body gets the API's error envelope.
//!
//! hyper answers a request it cannot parse by itself, before any handler or middleware runs:
//! `400` for a malformed request line or header, `431` for a head over its buffer or with more
//! than 100 headers, `414` for a target over 65,534 bytes. Here the same rules are applied with
//! `httparse` (hyper's own parser) to the bytes of a connection's first request; a head that
//! breaks one is answered with the envelope (fresh request and correlation ids) and the
//! connection is closed. A head that passes is handed to hyper together with every byte read so
//! far ([`Prefixed`]), so hyper parses exactly what the client sent.
//!
//! Only the first request of a connection is checked: a malformed head in a later request on
//! the same keep-alive connection is still answered by hyper with a bare status. Clients that
//! send a bad head usually send it first (each new connection is checked).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{Method, StatusCode, Uri};
use runledger_contracts::error::ErrorEnvelope;
use runledger_contracts::ids::{CorrelationId, RequestId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// hyper's default read buffer: a head that does not fit is `431` there too.
pub const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;
/// hyper's default number of headers; one more is `431`.
pub const MAX_HEADERS: usize = 100;
/// hyper's longest request target; a longer one is `414`.
pub const MAX_TARGET_BYTES: usize = u16::MAX as usize - 1;

/// Why a request head is refused; each maps to the status hyper would have answered.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("the request line or a header is malformed: {0}")]
    Malformed(#[source] httparse::Error),
    #[error("the request target is not a valid URI")]
    InvalidTarget(#[source] axum::http::uri::InvalidUri),
    #[error("the request method is not a valid token")]
    InvalidMethod(#[source] axum::http::method::InvalidMethod),
    #[error("the Content-Length header is not one decimal length")]
    InvalidContentLength,
    #[error("Transfer-Encoding is only allowed with HTTP/1.1, ending in `chunked`")]
    InvalidTransferEncoding,
    #[error("the request head is over {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} headers")]
    TooLarge,
    #[error("the request target is over {MAX_TARGET_BYTES} bytes")]
    TargetTooLong,
    #[error("the request head did not arrive within {0:?}")]
    Timeout(Duration),
}

impl HeadError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::TargetTooLong => StatusCode::URI_TOO_LONG,
            Self::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The envelope's stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge => "request_header_too_large",
            Self::TargetTooLong => "uri_too_long",
            Self::Timeout(_) => "request_timeout",
            _ => "malformed_request",
        }
    }

    /// The whole HTTP response: status line, headers (ids, `connection: close`) and envelope.
    pub fn response(&self) -> Vec<u8> {
        let request_id = RequestId::generate();
        let correlation_id = CorrelationId::generate();
        let envelope = ErrorEnvelope::new(self.code(), self.to_string()).with_ids(
            Some(request_id.to_string()),
            Some(correlation_id.to_string()),
        );
        let body = serde_json::to_vec(&envelope).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
        let status = self.status();
        let mut response = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             x-request-id: {request_id}\r\nx-correlation-id: {correlation_id}\r\n\
             connection: close\r\n\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len(),
        )
        .into_bytes();
        response.extend_from_slice(&body);
        response
    }
}

/// What reading the first head found.
pub enum FirstHead {
    /// A head hyper will parse; every byte read so far (the head and what followed it).
    Accepted(Vec<u8>),
    /// The client closed the connection, or sent nothing before the timeout: nothing to answer.
    Gone,
    /// A head hyper would have refused.
    Refused(HeadError),
}

/// Reads the connection's first request head (within `timeout`) and checks it.
pub async fn read_first(stream: &mut TcpStream, timeout: Duration) -> FirstHead {
    let mut buf = Vec::with_capacity(8192);
    let read = async {
        let mut chunk = [0u8; 8192];
        loop {
            let n = match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            match check(&buf) {
                Ok(true) => return Some(Ok(())),
                Ok(false) if buf.len() >= MAX_HEAD_BYTES => return Some(Err(HeadError::TooLarge)),
                Ok(false) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Some(Ok(()))) => FirstHead::Accepted(buf),
        Ok(Some(Err(e))) => FirstHead::Refused(e),
        Ok(None) => FirstHead::Gone,
        Err(_) if buf.is_empty() => FirstHead::Gone,
        Err(_) => FirstHead::Refused(HeadError::Timeout(timeout)),
    }
}

/// Writes the refusal and closes the connection; errors mean the client left, which is fine.
pub async fn refuse(mut stream: TcpStream, error: &HeadError) {
    tracing::debug!(error = %error, "refused a request head");
    let _ = stream.write_all(&error.response()).await;
    let _ = stream.shutdown().await;
}

/// `Ok(true)`: a whole head hyper accepts; `Ok(false)`: not whole yet.
pub fn check(bytes: &[u8]) -> Result<bool, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Partial) => Ok(false),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(e) => Err(HeadError::Malformed(e)),
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD_BYTES => Err(HeadError::TooLarge),
        Ok(httparse::Status::Complete(_)) => {
            // httparse completed, so method, path and version are present.
            let (Some(method), Some(target), Some(version)) =
                (request.method, request.path, request.version)
            else {
                return Err(HeadError::Malformed(httparse::Error::Token));
            };
            if target.len() > MAX_TARGET_BYTES {
                return Err(HeadError::TargetTooLong);
            }
            Method::from_bytes(method.as_bytes()).map_err(HeadError::InvalidMethod)?;
            Uri::try_from(target).map_err(HeadError::InvalidTarget)?;
            check_framing(version, request.headers)?;
            Ok(true)
        }
    }
}

/// The body-framing rules hyper enforces on a request (RFC 9112 §6.3).
fn check_framing(version: u8, headers: &[httparse::Header<'_>]) -> Result<(), HeadError> {
    let mut length: Option<u64> = None;
    let mut chunked = None;
    for header in headers {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            if version == 0 {
                return Err(HeadError::InvalidTransferEncoding);
            }
            let last = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.rsplit(',').next())
                .map(str::trim);
            chunked = Some(last.is_some_and(|e| e.eq_ignore_ascii_case("chunked")));
        } else if header.name.eq_ignore_ascii_case("content-length") && chunked.is_none() {
            let value = decimal(header.value).ok_or(HeadError::InvalidContentLength)?;
            if length.is_some_and(|previous| previous != value) {
                return Err(HeadError::InvalidContentLength);
            }
            length = Some(value);
        }
    }
    match chunked {
        Some(false) => Err(HeadError::InvalidTransferEncoding),
        _ => Ok(()),
    }
}

/// Digits only (no sign, no spaces), as hyper reads a length.
fn decimal(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
            .flatten()
    })
}

/// A connection whose first bytes were already read: they are read again first.
pub struct Prefixed {
    prefix: Vec<u8>,
    read: usize,
    stream: TcpStream,
}

impl Prefixed {
    pub fn new(prefix: Vec<u8>, stream: TcpStream) -> Self {
        Self {
            prefix,
            read: 0,
            stream,
        }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read < this.prefix.len() {
            let rest = &this.prefix[this.read..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.read += n;
            if this.read == this.prefix.len() {
                this.prefix = Vec::new();
                this.read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_checked_as_hyper_would() {
        assert!(!check(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap());
        assert!(check(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap());
        assert!(
            check(b"POST /v1/x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n")
                .unwrap()
        );
        assert!(check(b"POST /v1/x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").unwrap());
        let refused = |head: &[u8]| check(head).unwrap_err().code();
        assert_eq!(refused(b"NOT A REQUEST\r\n\r\n"), "malformed_request");
        assert_eq!(refused(b"GET /\x01 HTTP/1.1\r\n\r\n"), "malformed_request");
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n"),
            "malformed_request"
        );
        assert_eq!(refused(b"GET / HTTP/2.0\r\n\r\n"), "malformed_request");
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            "malformed_request"
        );
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n"),
            "malformed_request"
        );
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            "malformed_request"
        );
        assert_eq!(
            refused(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "malformed_request"
        );
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(refused(&many), "request_header_too_large");
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_TARGET_BYTES));
        assert_eq!(refused(long.as_bytes()), "uri_too_long");
    }

    #[test]
    fn a_refusal_is_a_whole_response_with_the_envelope() {
        let response = String::from_utf8(HeadError::TooLarge.response()).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(head.contains("connection: close"), "{head}");
        let envelope: ErrorEnvelope = serde_json::from_str(body).unwrap();
        assert_eq!(envelope.error.code, "request_header_too_large");
        assert!(envelope.error.request_id.is_some() && envelope.correlation_id.is_some());
    }
}
