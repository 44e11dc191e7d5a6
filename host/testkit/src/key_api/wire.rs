//! The HTTP/1.1 checks of the key-API suite: what a node and a proxy must
//! do on the wire, written with raw sockets so nothing in between fixes
//! things up (RFC 9110 / 9112, issue 12 parts 4 and 5):
//!
//! - [`Suite::answers_before_closing`]: every request the target carried
//!   out is answered before the connection closes: `Connection: close`
//!   answered then closed (pipelined requests behind it are not carried
//!   out), a valid request followed by garbage in the same write gets its
//!   answer and then a 400, malformed heads get 400 and oversized ones 431.
//! - [`Suite::protocol_edge_cases`]: entity tags containing commas, invalid
//!   percent-encoding in keys (400, `%zz` is not `%25zz`), transfer codings
//!   other than `chunked` (501 naming the coding), methods a key path does
//!   not serve (405 with `Allow`).

use bytes::Bytes;
use http::{Method, StatusCode};
use shardgate_api::key::key_path;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::Suite;
use super::hostile::assert_json_error;
use crate::http::{clip, read_to_close};

/// One answer read off a raw connection.
#[derive(Debug)]
pub struct RawAnswer {
    pub status: u16,
    /// (lowercase name, value).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Splits what a server wrote on one connection into its answers (framed
/// by `Content-Length`; none for 1xx, 204 and 304). Panics on anything
/// that is not a sequence of complete HTTP/1.1 answers.
pub fn split_answers(mut bytes: &[u8]) -> Vec<RawAnswer> {
    let mut answers = Vec::new();
    while !bytes.is_empty() {
        let text = String::from_utf8_lossy(bytes);
        let head_end = text.find("\r\n\r\n").unwrap_or_else(|| panic!("incomplete answer head: {:?}", clip(bytes)));
        let mut lines = text[..head_end].split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        assert!(status_line.starts_with("HTTP/1.1 ") && status_line.len() >= 12, "not an HTTP/1.1 status line: {status_line:?}");
        let status: u16 = status_line[9..12].parse().unwrap_or_else(|_| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap_or((l, ""));
                (n.trim().to_ascii_lowercase(), v.trim().to_string())
            })
            .collect();
        let length = match status {
            100..=199 | 204 | 304 => 0,
            _ => headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0),
        };
        let start = head_end + 4;
        assert!(bytes.len() >= start + length, "answer body cut short: {:?}", clip(bytes));
        answers.push(RawAnswer { status, headers, body: bytes[start..start + length].to_vec() });
        bytes = &bytes[start + length..];
    }
    answers
}

/// Writes `bytes` in one write on a new connection and reads until the
/// server closes it: the answers, in order.
async fn exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<RawAnswer> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let text = read_to_close(&mut stream).await;
    split_answers(text.as_bytes())
}

fn statuses(answers: &[RawAnswer]) -> Vec<u16> {
    answers.iter().map(|a| a.status).collect()
}

