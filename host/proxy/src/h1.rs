//! A small HTTP/1.1 client for proxy -> node requests: per-node pools of
//! idle keep-alive connections, and each request written and read by the
//! task that serves the client (no connection task, no channel hop; that
//! hop costs several microseconds of CPU per request with hyper-util's
//! pooled client, see the benchmark). Used by [`crate::upstream`] when
//! `proxy.upstream_client = "direct"` (the default).
//!
//! Scope: exactly what nodes answer. Requests carry `Content-Length`;
//! responses are framed by `Content-Length`, `Transfer-Encoding: chunked`
//! or the end of the connection. A reused connection that fails before any
//! byte of the answer arrived (the node closed it while idle) is retried
//! once on a fresh connection; nothing else is retried here. Timeouts are
//! the caller's: dropping the future closes the connection.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;

/// A complete response.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Idle connections to one node.
pub struct NodePool {
    /// `host:port`.
    authority: String,
    idle: Mutex<Vec<(TcpStream, Instant)>>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
    max_body: usize,
}

/// Why a request got no complete answer.
#[derive(Debug)]
struct Failure {
    /// Nothing of the answer was received (safe to retry on a fresh
    /// connection when the connection was reused).
    before_answer: bool,
    reason: String,
}

impl NodePool {
    /// A pool for `addr` (`http://host:port`).
    pub fn new(addr: &str, max_idle: usize, idle_timeout: Duration, connect_timeout: Duration, max_body: usize) -> Result<Self, String> {
        let authority = addr
            .strip_prefix("http://")
            .filter(|a| !a.is_empty() && !a.contains('/'))
            .ok_or_else(|| format!("{addr} is not http://host:port"))?
            .to_string();
        Ok(NodePool { authority, idle: Mutex::new(Vec::new()), max_idle, idle_timeout, connect_timeout, max_body })
    }

