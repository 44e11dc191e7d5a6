//! The property checks of the key-API suite: hostile input from raw TCP
//! (random bytes, mangled request lines, random header sets and bodies) and
//! an HTTP client (randomly percent-encoded keys and values with random TTL
//! queries, random conditional headers, random and damaged batch bodies).
//!
//! Every request gets a 4xx/5xx (JSON `{"error": ...}` when the target
//! answers itself), a correct 2xx, or a closed connection; never a 500; the
//! target keeps serving; and after every case the canary reads back
//! identical (see [`Suite`]). Refusals are the ones the shared key, TTL,
//! ETag and batch modules of `shardgate-api` define, naming the target's
//! `<role>.max_*` limits.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use shardgate_api::batch::{self, BatchError, GetResult, PutItem, PutResult};
use shardgate_api::etag::{WriteCondition, format_etag};
use shardgate_api::key::{encode_key_segment, key_path};

use super::{CANARY_KEY, CANARY_TYPE, Suite};
use crate::http::{Answer, RawResponse, clip, raw_exchange};
use crate::proptest_config::cases;

/// Runs `test` on `cases` inputs from `strategy`; a failure (after
/// shrinking) panics with proptest's report.
fn check<S: Strategy>(cases_: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    let mut runner = TestRunner::new(cases(cases_));
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

/// An error answer of the target itself: JSON `{"error": "<non-empty>"}`.
pub fn assert_json_error(status: StatusCode, content_type: &str, body: &[u8], input: &str) {
    assert!(content_type.starts_with("application/json"), "{input}: {status} with content type {content_type:?}");
    let v: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{input}: {status} body is not JSON ({e}): {:?}", String::from_utf8_lossy(body)));
    let message = v["error"].as_str().unwrap_or_else(|| panic!("{input}: no \"error\" string in {v}"));
    assert!(!message.trim().is_empty() && !message.contains('\n'), "{input}: error {message:?}");
}

/// The reply to a request the target must refuse (or hang up on).
pub fn assert_refused(reply: &Option<RawResponse>, input: &[u8]) {
    let Some(r) = reply else { return };
    assert!((400..600).contains(&r.status), "{:?} got {}", clip(input), r.status);
    assert_ne!(r.status, 500, "internal error for {:?}: {:?}", clip(input), String::from_utf8_lossy(&r.body));
    if !r.content_type.is_empty() && !input.starts_with(b"HEAD ") {
        assert_json_error(StatusCode::from_u16(r.status).unwrap(), &r.content_type, &r.body, &clip(input));
    }
}

/// The reply to a request that may be valid: any status but a 500, and
/// every error the target writes itself is JSON.
pub fn assert_answered_sanely(reply: &Option<RawResponse>, input: &[u8]) {
    let Some(r) = reply else { return };
    assert!((100..600).contains(&r.status), "{:?} got {}", clip(input), r.status);
    assert_ne!(r.status, 500, "internal error for {:?}: {:?}", clip(input), String::from_utf8_lossy(&r.body));
    // Answers to HEAD carry the headers of the error but no body.
    if r.status >= 400 && !r.content_type.is_empty() && !input.starts_with(b"HEAD ") {
        assert_json_error(StatusCode::from_u16(r.status).unwrap(), &r.content_type, &r.body, &clip(input));
    }
}

// --- raw bytes and mangled requests -------------------------------------------

fn method() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::sample::select(&["GET", "PUT", "POST", "DELETE", "HEAD"][..]).prop_map(|m| m.as_bytes().to_vec()),
        1 => prop::sample::select(&["PATCH", "OPTIONS", "CONNECT", "TRACE", "get", "G ET", "", "PUT\0"][..])
            .prop_map(|m| m.as_bytes().to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..12),
    ]
}

fn target() -> impl Strategy<Value = Vec<u8>> {
    let segment = "[a-zA-Z0-9%/?#&=.~ _+-]{0,40}";
    prop_oneof![
        4 => segment.prop_map(|s| format!("/v1/keys/{s}").into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| [&b"/v1/keys/"[..], &b].concat()),
        2 => prop::sample::select(
            &[
                "/v1/batch/get", "/v1/batch/put", "/v1/keys/", "/v1/keys", "/healthz", "/readyz", "/metrics", "*", "",
                "//", "/v1/keys/../../etc/passwd", "http://127.0.0.1/v1/keys/x", "/v1/keys/x?ttl=-1", "/v1/keys/%",
                "/v1/keys/%zz%", "/v1/keys/x#frag",
            ][..],
        )
        .prop_map(|t| t.as_bytes().to_vec()),
        1 => "[ -~]{0,60}".prop_map(String::into_bytes),
        1 => "/v1/keys/[a-z]{1,8}\\?[a-z=&0-9%-]{0,30}".prop_map(String::into_bytes),
        1 => (1..20_000usize).prop_map(|n| format!("/v1/keys/{}", "k".repeat(n)).into_bytes()),
    ]
}