impl Suite {
    /// Every request the target carried out gets its answer before the
    /// connection closes; malformed heads get 400, oversized ones 431.
    pub fn answers_before_closing(&self) {
        let addr = self.target.addr;
        self.block_on(async {
            // `Connection: close` with a request behind it in the same write:
            // the PUT is answered (a client must not see a failed write that
            // succeeded), the pipelined request is not carried out.
            let (closed, behind) = (Self::key("wire", b"closed"), Self::key("wire", b"behind"));
            let bytes = [
                format!("PUT {} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 3\r\n\r\none", key_path(&closed)),
                format!("PUT {} HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\ntwo", key_path(&behind)),
            ]
            .concat();
            let answers = exchange(addr, bytes.as_bytes()).await;
            assert_eq!(statuses(&answers), [201], "PUT with Connection: close, then another request: {answers:?}");
            let etag = answers[0].header("etag").expect("the answer's ETag").to_string();
            let stored = self.get(&closed).await;
            assert_eq!((&stored.body[..], stored.etag()), (&b"one"[..], etag.clone()));
            assert_eq!(self.get(&behind).await.status, StatusCode::NOT_FOUND, "a request after Connection: close was carried out");

            // The compare-and-set retry of the issue: answered, so no retry
            // is needed, and the answer's ETag is the stored version.
            let bytes = [
                format!(
                    "PUT {} HTTP/1.1\r\nhost: x\r\nif-match: {etag}\r\nconnection: close\r\ncontent-length: 3\r\n\r\nthr",
                    key_path(&closed)
                ),
                "GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n".to_string(),
            ]
            .concat();
            let answers = exchange(addr, bytes.as_bytes()).await;
            assert_eq!(statuses(&answers), [204], "{answers:?}");
            assert_eq!(self.get(&closed).await.etag(), answers[0].header("etag").unwrap_or_default());

            // Pipelined keep-alive requests are all answered, in order.
            let bytes = [
                format!("GET {} HTTP/1.1\r\nhost: x\r\n\r\n", key_path(&closed)),
                format!("GET {} HTTP/1.1\r\nhost: x\r\n\r\n", key_path(&behind)),
                "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_string(),
            ]
            .concat();
            let answers = exchange(addr, bytes.as_bytes()).await;
            assert_eq!(statuses(&answers), [200, 404, 200], "{answers:?}");
            assert_eq!(&answers[0].body[..], b"thr");

            // A valid request and garbage in one write: the answer, then a
            // 400 for the garbage, then the connection closes.
            let valid = Self::key("wire", b"valid");
            let bytes = [
                format!("PUT {} HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nok", key_path(&valid)).as_bytes(),
                b"\x00\x01garbage\r\n\r\n",
            ]
            .concat();
            let answers = exchange(addr, &bytes).await;
            assert_eq!(statuses(&answers), [201, 400], "a valid request followed by garbage: {answers:?}");
            assert_eq!(&self.get(&valid).await.body[..], b"ok");

            // Malformed heads: 400 (an unknown version may be 505), never a silent close.
            for bad in [
                &b"\x00\x01\x02 garbage\r\n\r\n"[..],
                b"GET /v1/keys/x HTTP/1.1\r\nbad header: x\r\n\r\n",
                b"GET /v1/keys/x HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                b"GET /v1/keys/x HTTP/9.9\r\n\r\n",
            ] {
                let answers = exchange(addr, bad).await;
                assert!(matches!(statuses(&answers)[..], [400] | [505]), "{:?}: {answers:?}", clip(bad));
            }
            // An oversized head (more header fields than the server takes,
            // all in one small write so the server reads every byte before
            // closing): 431.
            let many: String = (0..200).map(|i| format!("x-h{i}: v\r\n")).collect();
            let bytes = format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{many}\r\n");
            let answers = exchange(addr, bytes.as_bytes()).await;
            assert_eq!(statuses(&answers), [431], "200 header fields: {answers:?}");
            self.assert_canary_intact().await;
        })
    }

