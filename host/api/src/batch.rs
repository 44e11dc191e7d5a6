//! The batch wire format: many keys in one round trip, used by clients and by
//! the proxy to fan multi-gets and multi-puts out to nodes. This module is
//! the ONLY implementation (encode and decode of all four messages); the
//! proxy reuses it.
//!
//! Endpoints: `POST /v1/batch/get` and `POST /v1/batch/put`, request and
//! response bodies `application/vnd.shardgate.batch`. Both answer 200 with a
//! response message holding one result per request entry, in request order.
//!
//! # Format version 1
//!
//! All integers are big-endian. Every message starts with two bytes:
//! `u8 version` (= 1) and `u8 kind`, then `u32 count`.
//!
//! | kind | message | each of `count` entries |
//! |---|---|---|
//! | 1 | get request | `u16 key_len`, key |
//! | 2 | get response | `u8 status`: 0 miss, 1 hit, 2 omitted; a hit continues with `u64 version`, `u8 ct_len`, content type, `u32 value_len`, value |
//! | 3 | put request | `u8 condition`: 0 always, 1 if absent, 2 if present, 3 if version in (then `u8 n`, `n` x `u64`); `u32 ttl_seconds` (0 = node default); `u16 key_len`, key; `u8 ct_len`, content type; `u32 value_len`, value |
//! | 4 | put response | `u8 status`: 0 created, 1 replaced, 2 condition failed; created and replaced continue with `u64 version` |
//!
//! "Omitted" means the value exists but did not fit in the response
//! (`node.max_batch_size`): fetch it with a single GET. An empty content type
//! means none was given (served as `application/octet-stream`).
//!
//! # Limits
//!
//! Decoders take the node's [`Limits`] and reject, naming the limit: more
//! than `node.max_batch_keys` entries, a message larger than
//! `node.max_batch_size` (request messages only), a key longer than
//! `node.max_key_size`, a value larger than `node.max_value_size`, a TTL
//! above `node.max_ttl`. Truncated or trailing bytes, an unknown version or
//! kind are format errors. Decoded keys and values are zero-copy slices of
//! the input buffer.

use bytes::{BufMut, Bytes, BytesMut};
use http::StatusCode;

use crate::condition::WriteCondition;
use crate::limits::{Limits, MAX_CONTENT_TYPE_LEN};

/// The format version this module writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Media type of batch bodies.
pub const CONTENT_TYPE: &str = "application/vnd.shardgate.batch";

const KIND_GET_REQUEST: u8 = 1;
const KIND_GET_RESPONSE: u8 = 2;
const KIND_PUT_REQUEST: u8 = 3;
const KIND_PUT_RESPONSE: u8 = 4;
const HEADER_LEN: usize = 6;