    fn take_idle(&self) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((conn, since)) = idle.pop() {
            if since.elapsed() < self.idle_timeout {
                return Some(conn);
            }
        }
        None
    }

    fn put_idle(&self, conn: TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push((conn, Instant::now()));
        }
    }

    async fn connect(&self) -> Result<TcpStream, String> {
        let conn = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.authority))
            .await
            .map_err(|_| format!("connect timed out after {}", humantime::format_duration(self.connect_timeout)))?
            .map_err(|e| format!("connect: {e}"))?;
        let _ = conn.set_nodelay(true);
        Ok(conn)
    }

    /// Sends one request and reads the whole answer.
    pub async fn request(&self, method: &Method, path: &str, headers: &[(HeaderName, HeaderValue)], body: &[u8]) -> Result<Answer, String> {
        let head = encode_head(method, path, &self.authority, headers, body.len());
        if let Some(mut conn) = self.take_idle() {
            match self.exchange(&mut conn, method, &head, body).await {
                Ok((answer, reusable)) => {
                    if reusable {
                        self.put_idle(conn);
                    }
                    return Ok(answer);
                }
                Err(f) if f.before_answer => {} // closed while idle: retry fresh
                Err(f) => return Err(f.reason),
            }
        }
        let mut conn = self.connect().await?;
        match self.exchange(&mut conn, method, &head, body).await {
            Ok((answer, reusable)) => {
                if reusable {
                    self.put_idle(conn);
                }
                Ok(answer)
            }
            Err(f) => Err(f.reason),
        }
    }

    async fn exchange(&self, conn: &mut TcpStream, method: &Method, head: &[u8], body: &[u8]) -> Result<(Answer, bool), Failure> {
        let early = |reason: String| Failure { before_answer: true, reason };
        if body.is_empty() {
            conn.write_all(head).await.map_err(|e| early(format!("write: {e}")))?;
        } else if body.len() <= 16 * 1024 {
            let mut all = Vec::with_capacity(head.len() + body.len());
            all.extend_from_slice(head);
            all.extend_from_slice(body);
            conn.write_all(&all).await.map_err(|e| early(format!("write: {e}")))?;
        } else {
            conn.write_all(head).await.map_err(|e| early(format!("write: {e}")))?;
            conn.write_all(body).await.map_err(|e| early(format!("write: {e}")))?;
        }
        let mut buf = BytesMut::with_capacity(4096);
        // Head.
        let (status, headers, head_len) = loop {
            let n = conn.read_buf(&mut buf).await.map_err(|e| Failure { before_answer: buf.is_empty(), reason: format!("read: {e}") })?;
            if n == 0 {
                return Err(Failure { before_answer: buf.is_empty(), reason: "connection closed before a complete answer".into() });
            }
            let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut slots);
            match parsed.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = StatusCode::from_u16(parsed.code.unwrap_or(0)).map_err(|_| bad("invalid status code"))?;
                    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
                    for h in parsed.headers.iter() {
                        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad("invalid header name"))?;
                        let value = HeaderValue::from_bytes(h.value).map_err(|_| bad("invalid header value"))?;
                        headers.append(name, value);
                    }
                    break (status, headers, len);
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
                Ok(httparse::Status::Partial) => return Err(bad("response head over 64 KiB")),
                Err(e) => return Err(bad(&format!("unparsable response: {e}"))),
            }
        };
        buf.advance(head_len);
        let close = headers
            .get(http::header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let no_body = *method == Method::HEAD || status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        let chunked = headers
            .get(http::header::TRANSFER_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<usize>().ok());
        let (body, reusable) = if no_body {
            (Bytes::new(), !close)
        } else if chunked {
            (read_chunked(conn, &mut buf, self.max_body).await?, !close)
        } else if let Some(len) = length {
            if len > self.max_body {
                return Err(bad(&format!("answer body of {len} bytes is over the {} byte limit", self.max_body)));
            }
            while buf.len() < len {
                buf.reserve(len - buf.len());
                let n = conn.read_buf(&mut buf).await.map_err(|e| bad(&format!("read: {e}")))?;
                if n == 0 {
                    return Err(bad("connection closed in the middle of the answer body"));
                }
            }
            let body = buf.split_to(len).freeze();
            (body, !close && buf.is_empty())
        } else {
            loop {
                if buf.len() > self.max_body {
                    return Err(bad("answer body over the limit"));
                }
                let n = conn.read_buf(&mut buf).await.map_err(|e| bad(&format!("read: {e}")))?;
                if n == 0 {
                    break;
                }
            }
            (buf.split().freeze(), false)
        };
        Ok((Answer { status, headers, body }, reusable))
    }
}

fn bad(reason: &str) -> Failure {
    Failure { before_answer: false, reason: reason.to_string() }
}