    /// Entity tags with commas, invalid percent-encoding in keys, transfer
    /// codings other than `chunked`, methods a key path does not serve.
    pub fn protocol_edge_cases(&self) {
        let addr = self.target.addr;
        self.block_on(async {
            // RFC 9110: a comma inside a quoted entity tag is part of it.
            let key = Self::key("edge", b"etag");
            let path = key_path(&key);
            let etag = self.put(&key, b"v1").await.etag();
            let r = self.request(Method::GET, &path, &[("if-none-match", "\"a,b\"")], Bytes::new()).await;
            assert_eq!(r.status, StatusCode::OK, "If-None-Match: \"a,b\": {}", r.text());
            let both = format!("\"a,b\", {etag}");
            let r = self.request(Method::GET, &path, &[("if-none-match", &both)], Bytes::new()).await;
            assert_eq!(r.status, StatusCode::NOT_MODIFIED, "If-None-Match: {both}: {}", r.text());
            let r = self.request(Method::PUT, &path, &[("if-match", "\"a,b\"")], "v2").await;
            assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "If-Match: \"a,b\": {}", r.text());
            let r = self.request(Method::PUT, &path, &[("if-match", &both)], "v2").await;
            assert_eq!(r.status, StatusCode::NO_CONTENT, "If-Match: {both}: {}", r.text());
            let r = self.request(Method::PUT, &path, &[("if-match", "\"a\"b")], "v3").await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
            assert_eq!(&self.get(&key).await.body[..], b"v2");

            // `%zz` is not an escape: refused, so it cannot alias `%25zz`.
            let r = self.request(Method::PUT, "/v1/keys/k-edge-%25zz", &[], "escaped").await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
            for method in [Method::PUT, Method::GET, Method::DELETE] {
                for path in ["/v1/keys/k-edge-%zz", "/v1/keys/k-edge-%2", "/v1/keys/k-edge-%"] {
                    let r = self.request(method.clone(), path, &[], if method == Method::PUT { "raw" } else { "" }).await;
                    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{method} {path}: {}", r.text());
                    assert_json_error(r.status, &r.content_type(), &r.body, path);
                    assert!(r.text().contains("percent-encoding") && r.text().contains("%25"), "{method} {path}: {}", r.text());
                }
            }
            assert_eq!(&self.get(b"k-edge-%zz").await.body[..], b"escaped");

            // Only `chunked` is a supported transfer coding: anything else is
            // 501 naming it, and nothing is stored (encoded or not).
            let gz = Self::key("edge", b"gzip");
            for coding in ["gzip, chunked", "x-custom, chunked"] {
                let bytes =
                    format!("PUT {} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: {coding}\r\n\r\n5\r\nhello\r\n0\r\n\r\n", key_path(&gz));
                let answers =
                    exchange(addr, format!("{bytes}GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes()).await;
                assert!(!answers.is_empty(), "Transfer-Encoding: {coding}: no answer");
                let a = &answers[0];
                assert_eq!(a.status, 501, "Transfer-Encoding: {coding}: {answers:?}");
                let name = coding.split(',').next().unwrap_or_default();
                assert_json_error(StatusCode::NOT_IMPLEMENTED, a.header("content-type").unwrap_or_default(), &a.body, coding);
                let error: serde_json::Value = serde_json::from_slice(&a.body).unwrap_or_default();
                let text = error["error"].as_str().unwrap_or_default();
                assert!(text.contains(&format!("{name:?}")) && text.contains("chunked"), "Transfer-Encoding: {coding}: {text}");
                assert_eq!(self.get(&gz).await.status, StatusCode::NOT_FOUND, "Transfer-Encoding: {coding} stored something");
            }
            let r = self.request(Method::POST, "/v1/batch/get", &[("transfer-encoding", "gzip, chunked")], Bytes::from_static(b"x")).await;
            assert_eq!(r.status, StatusCode::NOT_IMPLEMENTED, "{}", r.text());

            // A method a key path does not serve: 405 with `Allow`, the
            // empty key's path included (its GET, HEAD, PUT, DELETE and PATCH are 400).
            for (method, path) in ["TRACE", "POST", "OPTIONS", "PURGE"].iter().flat_map(|m| [(*m, path.as_str()), (*m, "/v1/keys/")]) {
                let bytes = format!("{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
                let answers = exchange(addr, bytes.as_bytes()).await;
                assert_eq!(statuses(&answers), [405], "{method} {path}: {answers:?}");
                let allow = answers[0].header("allow").unwrap_or_default();
                let mut allowed: Vec<&str> = allow.split(',').map(str::trim).collect();
                allowed.sort_unstable();
                assert_eq!(allowed, ["DELETE", "GET", "HEAD", "PATCH", "PUT"], "{method} {path}: Allow {allow:?}");
                let text = String::from_utf8_lossy(&answers[0].body);
                assert!(text.contains(method), "{method} {path}: the error does not name the method: {text}");
            }
            let answers = exchange(addr, b"TRACE /v1/batch/get HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
            assert_eq!((statuses(&answers), answers[0].header("allow")), (vec![405], Some("POST")), "{answers:?}");
            assert_eq!(&self.get(&key).await.body[..], b"v2");
        })
    }
}