fn version() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => Just(b"HTTP/1.1".to_vec()),
        1 => prop::sample::select(&["HTTP/1.0", "HTTP/2.0", "HTTP/9.9", "HTTP/1.1x", "http/1.1", "HTTP/1.", "", "HTTP/1.1 HTTP/1.1"][..])
            .prop_map(|v| v.as_bytes().to_vec()),
    ]
}

fn header_line() -> impl Strategy<Value = Vec<u8>> {
    let pair = |name: &'static str, values: &'static [&'static str]| {
        prop::sample::select(values).prop_map(move |v| format!("{name}: {v}").into_bytes())
    };
    prop_oneof![
        pair("Content-Length", &["0", "5", "-1", "18446744073709551616", "5, 6", " 7 ", "0x10", "", "99999999", "65537"]),
        pair("Transfer-Encoding", &["chunked", "gzip", "chunked, gzip", "identity", "", "chunked\0"]),
        pair("Host", &["127.0.0.1", "", "a b", "x:99999"]),
        pair("If-Match", &["*", "\"1\"", "W/\"1\"", "\"abc\"", "\"1\", \"2\"", "", "\"18446744073709551616\"", "\"", ","]),
        pair("If-None-Match", &["*", "\"1\"", "", "garbage"]),
        pair("Content-Type", &["text/plain", "", "a\u{7f}b", "application/json; charset=utf-8"]),
        pair("Expect", &["100-continue", "nonsense"]),
        pair("Connection", &["close", "keep-alive", "upgrade", ""]),
        pair("Upgrade", &["h2c", "websocket"]),
        (1..400usize).prop_map(|n| format!("Content-Type: {}", "t".repeat(n)).into_bytes()),
        "[!-9;-~]{1,20}: [ -~]{0,40}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..40),
        (1..20_000usize).prop_map(|n| format!("X-Big: {}", "v".repeat(n)).into_bytes()),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => Just(vec![]),
        3 => proptest::collection::vec(any::<u8>(), 0..600),
        1 => Just(b"5\r\nhello\r\n0\r\n\r\n".to_vec()),
        1 => Just(b"zz\r\nhello\r\n".to_vec()),
        1 => Just(b"ffffffffffffffffff\r\nx\r\n".to_vec()),
        1 => Just(b"GET /v1/keys/x HTTP/1.1\r\n\r\n".to_vec()),
    ]
}

/// A request assembled from (possibly broken) parts.
pub fn mangled_request() -> impl Strategy<Value = Vec<u8>> {
    (method(), target(), version(), proptest::collection::vec(header_line(), 0..6), body(), any::<bool>()).prop_map(
        |(m, t, v, headers, body, bare_lf)| {
            let eol: &[u8] = if bare_lf { b"\n" } else { b"\r\n" };
            let mut out = [&m[..], b" ", &t, b" ", &v, eol].concat();
            for h in headers {
                out.extend_from_slice(&h);
                out.extend_from_slice(eol);
            }
            out.extend_from_slice(eol);
            out.extend_from_slice(&body);
            out
        },
    )
}

// --- keys and values -------------------------------------------------------------

