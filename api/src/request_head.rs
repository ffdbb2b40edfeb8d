//! Request heads checked as hyper would check them, and HTTP/1.1 message framing (where a
//! body ends), for [`crate::connection::Checked`], which applies them to every request of a
//! connection before hyper sees it.
//!
//! hyper answers a request it cannot parse by itself, before any handler or middleware runs:
//! `400` for a malformed request line or header, `431` for a head over its buffer or with more
//! than 100 headers, `414` for a target over 65,534 bytes. The same rules are applied here with
//! `httparse` (hyper's own parser), so that such a head is answered with the API's error
//! envelope ([`HeadError::response`]) instead of a bare status line.

use std::time::Duration;

use axum::http::{Method, StatusCode, Uri};
use runledger_contracts::error::ErrorEnvelope;
use runledger_contracts::ids::{CorrelationId, RequestId};

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

/// A whole request head that passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Its length in bytes (leading empty lines included).
    pub len: usize,
    /// Its body, if it has one.
    pub body: Option<Body>,
    /// The connection ends after this request (`Connection: close`, HTTP/1.0 without
    /// keep-alive): hyper reads no further request on it.
    pub closes: bool,
    /// A `HEAD` request: its response has no body.
    pub head_method: bool,
}

/// Checks the request head at the start of `bytes`: `Ok(None)` while it is not whole yet.
pub fn check(bytes: &[u8]) -> Result<Option<Head>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Partial) if bytes.len() >= MAX_HEAD_BYTES => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(e) => Err(HeadError::Malformed(e)),
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD_BYTES => Err(HeadError::TooLarge),
        Ok(httparse::Status::Complete(len)) => {
            // httparse completed, so method, path and version are present.
            let (Some(method), Some(target), Some(version)) =
                (request.method, request.path, request.version)
            else {
                return Err(HeadError::Malformed(httparse::Error::Token));
            };
            if target.len() > MAX_TARGET_BYTES {
                return Err(HeadError::TargetTooLong);
            }
            let method = Method::from_bytes(method.as_bytes()).map_err(HeadError::InvalidMethod)?;
            Uri::try_from(target).map_err(HeadError::InvalidTarget)?;
            let body = check_framing(version, request.headers)?;
            Ok(Some(Head {
                len,
                body,
                closes: closes(version, request.headers),
                head_method: method == Method::HEAD,
            }))
        }
    }
}

/// The body-framing rules hyper enforces on a request (RFC 9112 §6.3), and the body they give.
fn check_framing(version: u8, headers: &[httparse::Header<'_>]) -> Result<Option<Body>, HeadError> {
    let mut length: Option<u64> = None;
    let mut chunked = None;
    for header in headers {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            if version == 0 {
                return Err(HeadError::InvalidTransferEncoding);
            }
            chunked = Some(ends_in_chunked(header.value));
        } else if header.name.eq_ignore_ascii_case("content-length") && chunked.is_none() {
            let value = decimal(header.value).ok_or(HeadError::InvalidContentLength)?;
            if length.is_some_and(|previous| previous != value) {
                return Err(HeadError::InvalidContentLength);
            }
            length = Some(value);
        }
    }
    match (chunked, length) {
        (Some(false), _) => Err(HeadError::InvalidTransferEncoding),
        (Some(true), _) => Ok(Some(Body::ChunkSize)),
        (None, Some(n)) if n > 0 => Ok(Some(Body::Length(n))),
        (None, _) => Ok(None),
    }
}

fn ends_in_chunked(value: &[u8]) -> bool {
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.rsplit(',').next())
        .map(str::trim)
        .is_some_and(|e| e.eq_ignore_ascii_case("chunked"))
}

