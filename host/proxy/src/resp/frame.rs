//! The RESP wire format: client commands in ([`parse`]: arrays of bulk
//! strings, or an inline command line) and replies out ([`Reply`], encoded
//! as RESP2 or, after `HELLO 3`, RESP3). No I/O here.
//!
//! Where it sits in the request flow: the connection loop of
//! [`crate::resp`] hands its read buffer to [`parse`] and gets back whole
//! commands, or a [`ProtocolError`] after which the stream cannot be
//! resynchronised (the loop answers it and closes). Every length is checked
//! against [`FrameLimits`] when its header arrives, before any of its bytes
//! are buffered, so a client can make the proxy hold at most one command of
//! `proxy.max_batch_size` per connection.
//!
//! Written here rather than taken from a crate (`redis-protocol`): the
//! request side of RESP is only arrays of bulk strings plus inline lines,
//! the limits must be checked on each header before its payload is read,
//! and arguments are zero-copy slices of the read buffer (`Bytes`).

use bytes::{Buf, Bytes, BytesMut};

/// Limits on one command, checked while it is parsed.
#[derive(Clone, Copy, Debug)]
pub struct FrameLimits {
    /// Bytes of one argument (`proxy.max_value_size`).
    pub max_bulk: usize,
    /// Arguments of one command (`2 × proxy.max_batch_keys + 1`: an
    /// `MSET` of a full batch).
    pub max_args: usize,
    /// Bytes of all arguments of one command (`proxy.max_batch_size`).
    pub max_total: usize,
    /// Bytes of an inline command line ([`MAX_INLINE`]).
    pub max_inline: usize,
}

/// Longest inline command line, as Redis (`PROTO_INLINE_MAX_SIZE`).
pub const MAX_INLINE: usize = 64 * 1024;

/// Longest `*N` or `$N` header line (a 20-digit number and its sign).
const MAX_HEADER_LINE: usize = 32;

/// A frame the stream cannot be resynchronised after: answered with
/// `-ERR Protocol error: ...` and the connection closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl ProtocolError {
    fn new(message: impl Into<String>) -> Self {
        ProtocolError(message.into())
    }

    /// The error reply, Redis-worded.
    pub fn reply(&self) -> Reply {
        Reply::Error(format!("ERR Protocol error: {}", self.0))
    }
}

/// Takes the next complete command off `buf`: `Ok(None)` while it is
/// incomplete (nothing is consumed), `Ok(Some(args))` (possibly empty: an
/// empty line or `*0`, which get no reply).
pub fn parse(buf: &mut BytesMut, limits: &FrameLimits) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] != b'*' {
        return parse_inline(buf, limits);
    }
    let Some((count, mut at)) = header_line(buf, 0, b'*', "invalid multibulk length")? else { return Ok(None) };
    if count <= 0 {
        buf.advance(at);
        return Ok(Some(Vec::new()));
    }
    let count = count as usize;
    if count > limits.max_args {
        return Err(ProtocolError::new(format!("{count} arguments; the limit is {} (2 x proxy.max_batch_keys + 1)", limits.max_args)));
    }
    // First pass: check every header and find the end; no copy until the
    // whole command is there.
    let mut spans = Vec::with_capacity(count);
    let mut total = 0usize;
    for _ in 0..count {
        if at >= buf.len() {
            return Ok(None);
        }
        if buf[at] != b'$' {
            return Err(ProtocolError::new(format!("expected '$', got '{}'", buf[at].escape_ascii())));
        }
        let Some((len, data)) = header_line(buf, at, b'$', "invalid bulk length")? else { return Ok(None) };
        if len < 0 {
            return Err(ProtocolError::new("invalid bulk length"));
        }
        let len = len as usize;
        if len > limits.max_bulk {
            return Err(ProtocolError::new(format!("bulk of {len} bytes; the limit proxy.max_value_size is {} bytes", limits.max_bulk)));
        }
        total += len;
        if total > limits.max_total {
            return Err(ProtocolError::new(format!(
                "command of more than {} bytes; the limit proxy.max_batch_size is {} bytes",
                limits.max_total, limits.max_total
            )));
        }
        let end = data + len;
        if buf.len() < end + 2 {
            buf.reserve(end + 2 - buf.len());
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError::new("bulk string not followed by CRLF"));
        }
        spans.push(data..end);
        at = end + 2;
    }
    let frame = buf.split_to(at).freeze();
    Ok(Some(spans.into_iter().map(|r| frame.slice(r)).collect()))
}