/// How a key is written into the URL.
#[derive(Debug, Clone)]
pub enum Encoding {
    /// `encode_key_segment`: everything but unreserved characters.
    Canonical,
    /// Every byte as `%xx` with lowercase hex.
    AllLowercase,
    /// Canonical, with stray `%` sequences inserted at these positions:
    /// not escapes (refused), or escapes once joined with what follows.
    Stray(Vec<(prop::sample::Index, &'static str)>),
}

fn encode(key: &[u8], how: &Encoding) -> String {
    match how {
        Encoding::Canonical => encode_key_segment(key),
        Encoding::AllLowercase => key.iter().map(|b| format!("%{b:02x}")).collect(),
        Encoding::Stray(inserts) => {
            let mut parts: Vec<String> = key.iter().map(|b| encode_key_segment(&[*b])).collect();
            for (at, stray) in inserts {
                let i = at.index(parts.len() + 1);
                parts.insert(i, stray.to_string());
            }
            parts.concat()
        }
    }
}

/// `%xx` escapes decoded, anything else taken literally; `None` when a `%`
/// does not start an escape of two hex digits, which
/// `shardgate_api::key::decode_key_segment` refuses (written out here so
/// the suite does not check the decoder against itself).
pub fn percent_decode_strict(s: &[u8]) -> Option<Vec<u8>> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = vec![];
    let mut i = 0;
    while i < s.len() {
        if s[i] != b'%' {
            out.push(s[i]);
            i += 1;
            continue;
        }
        let (h, l) = (hex(*s.get(i + 1)?)?, hex(*s.get(i + 2)?)?);
        out.push((h * 16 + l) as u8);
        i += 3;
    }
    Some(out)
}

/// `%xx` escapes decoded, anything else (stray `%` too) taken literally,
/// as lenient decoders (axum's `Path`, meta's path segments) do.
pub fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    let mut i = 0;
    while i < s.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if s[i] == b'%'
            && i + 2 < s.len()
            && let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// A `?ttl=` query and whether a target with `max_ttl` must accept it.
fn ttl_query(max: u64) -> impl Strategy<Value = (String, bool)> {
    prop_oneof![
        3 => Just((String::new(), true)),
        2 => (1..=max).prop_map(|s| (format!("?ttl={s}"), true)),
        1 => Just((format!("?ttl={}", max + 1), false)),
        1 => prop::sample::select(
            &["?ttl=0", "?ttl=", "?ttl=-5", "?ttl=abc", "?ttl=1.5", "?ttl=5&ttl=5", "?tll=5", "?ttl=99999999999999999999999", "?ttl=%35"][..],
        )
        .prop_map(|q| (q.to_string(), false)),
    ]
}

// --- batches ---------------------------------------------------------------------

fn put_item(max_value_size: usize) -> impl Strategy<Value = PutItem> {
    let condition = prop_oneof![
        4 => Just(WriteCondition::Always),
        1 => Just(WriteCondition::IfAbsent),
        1 => Just(WriteCondition::IfPresent),
        1 => proptest::collection::vec(any::<u64>(), 0..3).prop_map(WriteCondition::IfVersionIn),
    ];
    let ttl = prop_oneof![3 => Just(None), 1 => (1..100_000u32).prop_map(Some), 1 => Just(Some(u32::MAX))];
    (
        proptest::collection::vec(any::<u8>(), 0..20),
        condition,
        ttl,
        prop_oneof![Just(Bytes::new()), Just(Bytes::from_static(b"text/plain")), Just(Bytes::from_static(b"bad\x01type"))],
        prop_oneof![4 => proptest::collection::vec(any::<u8>(), 0..200), 1 => Just(vec![b'v'; max_value_size + 1])],
    )
        .prop_map(|(key, condition, ttl_seconds, content_type, value)| PutItem {
            key: Bytes::from(key),
            condition,
            ttl_seconds,
            content_type,
            value: Bytes::from(value),
        })
}

/// How to damage an encoded batch.
#[derive(Debug, Clone)]
enum Damage {
    None,
    Truncate(prop::sample::Index),
    Flip(prop::sample::Index, u8),
    Append(Vec<u8>),
    Count(u32),
    Header(u8, u8),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        2 => Just(Damage::None),
        2 => any::<prop::sample::Index>().prop_map(Damage::Truncate),
        2 => (any::<prop::sample::Index>(), 1..=255u8).prop_map(|(i, x)| Damage::Flip(i, x)),
        1 => proptest::collection::vec(any::<u8>(), 1..8).prop_map(Damage::Append),
        1 => prop_oneof![Just(0u32), Just(1), Just(65), Just(u32::MAX), any::<u32>()].prop_map(Damage::Count),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(v, k)| Damage::Header(v, k)),
    ]
}

fn apply(mut bytes: Vec<u8>, d: &Damage) -> Vec<u8> {
    match d {
        Damage::None => {}
        Damage::Truncate(i) => bytes.truncate(i.index(bytes.len())),
        Damage::Flip(i, x) => {
            let i = i.index(bytes.len());
            bytes[i] ^= x;
        }
        Damage::Append(extra) => bytes.extend_from_slice(extra),
        Damage::Count(c) => bytes[2..6].copy_from_slice(&c.to_be_bytes()),
        Damage::Header(v, k) => {
            bytes[0] = *v;
            bytes[1] = *k;
        }
    }
    bytes
}