/// Whether the connection ends after this message, as hyper decides it.
fn closes(version: u8, headers: &[httparse::Header<'_>]) -> bool {
    let mut close = false;
    let mut keep_alive = false;
    for header in headers {
        if header.name.eq_ignore_ascii_case("connection") {
            for token in String::from_utf8_lossy(header.value).split(',') {
                let token = token.trim();
                close |= token.eq_ignore_ascii_case("close");
                keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        }
    }
    close || (version == 0 && !keep_alive)
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

/// What the head of one of hyper's responses says about the body after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseHead {
    /// Not whole yet.
    Partial,
    /// An interim `1xx` response (`100 Continue`) of `len` bytes: the final one follows.
    Interim(usize),
    /// A final response head of `len` bytes and its body (`None`: no body).
    Final(usize, Option<Body>),
    /// Not a response head (never from hyper): stop following the connection's answers.
    Unknown,
}

/// Reads the response head at the start of `bytes`; `head_method`: it answers a `HEAD`.
pub fn response_head(bytes: &[u8], head_method: bool) -> ResponseHead {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(bytes) {
        Ok(httparse::Status::Partial) if bytes.len() < MAX_HEAD_BYTES => ResponseHead::Partial,
        Ok(httparse::Status::Partial) | Err(_) => ResponseHead::Unknown,
        Ok(httparse::Status::Complete(len)) => {
            let status = response.code.unwrap_or(0);
            if (100..200).contains(&status) {
                return ResponseHead::Interim(len);
            }
            if head_method || status == 204 || status == 304 {
                return ResponseHead::Final(len, None);
            }
            let mut body = Body::UntilClose;
            for header in response.headers.iter() {
                if header.name.eq_ignore_ascii_case("transfer-encoding")
                    && ends_in_chunked(header.value)
                {
                    body = Body::ChunkSize;
                } else if header.name.eq_ignore_ascii_case("content-length")
                    && body == Body::UntilClose
                {
                    match decimal(header.value) {
                        Some(0) => return ResponseHead::Final(len, None),
                        Some(n) => body = Body::Length(n),
                        None => return ResponseHead::Unknown,
                    }
                }
            }
            ResponseHead::Final(len, Some(body))
        }
    }
}

/// Where a message body ends (RFC 9112 §6.3, §7.1), followed as its bytes go by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// This many bytes are left.
    Length(u64),
    /// A chunk-size line (with extensions) is next.
    ChunkSize,
    /// This many bytes of chunk data are left.
    ChunkData(u64),
    /// The CRLF after a chunk's data is next.
    ChunkEnd,
    /// The trailer section after the last chunk: fields, then an empty line.
    Trailers,
    /// Ends when the connection does (a response without a length).
    UntilClose,
}

/// What [`Body::step`] did with the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// This many bytes belong to the body, which goes on.
    Used(usize),
    /// This many bytes end the body.
    Done(usize),
    /// More bytes are needed before anything can be said.
    More,
    /// The bytes break chunked framing: the receiver refuses the body.
    Broken,
}

/// A chunk-size line longer than this is not one.
const MAX_CHUNK_LINE: usize = 4096;