/// The number on a `*N` / `$N` line starting at `at`: (number, index after
/// the line's CRLF); `None` while the line is incomplete.
fn header_line(buf: &[u8], at: usize, kind: u8, what: &str) -> Result<Option<(i64, usize)>, ProtocolError> {
    debug_assert_eq!(buf[at], kind);
    let window = &buf[at + 1..buf.len().min(at + 1 + MAX_HEADER_LINE)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        if window.len() >= MAX_HEADER_LINE {
            return Err(ProtocolError::new(what.to_string()));
        }
        return Ok(None);
    };
    if cr + 1 >= window.len() {
        return if window.len() >= MAX_HEADER_LINE { Err(ProtocolError::new(what.to_string())) } else { Ok(None) };
    }
    if window[cr + 1] != b'\n' {
        return Err(ProtocolError::new(what.to_string()));
    }
    let n =
        std::str::from_utf8(&window[..cr]).ok().and_then(|s| s.parse::<i64>().ok()).ok_or_else(|| ProtocolError::new(what.to_string()))?;
    Ok(Some((n, at + 1 + cr + 2)))
}

/// An inline command: one line, arguments split on blanks, `"..."` with
/// escapes and `'...'` quoting as `redis-cli` sends them.
fn parse_inline(buf: &mut BytesMut, limits: &FrameLimits) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let Some(nl) = buf.iter().take(limits.max_inline + 1).position(|&b| b == b'\n') else {
        if buf.len() > limits.max_inline {
            return Err(ProtocolError::new(format!("too big inline request (the limit is {} bytes)", limits.max_inline)));
        }
        return Ok(None);
    };
    let line = buf.split_to(nl + 1);
    let line = line.strip_suffix(b"\n").unwrap_or(&line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let args = split_args(line).ok_or_else(|| ProtocolError::new("unbalanced quotes in request"))?;
    if args.len() > limits.max_args {
        return Err(ProtocolError::new(format!("{} arguments; the limit is {}", args.len(), limits.max_args)));
    }
    Ok(Some(args))
}

/// Redis's `sdssplitargs`: `None` on unbalanced quotes.
fn split_args(line: &[u8]) -> Option<Vec<Bytes>> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            return Some(args);
        }
        let mut arg = Vec::new();
        let (mut in_dq, mut in_sq) = (false, false);
        loop {
            if in_dq {
                let c = *line.get(i)?;
                if c == b'\\'
                    && i + 3 < line.len()
                    && line[i + 1] == b'x'
                    && line[i + 2].is_ascii_hexdigit()
                    && line[i + 3].is_ascii_hexdigit()
                {
                    let hex = std::str::from_utf8(&line[i + 2..i + 4]).ok()?;
                    arg.push(u8::from_str_radix(hex, 16).ok()?);
                    i += 3;
                } else if c == b'\\' && i + 1 < line.len() {
                    i += 1;
                    arg.push(match line[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                } else if c == b'"' {
                    // The closing quote must be followed by a blank or the end.
                    if i + 1 < line.len() && !line[i + 1].is_ascii_whitespace() {
                        return None;
                    }
                    in_dq = false;
                    i += 1;
                    break;
                } else {
                    arg.push(c);
                }
            } else if in_sq {
                let c = *line.get(i)?;
                if c == b'\\' && i + 1 < line.len() && line[i + 1] == b'\'' {
                    i += 1;
                    arg.push(b'\'');
                } else if c == b'\'' {
                    if i + 1 < line.len() && !line[i + 1].is_ascii_whitespace() {
                        return None;
                    }
                    in_sq = false;
                    i += 1;
                    break;
                } else {
                    arg.push(c);
                }
            } else {
                match line.get(i) {
                    None => break,
                    Some(c) if c.is_ascii_whitespace() => break,
                    Some(b'"') => in_dq = true,
                    Some(b'\'') => in_sq = true,
                    Some(&c) => arg.push(c),
                }
            }
            i += 1;
        }
        if in_dq || in_sq {
            return None;
        }
        args.push(Bytes::from(arg));
    }
}

/// One reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`.
    Ok,
    Simple(&'static str),
    /// `-<text>`: the text starts with the error code (`ERR`, `NOAUTH`).
    Error(String),
    Int(i64),
    Bulk(Bytes),
    /// Nil: `$-1` in RESP2, `_` in RESP3.
    Null,
    Array(Vec<Reply>),
    /// A map in RESP3, a flat array of pairs in RESP2.
    Map(Vec<(Reply, Reply)>),
}