/// A batch message that cannot be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch is empty; expected at least the 6-byte header")]
    Empty,
    #[error("unsupported batch format version {0}; this node speaks version 1")]
    UnsupportedVersion(u8),
    #[error("batch message kind {found} where {expected} was expected")]
    WrongKind { found: u8, expected: &'static str },
    #[error("batch is truncated at byte {offset} (reading {what})")]
    Truncated { offset: usize, what: &'static str },
    #[error("batch has {extra} bytes after its last entry")]
    TrailingBytes { extra: usize },
    #[error("batch has {count} entries; the limit {limit_name} is {limit}")]
    TooManyEntries { count: usize, limit: usize, limit_name: String },
    #[error("batch is {size} bytes; the limit {limit_name} is {limit} bytes")]
    TooLarge { size: usize, limit: usize, limit_name: String },
    #[error("batch entry {index}: key is {size} bytes; the limit {limit_name} is {limit} bytes")]
    KeyTooLong { index: usize, size: usize, limit: usize, limit_name: String },
    #[error("batch entry {index}: key must not be empty")]
    EmptyKey { index: usize },
    #[error("batch entry {index}: value is {size} bytes; the limit {limit_name} is {limit} bytes")]
    ValueTooLarge { index: usize, size: usize, limit: usize, limit_name: String },
    #[error("batch entry {index}: content type is {size} bytes; the limit is 255 bytes")]
    ContentTypeTooLong { index: usize, size: usize },
    #[error("batch entry {index}: ttl {secs}s is above the limit {limit_name} ({limit}s)")]
    TtlTooLong { index: usize, secs: u64, limit: u64, limit_name: String },
    #[error("batch entry {index}: unknown {what} code {code}")]
    UnknownCode { index: usize, what: &'static str, code: u8 },
    #[error("batch entry {index}: If-Match lists {count} versions; at most 255 fit a batch entry")]
    TooManyVersions { index: usize, count: usize },
}

impl BatchError {
    /// 413 for size limits, 400 for everything else.
    pub fn status(&self) -> StatusCode {
        match self {
            BatchError::TooManyEntries { .. }
            | BatchError::TooLarge { .. }
            | BatchError::KeyTooLong { .. }
            | BatchError::ValueTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// One entry of a get response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GetResult {
    Hit {
        version: u64,
        content_type: Bytes,
        value: Bytes,
    },
    Miss,
    /// Stored, but the response reached `node.max_batch_size` first.
    Omitted,
}

/// One entry of a put request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutItem {
    pub key: Bytes,
    pub condition: WriteCondition,
    /// `None`: the node's `default_ttl`.
    pub ttl_seconds: Option<u32>,
    /// Empty: none given.
    pub content_type: Bytes,
    pub value: Bytes,
}

/// One entry of a put response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutResult {
    Created { version: u64 },
    Replaced { version: u64 },
    ConditionFailed,
}

/// What the framing errors of encoding name as their limit.
const FORMAT_LIMIT: &str = "the batch format's";

fn header(buf: &mut BytesMut, kind: u8, count: usize) {
    buf.put_u8(FORMAT_VERSION);
    buf.put_u8(kind);
    buf.put_u32(count as u32);
}

fn check_count(count: usize, limits: Option<&Limits>) -> Result<(), BatchError> {
    let limit = limits.map_or(u32::MAX as usize, |l| l.max_batch_keys);
    if count > limit {
        let limit_name = limits.map_or_else(|| FORMAT_LIMIT.to_string(), |l| l.name("max_batch_keys"));
        return Err(BatchError::TooManyEntries { count, limit, limit_name });
    }
    Ok(())
}

/// Encodes a get request. Fails on a key that cannot be framed (empty or
/// over 65535 bytes) or more than `u32::MAX` keys.
pub fn encode_get_request<K: AsRef<[u8]>>(keys: &[K]) -> Result<Bytes, BatchError> {
    check_count(keys.len(), None)?;
    let size: usize = keys.iter().map(|k| 2 + k.as_ref().len()).sum();
    let mut buf = BytesMut::with_capacity(HEADER_LEN + size);
    header(&mut buf, KIND_GET_REQUEST, keys.len());
    for (index, key) in keys.iter().enumerate() {
        let key = key.as_ref();
        put_key(&mut buf, index, key)?;
    }
    Ok(buf.freeze())
}

fn put_key(buf: &mut BytesMut, index: usize, key: &[u8]) -> Result<(), BatchError> {
    if key.is_empty() {
        return Err(BatchError::EmptyKey { index });
    }
    let len = u16::try_from(key.len()).map_err(|_| BatchError::KeyTooLong {
        index,
        size: key.len(),
        limit: u16::MAX as usize,
        limit_name: FORMAT_LIMIT.to_string(),
    })?;
    buf.put_u16(len);
    buf.put_slice(key);
    Ok(())
}

/// Decodes a get request into its keys (slices of `buf`).
pub fn decode_get_request(buf: Bytes, limits: &Limits) -> Result<Vec<Bytes>, BatchError> {
    check_request_size(&buf, limits)?;
    let mut r = Reader::new(buf);
    let count = r.header(KIND_GET_REQUEST, "a get request (kind 1)", limits)?;
    // Each entry takes at least 3 bytes: never reserve more than the input can hold.
    let mut keys = Vec::with_capacity(count.min(r.remaining() / 3));
    for index in 0..count {
        keys.push(r.key(index, limits)?);
    }
    r.finish()?;
    Ok(keys)
}

/// Builds a get response entry by entry without copying values twice; once
/// the message would exceed `max_size`, further hits are written as
/// [`GetResult::Omitted`].
pub struct GetResponseEncoder {
    buf: BytesMut,
    max_size: usize,
    written: usize,
    count: usize,
}

impl GetResponseEncoder {
    /// `count` entries will follow; `max_size` bounds the message.
    pub fn new(count: usize, max_size: usize) -> Self {
        let mut buf = BytesMut::with_capacity(HEADER_LEN + count);
        header(&mut buf, KIND_GET_RESPONSE, count);
        GetResponseEncoder { buf, max_size, written: 0, count }
    }

    pub fn push_miss(&mut self) {
        self.written += 1;
        self.buf.put_u8(0);
    }

    /// Writes a hit, or an omitted entry when it does not fit. Returns
    /// whether the value was included. A content type over 255 bytes is cut
    /// (the node never stores one).
    pub fn push_hit(&mut self, version: u64, content_type: &[u8], value: &[u8]) -> bool {
        self.written += 1;
        let content_type = &content_type[..content_type.len().min(MAX_CONTENT_TYPE_LEN)];
        let entry = 1 + 8 + 1 + content_type.len() + 4 + value.len();
        // Leave one byte for each entry still to come.
        let reserve = self.count.saturating_sub(self.written);
        if value.len() > u32::MAX as usize || self.buf.len() + entry + reserve > self.max_size {
            self.buf.put_u8(2);
            return false;
        }
        self.buf.reserve(entry);
        self.buf.put_u8(1);
        self.buf.put_u64(version);
        self.buf.put_u8(content_type.len() as u8);
        self.buf.put_slice(content_type);
        self.buf.put_u32(value.len() as u32);
        self.buf.put_slice(value);
        true
    }

    pub fn push_omitted(&mut self) {
        self.written += 1;
        self.buf.put_u8(2);
    }

    /// The message. Entries not pushed are written as misses, so the message
    /// always holds the announced count.
    pub fn finish(mut self) -> Bytes {
        while self.written < self.count {
            self.push_miss();
        }
        self.buf.freeze()
    }
}

/// Encodes a get response (hits past `max_size` become omitted).
pub fn encode_get_response(results: &[GetResult], max_size: usize) -> Bytes {
    let mut enc = GetResponseEncoder::new(results.len(), max_size);
    for result in results {
        match result {
            GetResult::Hit { version, content_type, value } => {
                enc.push_hit(*version, content_type, value);
            }
            GetResult::Miss => enc.push_miss(),
            GetResult::Omitted => enc.push_omitted(),
        }
    }
    enc.finish()
}

/// Decodes a get response. The response size itself is not limited (the
/// sender bounded it); entry count, content type and value sizes are.
pub fn decode_get_response(buf: Bytes, limits: &Limits) -> Result<Vec<GetResult>, BatchError> {
    let mut r = Reader::new(buf);
    let count = r.header(KIND_GET_RESPONSE, "a get response (kind 2)", limits)?;
    let mut results = Vec::with_capacity(count.min(r.remaining()));
    for index in 0..count {
        let result = match r.u8("status")? {
            0 => GetResult::Miss,
            1 => {
                let version = r.u64("version")?;
                let content_type = r.content_type()?;
                let value = r.value(index, limits)?;
                GetResult::Hit { version, content_type, value }
            }
            2 => GetResult::Omitted,
            code => {
                return Err(BatchError::UnknownCode { index, what: "status", code });
            }
        };
        results.push(result);
    }
    r.finish()?;
    Ok(results)
}

/// Encodes a put request. Fails on entries that cannot be framed.
pub fn encode_put_request(items: &[PutItem]) -> Result<Bytes, BatchError> {
    check_count(items.len(), None)?;
    let size: usize = items
        .iter()
        .map(|i| {
            let condition = match &i.condition {
                WriteCondition::IfVersionIn(v) => 2 + 8 * v.len(),
                _ => 1,
            };
            condition + 4 + 2 + i.key.len() + 1 + i.content_type.len() + 4 + i.value.len()
        })
        .sum();
    let mut buf = BytesMut::with_capacity(HEADER_LEN + size);
    header(&mut buf, KIND_PUT_REQUEST, items.len());
    for (index, item) in items.iter().enumerate() {
        match &item.condition {
            WriteCondition::Always => buf.put_u8(0),
            WriteCondition::IfAbsent => buf.put_u8(1),
            WriteCondition::IfPresent => buf.put_u8(2),
            WriteCondition::IfVersionIn(versions) => {
                let n = u8::try_from(versions.len()).map_err(|_| BatchError::TooManyVersions { index, count: versions.len() })?;
                buf.put_u8(3);
                buf.put_u8(n);
                for v in versions {
                    buf.put_u64(*v);
                }
            }
        }
        buf.put_u32(item.ttl_seconds.unwrap_or(0));
        put_key(&mut buf, index, &item.key)?;
        if item.content_type.len() > MAX_CONTENT_TYPE_LEN {
            return Err(BatchError::ContentTypeTooLong { index, size: item.content_type.len() });
        }
        buf.put_u8(item.content_type.len() as u8);
        buf.put_slice(&item.content_type);
        let len = u32::try_from(item.value.len()).map_err(|_| BatchError::ValueTooLarge {
            index,
            size: item.value.len(),
            limit: u32::MAX as usize,
            limit_name: FORMAT_LIMIT.to_string(),
        })?;
        buf.put_u32(len);
        buf.put_slice(&item.value);
    }
    Ok(buf.freeze())
}

/// Decodes a put request (keys, content types and values are slices of `buf`).
pub fn decode_put_request(buf: Bytes, limits: &Limits) -> Result<Vec<PutItem>, BatchError> {
    check_request_size(&buf, limits)?;
    let mut r = Reader::new(buf);
    let count = r.header(KIND_PUT_REQUEST, "a put request (kind 3)", limits)?;
    // Each entry takes at least 13 bytes.
    let mut items = Vec::with_capacity(count.min(r.remaining() / 13));
    for index in 0..count {
        let condition = match r.u8("condition")? {
            0 => WriteCondition::Always,
            1 => WriteCondition::IfAbsent,
            2 => WriteCondition::IfPresent,
            3 => {
                let n = r.u8("version count")?;
                let mut versions = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    versions.push(r.u64("version")?);
                }
                WriteCondition::IfVersionIn(versions)
            }
            code => {
                return Err(BatchError::UnknownCode { index, what: "condition", code });
            }
        };
        let ttl = r.u32("ttl")?;
        let max_ttl = limits.max_ttl.as_secs();
        if u64::from(ttl) > max_ttl {
            return Err(BatchError::TtlTooLong { index, secs: ttl.into(), limit: max_ttl, limit_name: limits.name("max_ttl") });
        }
        let key = r.key(index, limits)?;
        let content_type = r.content_type()?;
        let value = r.value(index, limits)?;
        items.push(PutItem { key, condition, ttl_seconds: (ttl != 0).then_some(ttl), content_type, value });
    }
    r.finish()?;
    Ok(items)
}

/// Encodes a put response.
pub fn encode_put_response(results: &[PutResult]) -> Bytes {
    let mut buf = BytesMut::with_capacity(HEADER_LEN + results.len() * 9);
    header(&mut buf, KIND_PUT_RESPONSE, results.len());
    for result in results {
        match result {
            PutResult::Created { version } => {
                buf.put_u8(0);
                buf.put_u64(*version);
            }
            PutResult::Replaced { version } => {
                buf.put_u8(1);
                buf.put_u64(*version);
            }
            PutResult::ConditionFailed => buf.put_u8(2),
        }
    }
    buf.freeze()
}

/// Decodes a put response.
pub fn decode_put_response(buf: Bytes, limits: &Limits) -> Result<Vec<PutResult>, BatchError> {
    let mut r = Reader::new(buf);
    let count = r.header(KIND_PUT_RESPONSE, "a put response (kind 4)", limits)?;
    let mut results = Vec::with_capacity(count.min(r.remaining()));
    for index in 0..count {
        results.push(match r.u8("status")? {
            0 => PutResult::Created { version: r.u64("version")? },
            1 => PutResult::Replaced { version: r.u64("version")? },
            2 => PutResult::ConditionFailed,
            code => {
                return Err(BatchError::UnknownCode { index, what: "status", code });
            }
        });
    }
    r.finish()?;
    Ok(results)
}

fn check_request_size(buf: &Bytes, limits: &Limits) -> Result<(), BatchError> {
    if buf.len() > limits.max_batch_size {
        return Err(BatchError::TooLarge { size: buf.len(), limit: limits.max_batch_size, limit_name: limits.name("max_batch_size") });
    }
    Ok(())
}

/// Bounds-checked cursor over a message.
struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    fn new(buf: Bytes) -> Self {
        Reader { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<Bytes, BatchError> {
        if self.remaining() < n {
            return Err(BatchError::Truncated { offset: self.buf.len(), what });
        }
        let out = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], BatchError> {
        if self.remaining() < N {
            return Err(BatchError::Truncated { offset: self.buf.len(), what });
        }
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, BatchError> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, BatchError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, BatchError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, BatchError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    fn header(&mut self, kind: u8, expected: &'static str, limits: &Limits) -> Result<usize, BatchError> {
        if self.buf.is_empty() {
            return Err(BatchError::Empty);
        }
        let version = self.u8("version")?;
        if version != FORMAT_VERSION {
            return Err(BatchError::UnsupportedVersion(version));
        }
        let found = self.u8("kind")?;
        if found != kind {
            return Err(BatchError::WrongKind { found, expected });
        }
        let count = self.u32("count")? as usize;
        check_count(count, Some(limits))?;
        Ok(count)
    }

    fn key(&mut self, index: usize, limits: &Limits) -> Result<Bytes, BatchError> {
        let len = self.u16("key length")? as usize;
        if len == 0 {
            return Err(BatchError::EmptyKey { index });
        }
        if len > limits.max_key_size {
            return Err(BatchError::KeyTooLong { index, size: len, limit: limits.max_key_size, limit_name: limits.name("max_key_size") });
        }
        self.take(len, "key")
    }

    fn content_type(&mut self) -> Result<Bytes, BatchError> {
        let len = self.u8("content type length")? as usize;
        self.take(len, "content type")
    }

    fn value(&mut self, index: usize, limits: &Limits) -> Result<Bytes, BatchError> {
        let len = self.u32("value length")? as usize;
        if len > limits.max_value_size {
            return Err(BatchError::ValueTooLarge {
                index,
                size: len,
                limit: limits.max_value_size,
                limit_name: limits.name("max_value_size"),
            });
        }
        self.take(len, "value")
    }

    fn finish(self) -> Result<(), BatchError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(BatchError::TrailingBytes { extra }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn get_request_round_trip() {
        let keys: Vec<&[u8]> = vec![b"a", b"\x00\xff/%", b"third key"];
        let msg = encode_get_request(&keys).unwrap();
        assert_eq!(&msg[..6], &[1, 1, 0, 0, 0, 3]);
        let decoded = decode_get_request(msg, &limits()).unwrap();
        assert_eq!(decoded, keys.iter().map(|k| Bytes::copy_from_slice(k)).collect::<Vec<_>>());
    }

    #[test]
    fn get_response_round_trip_and_omission() {
        let results = vec![
            GetResult::Hit { version: 7, content_type: Bytes::from_static(b"text/plain"), value: Bytes::from_static(b"hello") },
            GetResult::Miss,
            GetResult::Hit { version: 9, content_type: Bytes::new(), value: Bytes::from(vec![0u8; 100]) },
        ];
        let msg = encode_get_response(&results, usize::MAX);
        assert_eq!(decode_get_response(msg, &limits()).unwrap(), results);
        // Room for the header, the first hit (1+8+1+10+4+5 = 29) and 2 more status bytes only.
        let msg = encode_get_response(&results, 6 + 29 + 2);
        let decoded = decode_get_response(msg, &limits()).unwrap();
        assert_eq!(decoded, vec![results[0].clone(), GetResult::Miss, GetResult::Omitted]);
    }

    #[test]
    fn put_round_trip() {
        let items = vec![
            PutItem {
                key: Bytes::from_static(b"k1"),
                condition: WriteCondition::Always,
                ttl_seconds: None,
                content_type: Bytes::new(),
                value: Bytes::from_static(b"v"),
            },
            PutItem {
                key: Bytes::from_static(b"k2"),
                condition: WriteCondition::IfVersionIn(vec![1, 2]),
                ttl_seconds: Some(60),
                content_type: Bytes::from_static(b"application/json"),
                value: Bytes::from_static(b"{}"),
            },
            PutItem {
                key: Bytes::from_static(b"k3"),
                condition: WriteCondition::IfAbsent,
                ttl_seconds: Some(1),
                content_type: Bytes::new(),
                value: Bytes::new(),
            },
        ];
        let msg = encode_put_request(&items).unwrap();
        assert_eq!(decode_put_request(msg, &limits()).unwrap(), items);
        let results = vec![PutResult::Created { version: 1 }, PutResult::ConditionFailed, PutResult::Replaced { version: u64::MAX }];
        let msg = encode_put_response(&results);
        assert_eq!(decode_put_response(msg, &limits()).unwrap(), results);
    }

    #[test]
    fn limits_are_named() {
        let l = Limits { max_batch_keys: 2, max_key_size: 3, max_value_size: 4, ..limits() };
        let err = decode_get_request(encode_get_request(&[b"a", b"b", b"c"]).unwrap(), &l).unwrap_err();
        assert_eq!(err, BatchError::TooManyEntries { count: 3, limit: 2, limit_name: "node.max_batch_keys".into() });
        assert!(err.to_string().contains("node.max_batch_keys"));
        let err = decode_get_request(encode_get_request(&[b"abcd"]).unwrap(), &l).unwrap_err();
        assert!(err.to_string().contains("node.max_key_size"), "{err}");
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let item = PutItem {
            key: Bytes::from_static(b"k"),
            condition: WriteCondition::Always,
            ttl_seconds: None,
            content_type: Bytes::new(),
            value: Bytes::from_static(b"12345"),
        };
        let err = decode_put_request(encode_put_request(&[item]).unwrap(), &l).unwrap_err();
        assert!(err.to_string().contains("node.max_value_size"), "{err}");
        let l = Limits { max_batch_size: 8, ..limits() };
        let err = decode_get_request(encode_get_request(&[b"abcdef"]).unwrap(), &l).unwrap_err();
        assert!(err.to_string().contains("node.max_batch_size"), "{err}");
    }

    /// Every prefix and every single-byte corruption of valid messages
    /// decodes to a value or an error, never a panic.
    #[test]
    fn malformed_input_never_panics() {
        let get = encode_get_request(&[b"alpha".as_slice(), b"beta"]).unwrap();
        let put = encode_put_request(&[PutItem {
            key: Bytes::from_static(b"k"),
            condition: WriteCondition::IfVersionIn(vec![5]),
            ttl_seconds: Some(3),
            content_type: Bytes::from_static(b"t/p"),
            value: Bytes::from_static(b"val"),
        }])
        .unwrap();
        let get_resp = encode_get_response(
            &[GetResult::Hit { version: 1, content_type: Bytes::from_static(b"x"), value: Bytes::from_static(b"yy") }, GetResult::Miss],
            usize::MAX,
        );
        let put_resp = encode_put_response(&[PutResult::Created { version: 3 }]);
        for msg in [get, put, get_resp, put_resp] {
            for cut in 0..msg.len() {
                let prefix = msg.slice(..cut);
                assert!(decode_get_request(prefix.clone(), &limits()).is_err());
                assert!(decode_put_request(prefix.clone(), &limits()).is_err());
                assert!(decode_get_response(prefix.clone(), &limits()).is_err());
                assert!(decode_put_response(prefix, &limits()).is_err());
            }
            for i in 0..msg.len() {
                for b in [0u8, 1, 2, 3, 4, 0x7f, 0xff] {
                    let mut bad = msg.to_vec();
                    bad[i] = b;
                    let bad = Bytes::from(bad);
                    let _ = decode_get_request(bad.clone(), &limits());
                    let _ = decode_put_request(bad.clone(), &limits());
                    let _ = decode_get_response(bad.clone(), &limits());
                    let _ = decode_put_response(bad, &limits());
                }
            }
        }
        assert_eq!(decode_get_request(Bytes::new(), &limits()), Err(BatchError::Empty));
        assert_eq!(decode_get_request(Bytes::from_static(&[9, 1, 0, 0, 0, 0]), &limits()), Err(BatchError::UnsupportedVersion(9)));
    }
}