impl Body {
    /// Consumes what belongs to the body at the start of `bytes`.
    pub fn step(&mut self, bytes: &[u8]) -> Step {
        if bytes.is_empty() {
            return match self {
                Body::Length(0) => Step::Done(0),
                _ => Step::More,
            };
        }
        match *self {
            Body::Length(left) => {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                let left = left - n as u64;
                *self = Body::Length(left);
                if left == 0 {
                    Step::Done(n)
                } else {
                    Step::Used(n)
                }
            }
            Body::ChunkSize => match httparse::parse_chunk_size(bytes) {
                Ok(httparse::Status::Complete((n, 0))) => {
                    *self = Body::Trailers;
                    Step::Used(n)
                }
                Ok(httparse::Status::Complete((n, size))) => {
                    *self = Body::ChunkData(size);
                    Step::Used(n)
                }
                Ok(httparse::Status::Partial) if bytes.len() < MAX_CHUNK_LINE => Step::More,
                Ok(httparse::Status::Partial) | Err(_) => Step::Broken,
            },
            Body::ChunkData(left) => {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                let left = left - n as u64;
                *self = if left == 0 {
                    Body::ChunkEnd
                } else {
                    Body::ChunkData(left)
                };
                Step::Used(n)
            }
            Body::ChunkEnd => match bytes {
                [b'\r'] => Step::More,
                [b'\r', b'\n', ..] => {
                    *self = Body::ChunkSize;
                    Step::Used(2)
                }
                _ => Step::Broken,
            },
            Body::Trailers => match bytes.iter().position(|&b| b == b'\n') {
                Some(0) => Step::Done(1),
                Some(1) if bytes[0] == b'\r' => Step::Done(2),
                Some(end) => Step::Used(end + 1),
                None if bytes.len() < MAX_HEAD_BYTES => Step::More,
                None => Step::Broken,
            },
            Body::UntilClose => Step::Used(bytes.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(head: &[u8]) -> Head {
        check(head).unwrap().unwrap()
    }

    #[test]
    fn heads_are_checked_as_hyper_would() {
        assert_eq!(
            check(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap(),
            None
        );
        let get = whole(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /next");
        assert_eq!(get.len, 34);
        assert_eq!(
            (get.body, get.closes, get.head_method),
            (None, false, false)
        );
        let post = whole(b"POST /v1/x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(post.body, Some(Body::Length(5)));
        let chunked = whole(b"POST /v1/x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(chunked.body, Some(Body::ChunkSize));
        assert!(whole(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").closes);
        assert!(whole(b"GET / HTTP/1.0\r\n\r\n").closes);
        assert!(!whole(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").closes);
        assert!(whole(b"HEAD / HTTP/1.1\r\n\r\n").head_method);
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
        let unfinished = vec![b'a'; MAX_HEAD_BYTES];
        let mut unfinished_head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        unfinished_head.extend_from_slice(&unfinished);
        assert_eq!(refused(&unfinished_head), "request_header_too_large");
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_TARGET_BYTES));
        assert_eq!(refused(long.as_bytes()), "uri_too_long");
    }

    /// Feeds `bytes` to `body` in pieces of `piece` bytes, as they may arrive; where it ended.
    fn follow(mut body: Body, bytes: &[u8], piece: usize) -> Option<usize> {
        let mut held = Vec::new();
        let mut at = 0;
        for part in bytes.chunks(piece) {
            held.extend_from_slice(part);
            loop {
                match body.step(&held) {
                    Step::Used(n) => {
                        held.drain(..n);
                        at += n;
                    }
                    Step::Done(n) => return Some(at + n),
                    Step::More => break,
                    Step::Broken => return None,
                }
            }
        }
        None
    }

    #[test]
    fn bodies_end_where_their_framing_says_in_any_split() {
        let chunked = b"5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: y\r\n\r\nGET";
        let end = chunked.len() - 3;
        for piece in [1, 2, 3, 7, chunked.len()] {
            assert_eq!(
                follow(Body::ChunkSize, chunked, piece),
                Some(end),
                "{piece}"
            );
            assert_eq!(
                follow(Body::Length(4), b"abcdGET", piece),
                Some(4),
                "{piece}"
            );
        }
        assert_eq!(follow(Body::ChunkSize, b"0\r\n\r\n", 1), Some(5));
        assert_eq!(follow(Body::ChunkSize, b"zz\r\n", 4), None);
        assert_eq!(follow(Body::ChunkSize, b"1\r\naXY", 7), None);
    }

    #[test]
    fn response_heads_say_where_their_bodies_end() {
        assert_eq!(
            response_head(b"HTTP/1.1 100 Continue\r\n\r\n", false),
            ResponseHead::Interim(25)
        );
        assert_eq!(
            response_head(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n", false),
            ResponseHead::Final(38, Some(Body::Length(7)))
        );
        assert_eq!(
            response_head(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n", true),
            ResponseHead::Final(38, None)
        );
        assert_eq!(
            response_head(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                false
            ),
            ResponseHead::Final(47, Some(Body::ChunkSize))
        );
        assert_eq!(
            response_head(b"HTTP/1.1 304 Not Modified\r\n\r\n", false),
            ResponseHead::Final(29, None)
        );
        assert_eq!(
            response_head(b"HTTP/1.1 200 OK\r\n", false),
            ResponseHead::Partial
        );
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
