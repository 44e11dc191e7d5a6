//! The HTTP/1.1 wire format of proxy -> node exchanges, shared by the
//! pooled client ([`crate::h1`]) and the pipelined reads
//! ([`crate::pipeline`]): a request head ([`Request::encode_head`]), an
//! answer head and its framing ([`parse_head`], [`Framing`]), the
//! complete [`Answer`] with its end-to-end headers only, and taking an
//! answer off a connection's read buffer ([`take_front`]). No I/O here.
//!
//! Where it sits in the request flow: at the very bottom, under the
//! forwarder ([`crate::upstream`]) and the node pools of the board
//! ([`crate::nodes`]).

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

/// Largest response head accepted.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;

/// A complete response. `headers` holds the end-to-end headers only: the
/// hop-by-hop ones (`connection`, `keep-alive`, `transfer-encoding`) and
/// `date` are dropped while parsing, so the answer can be relayed as is.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Headers of a node's answer that describe the connection, not the value.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == http::header::CONNECTION
        || name == http::header::TRANSFER_ENCODING
        || name == http::header::DATE
        || name.as_str() == "keep-alive"
}

/// Answers up to this size (head and body) are copied out of the
/// connection's read buffer, which stays with the connection for the next
/// request; larger ones are split off it without a copy.
pub(crate) const COPY_OUT_MAX: usize = 16 * 1024;

/// Why a request got no complete answer.
#[derive(Debug)]
pub(crate) struct Failure {
    /// Nothing of the answer was received (safe to retry on a fresh
    /// connection when the connection was reused).
    pub(crate) before_answer: bool,
    pub(crate) reason: String,
}

/// What the head of an answer says about framing the rest.
pub(crate) struct Framing {
    pub(crate) status: StatusCode,
    pub(crate) head_len: usize,
    /// (name, byte range of the value in the read buffer) of every
    /// end-to-end header.
    pub(crate) headers: Vec<(HeaderName, std::ops::Range<usize>)>,
    pub(crate) close: bool,
    pub(crate) chunked: bool,
    pub(crate) length: Option<usize>,
}

impl Framing {
    /// The body's length when the head gives it: 0 for answers without a
    /// body (to HEAD, 1xx, 204, 304), else `Content-Length`. `None`: the
    /// body is chunked or runs to the end of the connection.
    pub(crate) fn body_length(&self, head_request: bool) -> Option<usize> {
        let no_body = head_request
            || self.status.is_informational()
            || self.status == StatusCode::NO_CONTENT
            || self.status == StatusCode::NOT_MODIFIED;
        if no_body {
            Some(0)
        } else if self.chunked {
            None
        } else {
            self.length
        }
    }

    /// The answer whose head starts `all` (the header values are slices of
    /// it) and whose body is `body`.
    pub(crate) fn into_answer(self, all: &Bytes, body: Bytes) -> Result<Answer, Failure> {
        let mut headers = HeaderMap::with_capacity(self.headers.len());
        for (name, range) in self.headers {
            let value = HeaderValue::from_maybe_shared(all.slice(range)).map_err(|_| bad("invalid header value"))?;
            headers.append(name, value);
        }
        Ok(Answer { status: self.status, headers, body })
    }
}

/// The first `total` bytes of `buf`, taken off it: copied out when small
/// (the buffer keeps its allocation for the next answer), split off when
/// large.
pub(crate) fn take_front(buf: &mut BytesMut, total: usize) -> Bytes {
    if total <= COPY_OUT_MAX {
        let front = Bytes::copy_from_slice(&buf[..total]);
        buf.advance(total);
        front
    } else {
        buf.split_to(total).freeze()
    }
}

/// One request to a node.
pub(crate) struct Request<'a> {
    pub(crate) method: &'a Method,
    pub(crate) path: &'a str,
    pub(crate) authority: &'a str,
    pub(crate) headers: &'a [(HeaderName, HeaderValue)],
    pub(crate) extra: &'a [(HeaderName, HeaderValue)],
    pub(crate) body: &'a [u8],
}

impl Request<'_> {
    pub(crate) fn encode_head(&self, head: &mut Vec<u8>) {
        head.extend_from_slice(self.method.as_str().as_bytes());
        head.push(b' ');
        head.extend_from_slice(self.path.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        head.extend_from_slice(self.authority.as_bytes());
        for (name, value) in self.headers.iter().chain(self.extra) {
            if *name == http::header::CONTENT_LENGTH
                || *name == http::header::HOST
                || *name == http::header::TRANSFER_ENCODING
                || *name == http::header::CONNECTION
            {
                continue;
            }
            head.extend_from_slice(b"\r\n");
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
        }
        if !self.body.is_empty() || matches!(*self.method, Method::PUT | Method::POST) {
            head.extend_from_slice(b"\r\ncontent-length: ");
            head.extend_from_slice(self.body.len().to_string().as_bytes());
        }
        head.extend_from_slice(b"\r\n\r\n");
    }
}

/// Parses the head at the start of `buf`: `None` while it is incomplete.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<Framing>, Failure> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut slots);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(bad(&format!("unparsable response: {e}"))),
    };
    let status = StatusCode::from_u16(parsed.code.unwrap_or(0)).map_err(|_| bad("invalid status code"))?;
    let base = buf.as_ptr() as usize;
    let mut framing =
        Framing { status, head_len, headers: Vec::with_capacity(parsed.headers.len()), close: false, chunked: false, length: None };
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad("invalid header name"))?;
        if name == http::header::CONNECTION {
            framing.close |= h.value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        } else if name == http::header::TRANSFER_ENCODING {
            framing.chunked |= h.value.to_ascii_lowercase().windows(7).any(|w| w == b"chunked");
        } else if name == http::header::CONTENT_LENGTH {
            let length = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<usize>().ok());
            if length.is_none() || (framing.length.is_some() && framing.length != length) {
                return Err(bad("invalid content-length"));
            }
            framing.length = length;
        }
        if is_hop_by_hop(&name) {
            continue;
        }
        // Values are slices of `buf` (an empty one may point anywhere).
        let start = if h.value.is_empty() { 0 } else { h.value.as_ptr() as usize - base };
        framing.headers.push((name, start..start + h.value.len()));
    }
    Ok(Some(framing))
}

pub(crate) fn bad(reason: &str) -> Failure {
    Failure { before_answer: false, reason: reason.to_string() }
}