/// What the target must answer for a refused batch: the status and message
/// the batch codec gives for these bytes.
fn assert_batch_refused(r: &Answer, expected: &BatchError, input: &str) {
    assert_eq!(r.status, expected.status(), "{input}: {}", r.text());
    assert_json_error(r.status, &r.content_type(), &r.body, input);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"].as_str().unwrap(), expected.to_string(), "{input}");
}

impl Suite {
    /// Random bytes on a fresh connection: refused or hung up on.
    pub fn random_bytes_are_refused(&self) {
        check(128, proptest::collection::vec(any::<u8>(), 1..2048), |bytes| {
            self.block_on(async {
                let reply = raw_exchange(self.target.addr, &bytes).await;
                assert_refused(&reply, &bytes);
                self.assert_canary_intact().await;
            });
            Ok(())
        });
    }

    /// Mangled request lines, random header sets and bodies: a sane answer
    /// (never a 500, JSON for the target's own errors) or a hang-up.
    pub fn mangled_requests_get_sane_answers(&self) {
        check(128, mangled_request(), |request| {
            self.block_on(async {
                let reply = raw_exchange(self.target.addr, &request).await;
                assert_answered_sanely(&reply, &request);
                self.assert_canary_intact().await;
            });
            Ok(())
        });
    }

    /// PUT under a randomly encoded key: stored exactly under the decoded
    /// key (readable by its canonical URL and the URL it was written with)
    /// when key, value and TTL are within the limits; otherwise a JSON 4xx
    /// naming the problem (invalid percent-encoding, `<role>.max_key_size`,
    /// the TTL, `<role>.max_value_size`, checked in that order) and nothing
    /// stored.
    pub fn percent_encoded_keys_and_values_round_trip_or_are_refused(&self) {
        let l = self.target.limits.clone();
        let strategy = (
            proptest::collection::vec(any::<u8>(), 0..l.max_key_size + 44),
            prop_oneof![
                Just(Encoding::Canonical),
                Just(Encoding::AllLowercase),
                proptest::collection::vec(
                    (any::<prop::sample::Index>(), prop::sample::select(&["%", "%%", "%G1", "%2", "%zz", "%%41"][..])),
                    1..4,
                )
                .prop_map(Encoding::Stray),
            ],
            prop_oneof![
                4 => proptest::collection::vec(any::<u8>(), 0..2048),
                1 => (l.max_value_size - 6..l.max_value_size + 4).prop_map(|n| vec![b'v'; n]),
            ],
            ttl_query(l.max_ttl.as_secs()),
            prop_oneof![Just(None), Just(Some("text/plain")), Just(Some("application/octet-stream; x=1"))],
        );
        let (key_name, value_name) = (l.name("max_key_size"), l.name("max_value_size"));
        check(128, strategy, |(key, how, value, (query, ttl_ok), content_type)| {
            let key = [self.unique(), key].concat();
            let segment = encode(&key, &how);
            // What the target must decode: `%xx` escapes, anything else
            // literally; a `%` that starts no escape is refused.
            let decoded = percent_decode_strict(segment.as_bytes());
            let input = format!("PUT /v1/keys/{segment}{query} ({} value bytes)", value.len());
            self.block_on(async {
                let path = format!("/v1/keys/{segment}{query}");
                let headers: Vec<(&str, &str)> = content_type.iter().map(|ct| ("content-type", *ct)).collect();
                let r = self.request(Method::PUT, &path, &headers, value.clone()).await;
                let Some(decoded) = decoded else {
                    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{input}: {}", r.text());
                    assert_json_error(r.status, &r.content_type(), &r.body, &input);
                    assert!(r.text().contains("percent-encoding"), "{input}: {}", r.text());
                    self.assert_canary_intact().await;
                    return;
                };
                let fits = decoded.len() <= l.max_key_size && value.len() <= l.max_value_size;
                if fits && ttl_ok {
                    assert_eq!(r.status, StatusCode::CREATED, "{input}: {}", r.text());
                    for url in [key_path(&decoded), format!("/v1/keys/{segment}")] {
                        let got = self.request(Method::GET, &url, &[], Bytes::new()).await;
                        assert_eq!(got.status, StatusCode::OK, "{input}: GET {url}");
                        assert_eq!(&got.body[..], &value[..], "{input}: GET {url} returned another value");
                        assert_eq!(got.header(http::header::ETAG), r.header(http::header::ETAG), "{input}: GET {url}");
                        assert_eq!(got.content_type(), content_type.unwrap_or("application/octet-stream"), "{input}");
                    }
                } else {
                    assert!(r.status.is_client_error(), "{input}: {} {}", r.status, r.text());
                    assert_json_error(r.status, &r.content_type(), &r.body, &input);
                    let text = r.text();
                    if decoded.len() > l.max_key_size {
                        assert_eq!(r.status, StatusCode::URI_TOO_LONG, "{input}");
                        assert!(text.contains(&key_name), "{input}: {text}");
                    } else if !ttl_ok {
                        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{input}: {text}");
                        assert!(text.contains("ttl"), "{input}: {text}");
                    } else {
                        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{input}");
                        assert!(text.contains(&value_name), "{input}: {text}");
                    }
                    if decoded.len() <= l.max_key_size {
                        let got = self.request(Method::GET, &key_path(&decoded), &[], Bytes::new()).await;
                        assert_eq!(got.status, StatusCode::NOT_FOUND, "{input}: a refused write stored something");
                    }
                }
                self.assert_canary_intact().await;
            });
            Ok(())
        });
    }