fn encode_head(method: &Method, path: &str, authority: &str, headers: &[(HeaderName, HeaderValue)], body_len: usize) -> Vec<u8> {
    let mut head = Vec::with_capacity(64 + path.len() + headers.len() * 48);
    head.extend_from_slice(method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(path.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    head.extend_from_slice(authority.as_bytes());
    for (name, value) in headers {
        if *name == http::header::CONTENT_LENGTH || *name == http::header::HOST || *name == http::header::TRANSFER_ENCODING || *name == http::header::CONNECTION {
            continue;
        }
        head.extend_from_slice(b"\r\n");
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
    }
    if body_len > 0 || matches!(*method, Method::PUT | Method::POST) {
        head.extend_from_slice(b"\r\ncontent-length: ");
        head.extend_from_slice(body_len.to_string().as_bytes());
    }
    head.extend_from_slice(b"\r\n\r\n");
    head
}

/// Reads a chunked body; `buf` holds what was read past the head.
async fn read_chunked(conn: &mut TcpStream, buf: &mut BytesMut, max_body: usize) -> Result<Bytes, Failure> {
    let mut body = BytesMut::new();
    loop {
        // Chunk size line.
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            if buf.len() > 1024 {
                return Err(bad("chunk size line too long"));
            }
            if conn.read_buf(buf).await.map_err(|e| bad(&format!("read: {e}")))? == 0 {
                return Err(bad("connection closed in a chunked body"));
            }
        };
        let line = std::str::from_utf8(&buf[..line_end]).map_err(|_| bad("bad chunk size"))?;
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16).map_err(|_| bad("bad chunk size"))?;
        buf.advance(line_end + 2);
        if body.len() + size > max_body {
            return Err(bad("chunked answer body over the limit"));
        }
        // Chunk data and its CRLF (for the last chunk: the empty trailer line).
        while buf.len() < size + 2 {
            if conn.read_buf(buf).await.map_err(|e| bad(&format!("read: {e}")))? == 0 {
                return Err(bad("connection closed in a chunked body"));
            }
        }
        if size == 0 {
            buf.advance(2);
            return Ok(body.freeze());
        }
        body.extend_from_slice(&buf[..size]);
        buf.advance(size + 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A one-connection server answering each request with the next canned reply.
    async fn server(replies: Vec<&'static [u8]>) -> (String, tokio::task::JoinHandle<Vec<Vec<u8>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            for reply in replies {
                let mut buf = vec![0u8; 65536];
                let n = conn.read(&mut buf).await.unwrap();
                seen.push(buf[..n].to_vec());
                conn.write_all(reply).await.unwrap();
            }
            seen
        });
        (addr, task)
    }

    #[tokio::test]
    async fn frames_answers_and_reuses_the_connection() {
        let (addr, task) = server(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\netag: \"x\"\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n",
        ])
        .await;
        let pool = NodePool::new(&addr, 4, Duration::from_secs(10), Duration::from_secs(1), 1 << 20).unwrap();
        let a = pool.request(&Method::GET, "/v1/keys/k", &[], b"").await.unwrap();
        assert_eq!((a.status, &a.body[..], a.headers["etag"].to_str().unwrap()), (StatusCode::OK, &b"hello"[..], "\"x\""));
        let a = pool.request(&Method::POST, "/v1/batch/get", &[(http::header::CONTENT_TYPE, HeaderValue::from_static("a/b"))], b"body").await.unwrap();
        assert_eq!(&a.body[..], b"abcde");
        let a = pool.request(&Method::DELETE, "/v1/keys/k", &[], b"").await.unwrap();
        assert_eq!(a.status, StatusCode::NO_CONTENT);
        // HEAD: content-length describes the value, no body follows.
        let a = pool.request(&Method::HEAD, "/v1/keys/k", &[], b"").await.unwrap();
        assert_eq!((a.status, a.body.len()), (StatusCode::OK, 0));
        let seen = task.await.unwrap();
        assert!(seen[0].starts_with(b"GET /v1/keys/k HTTP/1.1\r\nhost: 127.0.0.1:"));
        assert!(String::from_utf8_lossy(&seen[1]).contains("content-length: 4\r\n\r\nbody"));
        assert_eq!(seen.len(), 4, "all four requests on one connection");
    }

    #[tokio::test]
    async fn retries_a_reused_connection_closed_while_idle() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            // First connection: one answer, then closed.
            let (mut c, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = c.read(&mut buf).await.unwrap();
            c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na").await.unwrap();
            drop(c);
            let (mut c, _) = listener.accept().await.unwrap();
            let _ = c.read(&mut buf).await.unwrap();
            c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nb").await.unwrap();
        });
        let pool = NodePool::new(&addr, 4, Duration::from_secs(10), Duration::from_secs(1), 1 << 20).unwrap();
        assert_eq!(&pool.request(&Method::GET, "/", &[], b"").await.unwrap().body[..], b"a");
        assert_eq!(&pool.request(&Method::GET, "/", &[], b"").await.unwrap().body[..], b"b");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn refuses_oversized_and_malformed_answers() {
        let (addr, _task) = server(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 999\r\n\r\n"]).await;
        let pool = NodePool::new(&addr, 4, Duration::from_secs(10), Duration::from_secs(1), 100).unwrap();
        assert!(pool.request(&Method::GET, "/", &[], b"").await.unwrap_err().contains("limit"));
        let (addr, _task) = server(vec![b"NOT HTTP\r\n\r\n"]).await;
        let pool = NodePool::new(&addr, 4, Duration::from_secs(10), Duration::from_secs(1), 100).unwrap();
        assert!(pool.request(&Method::GET, "/", &[], b"").await.unwrap_err().contains("unparsable"));
        assert!(NodePool::new("127.0.0.1:1", 1, Duration::from_secs(1), Duration::from_secs(1), 1).is_err());
    }
}