impl Reply {
    /// A bulk string of `text`.
    pub fn text(text: impl Into<String>) -> Reply {
        Reply::Bulk(Bytes::from(text.into()))
    }

    /// An `ERR` error.
    pub fn err(message: impl std::fmt::Display) -> Reply {
        Reply::Error(format!("ERR {message}"))
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// Appends the encoding of this reply to `out`.
    pub fn encode(&self, out: &mut Vec<u8>, resp3: bool) {
        match self {
            Reply::Ok => out.extend_from_slice(b"+OK\r\n"),
            Reply::Simple(s) => line(out, b'+', s.as_bytes()),
            Reply::Error(e) => {
                // An error line cannot hold CR or LF.
                let clean: Vec<u8> = e.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }).collect();
                line(out, b'-', &clean)
            }
            Reply::Int(n) => line(out, b':', n.to_string().as_bytes()),
            Reply::Bulk(b) => {
                line(out, b'$', b.len().to_string().as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Null if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::Null => out.extend_from_slice(b"$-1\r\n"),
            Reply::Array(items) => {
                line(out, b'*', items.len().to_string().as_bytes());
                for item in items {
                    item.encode(out, resp3);
                }
            }
            Reply::Map(pairs) => {
                if resp3 {
                    line(out, b'%', pairs.len().to_string().as_bytes());
                } else {
                    line(out, b'*', (pairs.len() * 2).to_string().as_bytes());
                }
                for (k, v) in pairs {
                    k.encode(out, resp3);
                    v.encode(out, resp3);
                }
            }
        }
    }
}

fn line(out: &mut Vec<u8>, kind: u8, text: &[u8]) {
    out.push(kind);
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: FrameLimits = FrameLimits { max_bulk: 16, max_args: 5, max_total: 40, max_inline: 32 };

    fn one(input: &[u8]) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        parse(&mut BytesMut::from(input), &LIMITS)
    }

    #[test]
    fn parses_arrays_inline_and_partial_input() {
        assert_eq!(one(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").unwrap().unwrap(), vec![Bytes::from("GET"), Bytes::from("k")]);
        for cut in 1..20 {
            assert_eq!(one(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"[..cut]).unwrap(), None, "{cut}");
        }
        assert_eq!(one(b"set a \"b c\\x41\" 'd'\r\n").unwrap().unwrap(), vec![Bytes::from("set"), "a".into(), "b cA".into(), "d".into()]);
        assert_eq!(one(b"\r\n").unwrap().unwrap(), Vec::<Bytes>::new());
        let mut two = BytesMut::from(&b"PING\r\nPING\n"[..]);
        assert!(parse(&mut two, &LIMITS).unwrap().is_some() && parse(&mut two, &LIMITS).unwrap().is_some() && two.is_empty());
    }

    #[test]
    fn refuses_what_is_over_a_limit_or_malformed() {
        for (input, want) in [
            (&b"*6\r\n"[..], "6 arguments"),
            (b"*1\r\n$17\r\n", "bulk of 17 bytes"),
            (b"*3\r\n$16\r\n0123456789abcdef\r\n$16\r\n0123456789abcdef\r\n$16\r\n", "proxy.max_batch_size"),
            (b"*1\r\n:1\r\n", "expected '$'"),
            (b"*x\r\n", "invalid multibulk length"),
            (b"*1\r\n$-5\r\n", "invalid bulk length"),
            (b"*1\r\n$1\r\nab\r\n", "CRLF"),
            (b"set \"a\r\n", "unbalanced quotes"),
            (&[b'a'; 40], "too big inline"),
            (b"*99999999999999999999999999999999999\r\n", "invalid multibulk length"),
        ] {
            let e = one(input).unwrap_err();
            assert!(e.0.contains(want), "{}: {e:?}", input.escape_ascii());
        }
    }

    #[test]
    fn encodes_resp2_and_resp3() {
        let mut out = Vec::new();
        Reply::Array(vec![Reply::Null, Reply::Int(-3), Reply::text("x"), Reply::Map(vec![(Reply::text("a"), Reply::Ok)])])
            .encode(&mut out, false);
        assert_eq!(out, b"*4\r\n$-1\r\n:-3\r\n$1\r\nx\r\n*2\r\n$1\r\na\r\n+OK\r\n");
        out.clear();
        Reply::Array(vec![Reply::Null, Reply::Map(vec![]), Reply::Error("ERR a\r\nb".into())]).encode(&mut out, true);
        assert_eq!(out, b"*3\r\n_\r\n%0\r\n-ERR a  b\r\n");
    }
}