    /// Random conditional headers on writes and reads of an existing key:
    /// the value changes only on a 2xx write, and every refusal is JSON.
    pub fn random_conditional_headers_change_only_what_they_allow(&self) {
        let strategy = (
            proptest::collection::vec(
                (
                    prop::sample::select(&["if-match", "if-none-match", "content-type", "x-any"][..]),
                    prop_oneof![
                        prop::sample::select(
                            &[
                                "*",
                                "\"1\"",
                                "W/\"1\"",
                                "\"0\"",
                                "\"1\", \"2\"",
                                "",
                                "\"",
                                "\"18446744073709551616\"",
                                "garbage",
                                "*, \"1\""
                            ][..]
                        )
                        .prop_map(String::from),
                        "[ -~]{0,30}",
                    ],
                ),
                0..4,
            ),
            prop::sample::select(&[Method::GET, Method::HEAD, Method::PUT, Method::DELETE][..]),
        );
        check(128, strategy, |(headers, method)| {
            self.block_on(async {
                let key = [self.unique(), b"cond".to_vec()].concat();
                let first = self.request(Method::PUT, &key_path(&key), &[], "first").await;
                assert_eq!(first.status, StatusCode::CREATED);
                let hs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                // http rejects some header values client-side (e.g. a bare `"`
                // is fine, control characters are not): those never reach the target.
                let mut builder = Request::builder().method(method.clone()).uri("http://x/");
                for (n, v) in &hs {
                    builder = builder.header(*n, *v);
                }
                prop_assume!(builder.body(()).is_ok());
                let r = self.request(method.clone(), &key_path(&key), &hs, "second").await;
                let input = format!("{method} with {hs:?}");
                prop_assert_ne!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", input);
                if r.status.is_client_error() && method != Method::HEAD {
                    assert_json_error(r.status, &r.content_type(), &r.body, &input);
                }
                let now = self.request(Method::GET, &key_path(&key), &[], Bytes::new()).await;
                match (method.as_str(), r.status.is_success()) {
                    ("PUT", true) => prop_assert_eq!(&now.body[..], b"second", "{}", input),
                    ("DELETE", true) => prop_assert_eq!(now.status, StatusCode::NOT_FOUND, "{}", input),
                    _ => {
                        prop_assert_eq!(now.status, StatusCode::OK, "{}: {}", input, r.status);
                        prop_assert_eq!(&now.body[..], b"first", "{}: the value changed", input);
                        prop_assert_eq!(now.etag(), first.etag(), "{}: the version changed", input);
                    }
                }
                self.assert_canary_intact().await;
                Ok(())
            })
        });
    }

    /// Random and damaged put batches: the target answers exactly what the
    /// batch codec says about the bytes. A refused batch stores none of its
    /// keys; an accepted one stores exactly its entries.
    pub fn random_put_batches_are_all_or_nothing(&self) {
        let l = self.target.limits.clone();
        let strategy = (
            proptest::collection::vec(put_item(l.max_value_size), 0..8),
            damage(),
            prop_oneof![9 => Just(None), 1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Some)],
        );
        check(96, strategy, |(items, damage, raw)| {
            // Fresh keys on every run (shrinking re-runs a case).
            let prefix = self.unique();
            let mut items = items;
            for item in &mut items {
                item.key = Bytes::from([&prefix[..], &item.key].concat());
            }
            let encoded = batch::encode_put_request(&items).unwrap().to_vec();
            let body = match &raw {
                Some(r) => r.clone(),
                None => apply(encoded, &damage),
            };
            let input = format!("{} put entries, {damage:?}, {} body bytes", items.len(), body.len());
            self.block_on(async {
                let r = self.request(Method::POST, "/v1/batch/put", &[("content-type", batch::CONTENT_TYPE)], body.clone()).await;
                let decoded = batch::decode_put_request(Bytes::from(body.clone()), &l);
                let invalid_type = decoded.as_ref().ok().and_then(|d| {
                    d.iter().position(|i| !i.content_type.is_empty() && http::HeaderValue::from_bytes(&i.content_type).is_err())
                });
                match (&decoded, invalid_type) {
                    (Err(e), _) => assert_batch_refused(&r, e, &input),
                    (Ok(_), Some(index)) => {
                        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{input}");
                        assert_json_error(r.status, &r.content_type(), &r.body, &input);
                        assert!(r.text().contains(&format!("batch entry {index}")), "{input}");
                    }
                    (Ok(entries), None) => {
                        assert_eq!(r.status, StatusCode::OK, "{input}: {}", r.text());
                        let results = batch::decode_put_response(r.body.clone(), &l).unwrap();
                        assert_eq!(results.len(), entries.len(), "{input}");
                        // Later entries for the same key overwrite earlier ones.
                        for (i, (entry, result)) in entries.iter().zip(&results).enumerate() {
                            let later = entries[i + 1..].iter().any(|e| e.key == entry.key);
                            if let (PutResult::Created { version } | PutResult::Replaced { version }, false) = (result, later) {
                                let got = self.request(Method::GET, &key_path(&entry.key), &[], Bytes::new()).await;
                                assert_eq!(&got.body[..], &entry.value[..], "{input}: entry {i}");
                                assert_eq!(got.header(http::header::ETAG), format_etag(*version).to_str().unwrap(), "{input}: entry {i}");
                            }
                        }
                    }
                }
                if r.status != StatusCode::OK {
                    // All or nothing: none of the entries' keys was written.
                    let keys: Vec<Bytes> =
                        items.iter().map(|i| i.key.clone()).filter(|k| !k.is_empty() && k.len() <= l.max_key_size).collect();
                    for key in keys {
                        let got = self.request(Method::GET, &key_path(&key), &[], Bytes::new()).await;
                        assert_eq!(got.status, StatusCode::NOT_FOUND, "{input}: a refused batch stored {:?}", key);
                    }
                }
                self.assert_canary_intact().await;
            });
            Ok(())
        });
    }

    /// Random and damaged get batches (some naming the canary): the
    /// target's answer matches the codec, and hits carry the stored values.
    pub fn random_get_batches_answer_what_the_codec_says(&self) {
        let l = self.target.limits.clone();
        let strategy = (
            proptest::collection::vec(
                prop_oneof![
                    4 => proptest::collection::vec(any::<u8>(), 1..40),
                    1 => Just(CANARY_KEY.to_vec()),
                    1 => Just(vec![b'k'; l.max_key_size + 44]),
                ],
                0..l.max_batch_keys + 6,
            ),
            damage(),
        );
        check(96, strategy, |(keys, damage)| {
            let encoded = batch::encode_get_request(&keys).unwrap().to_vec();
            let body = apply(encoded, &damage);
            let input = format!("{} get keys, {damage:?}", keys.len());
            self.block_on(async {
                let r = self.request(Method::POST, "/v1/batch/get", &[("content-type", batch::CONTENT_TYPE)], body.clone()).await;
                match batch::decode_get_request(Bytes::from(body), &l) {
                    Err(e) => assert_batch_refused(&r, &e, &input),
                    Ok(asked) => {
                        assert_eq!(r.status, StatusCode::OK, "{input}: {}", r.text());
                        let results = batch::decode_get_response(r.body.clone(), &l).unwrap();
                        assert_eq!(results.len(), asked.len(), "{input}");
                        for (key, result) in asked.iter().zip(&results) {
                            if &key[..] == CANARY_KEY {
                                match result {
                                    GetResult::Hit { value, content_type, .. } => {
                                        assert_eq!(&value[..], &self.canary.value[..], "{input}");
                                        assert_eq!(&content_type[..], CANARY_TYPE.as_bytes(), "{input}");
                                    }
                                    other => panic!("{input}: the canary read as {other:?}"),
                                }
                            }
                        }
                    }
                }
                self.assert_canary_intact().await;
            });
            Ok(())
        });
    }
}
