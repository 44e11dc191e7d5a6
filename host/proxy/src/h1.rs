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
//! once on a fresh connection; nothing else is retried here.
//!
//! Time bound (`proxy.request_timeout`, the pool's `timeout`): a request on
//! a pipe fails when its pipe stalls that long with requests waiting (the
//! pipe's reader keeps the one timer; a node that keeps answering a deep
//! queue is busy, not failed); a request on a connection of its own,
//! waiting for that connection included, gets that long in all (a read
//! retried there after its pipe failed gets it again). So a piped
//! request costs no timer of its own (a timer per request was ~8% of a
//! pipelined GET's CPU). A caller may still bound a request further:
//! dropping the future closes a connection of its own, and leaves a piped
//! answer to be read and discarded.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use crate::wire::Answer;
use crate::wire::{Failure, MAX_HEAD, Request, bad, parse_head, take_front};

/// One connection to a node with the buffers it reuses across requests
/// (allocating them per request was a visible share of the hop's CPU).
struct Conn {
    stream: TcpStream,
    /// What was read from the node; emptied per exchange.
    read: BytesMut,
    /// The request being written; emptied per exchange.
    write: Vec<u8>,
}

impl Conn {
    fn new(stream: TcpStream) -> Self {
        Conn { stream, read: BytesMut::with_capacity(4096), write: Vec::with_capacity(256) }
    }
}

/// Why a request to a node got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeFailure {
    /// Nothing arrived within the pool's `timeout` (`proxy.request_timeout`).
    NoAnswer { within: Duration },
    /// The connection failed, or the answer was not HTTP the proxy takes.
    Failed(String),
}

impl std::fmt::Display for NodeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeFailure::NoAnswer { within } => write!(f, "no answer within {}", humantime::format_duration(*within)),
            NodeFailure::Failed(reason) => f.write_str(reason),
        }
    }
}

/// Idle connections to one node.
pub struct NodePool {
    /// `host:port`.
    authority: String,
    idle: Mutex<Vec<(Conn, Instant)>>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
    max_body: usize,
    /// `proxy.request_timeout`: see the module docs.
    timeout: Duration,
    /// Pipelined connections for every forwarded request
    /// ([`crate::pipeline`]).
    pipes: crate::pipeline::NodePipes,
    /// Requests on connections of their own at once (`max_idle` permits):
    /// a burst past the pipes' depth waits for a connection instead of
    /// opening one per request (hundreds of connects at once overran the
    /// node's accept queue: connect timeouts, the node ejected).
    open: tokio::sync::Semaphore,
}

impl NodePool {
    /// A pool for `addr` (`http://host:port`) without pipelined reads.
    pub fn new(addr: &str, max_idle: usize, idle_timeout: Duration, connect_timeout: Duration, max_body: usize) -> Result<Self, String> {
        Self::with_pipes(addr, max_idle, idle_timeout, connect_timeout, max_body, 0, Duration::from_secs(5), Default::default())
    }

    /// A pool for `addr` whose requests go through `pipes`
    /// pipelined connections (0: none), each failed when no answer arrives
    /// for `timeout` while requests wait; a request on a connection of its
    /// own gets `timeout` in all.
    #[allow(clippy::too_many_arguments)]
    pub fn with_pipes(
        addr: &str,
        max_idle: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
        max_body: usize,
        pipes: usize,
        timeout: Duration,
        counts: crate::pipeline::PipeCounts,
    ) -> Result<Self, String> {
        let authority = addr
            .strip_prefix("http://")
            .filter(|a| !a.is_empty() && !a.contains('/'))
            .ok_or_else(|| format!("{addr} is not http://host:port"))?
            .to_string();
        let pipes = crate::pipeline::NodePipes::new(&authority, pipes, connect_timeout, timeout, max_body, counts);
        let open = tokio::sync::Semaphore::new(max_idle.max(1));
        Ok(NodePool { authority, idle: Mutex::new(Vec::new()), max_idle, idle_timeout, connect_timeout, max_body, timeout, pipes, open })
    }

    fn take_idle(&self, now: Instant) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((conn, since)) = idle.pop() {
            if now.saturating_duration_since(since) < self.idle_timeout {
                return Some(conn);
            }
        }
        None
    }

    fn put_idle(&self, conn: Conn, now: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push((conn, now));
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

    /// Requests sent through this node's pipes, and the writes that carried
    /// them.
    pub fn pipelined(&self) -> (u64, u64) {
        self.pipes.counts()
    }

    /// Sends one request on a connection of its own (never pipelined: the
    /// health check) and reads the whole answer.
    pub async fn request(&self, method: &Method, path: &str, headers: &[(HeaderName, HeaderValue)], body: &[u8]) -> Result<Answer, String> {
        self.request_on_connection(Instant::now(), method, path, headers, &[], body).await
    }

    /// Sends one request and reads the whole answer, bounded as the module
    /// docs say: through a pipe when the pool has pipes and one has room,
    /// else on a connection of its own. `now` (the caller already read the
    /// clock) stamps idle connections and starts the bound of a request on
    /// a connection of its own; `extra` headers go after `headers` (the
    /// node token).
    pub async fn request_at(
        &self,
        now: Instant,
        method: &Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        extra: &[(HeaderName, HeaderValue)],
        body: &[u8],
    ) -> Result<Answer, NodeFailure> {
        use crate::pipeline::PipeError;
        let read = matches!(*method, Method::GET | Method::HEAD);
        // Every pipe busy, the request never left, or a read of which
        // nothing was answered (GET and HEAD may be sent again): one
        // request on its own connection, bounded from now (after a failed
        // pipe, from the failure: a read retried after a stall gets a
        // whole `timeout` again).
        let from = match self.pipes.send(method, path, headers, extra, body).await {
            Ok(answer) => return Ok(answer),
            Err(PipeError::Busy) => now,
            Err(PipeError::Failed { sent: false, .. }) => Instant::now(),
            Err(PipeError::Failed { before_answer: true, .. }) if read => Instant::now(),
            Err(PipeError::Failed { stalled: true, .. }) => return Err(NodeFailure::NoAnswer { within: self.timeout }),
            Err(PipeError::Failed { reason, .. }) => return Err(NodeFailure::Failed(reason)),
        };
        // Boxed: the fallback (a connect and an exchange) is kilobytes of
        // state that, inline, would size every piped request's future.
        let alone = Box::pin(async {
            let _permit = self.open.acquire().await.map_err(|_| "the node's pool is closed".to_string())?;
            self.request_on_connection(from, method, path, headers, extra, body).await
        });
        match tokio::time::timeout_at((from + self.timeout).into(), alone).await {
            Ok(result) => result.map_err(NodeFailure::Failed),
            Err(_) => Err(NodeFailure::NoAnswer { within: self.timeout }),
        }
    }

    async fn request_on_connection(
        &self,
        now: Instant,
        method: &Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        extra: &[(HeaderName, HeaderValue)],
        body: &[u8],
    ) -> Result<Answer, String> {
        let request = Request { method, path, authority: &self.authority, headers, extra, body };
        if let Some(mut conn) = self.take_idle(now) {
            match self.exchange(&mut conn, &request).await {
                Ok((answer, reusable)) => {
                    if reusable {
                        self.put_idle(conn, now);
                    }
                    return Ok(answer);
                }
                Err(f) if f.before_answer => {} // closed while idle: retry fresh
                Err(f) => return Err(f.reason),
            }
        }
        let mut conn = Conn::new(self.connect().await?);
        match self.exchange(&mut conn, &request).await {
            Ok((answer, reusable)) => {
                if reusable {
                    self.put_idle(conn, now);
                }
                Ok(answer)
            }
            Err(f) => Err(f.reason),
        }
    }

    async fn exchange(&self, conn: &mut Conn, request: &Request<'_>) -> Result<(Answer, bool), Failure> {
        let early = |reason: String| Failure { before_answer: true, reason };
        let Conn { stream, read: buf, write } = conn;
        write.clear();
        request.encode_head(write);
        let body = request.body;
        if body.is_empty() {
            stream.write_all(write).await.map_err(|e| early(format!("write: {e}")))?;
        } else if body.len() <= 16 * 1024 {
            write.extend_from_slice(body);
            stream.write_all(write).await.map_err(|e| early(format!("write: {e}")))?;
        } else {
            stream.write_all(write).await.map_err(|e| early(format!("write: {e}")))?;
            stream.write_all(body).await.map_err(|e| early(format!("write: {e}")))?;
        }
        if write.capacity() > 64 * 1024 {
            *write = Vec::with_capacity(256);
        }
        buf.clear();
        buf.reserve(4096);
        // Head.
        let framing = loop {
            let n = stream.read_buf(buf).await.map_err(|e| Failure { before_answer: buf.is_empty(), reason: format!("read: {e}") })?;
            if n == 0 {
                return Err(Failure { before_answer: buf.is_empty(), reason: "connection closed before a complete answer".into() });
            }
            match parse_head(buf)? {
                Some(framing) => break framing,
                None if buf.len() < MAX_HEAD => continue,
                None => return Err(bad("response head over 64 KiB")),
            }
        };
        // `all` holds the head (and, when framed by length, the body): the
        // header values and the body are slices of it.
        let (all, body, reusable) = if let Some(len) = framing.body_length(*request.method == Method::HEAD) {
            if len > self.max_body {
                return Err(bad(&format!("answer body of {len} bytes is over the {} byte limit", self.max_body)));
            }
            let total = framing.head_len + len;
            while buf.len() < total {
                buf.reserve(total - buf.len());
                let n = stream.read_buf(buf).await.map_err(|e| bad(&format!("read: {e}")))?;
                if n == 0 {
                    return Err(bad("connection closed in the middle of the answer body"));
                }
            }
            let reusable = !framing.close && buf.len() == total;
            let all = take_front(buf, total);
            let body = all.slice(framing.head_len..);
            (all, body, reusable)
        } else if framing.chunked {
            let head = take_front(buf, framing.head_len);
            let body = read_chunked(stream, buf, self.max_body).await?;
            (head, body, !framing.close)
        } else {
            // Framed by the end of the connection.
            let head = take_front(buf, framing.head_len);
            loop {
                if buf.len() > self.max_body {
                    return Err(bad("answer body over the limit"));
                }
                let n = stream.read_buf(buf).await.map_err(|e| bad(&format!("read: {e}")))?;
                if n == 0 {
                    break;
                }
            }
            (head, buf.split().freeze(), false)
        };
        Ok((framing.into_answer(&all, body)?, reusable))
    }
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
    use http::StatusCode;

    use crate::wire::COPY_OUT_MAX;
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
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ndate: Tue, 24 Nov 2026 10:00:00 GMT\r\nconnection: keep-alive\r\netag: \"x\"\r\nx-empty:\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n",
        ])
        .await;
        let pool = NodePool::new(&addr, 4, Duration::from_secs(10), Duration::from_secs(1), 1 << 20).unwrap();
        let a = pool.request(&Method::GET, "/v1/keys/k", &[], b"").await.unwrap();
        assert_eq!((a.status, &a.body[..], a.headers["etag"].to_str().unwrap()), (StatusCode::OK, &b"hello"[..], "\"x\""));
        // End-to-end headers only, values intact (an empty one too).
        assert_eq!(a.headers.get("x-empty").map(|v| v.as_bytes()), Some(&b""[..]));
        assert!(a.headers.get("date").is_none() && a.headers.get("connection").is_none(), "{:?}", a.headers);
        assert_eq!(a.headers["content-length"], "5");
        let a = pool
            .request(&Method::POST, "/v1/batch/get", &[(http::header::CONTENT_TYPE, HeaderValue::from_static("a/b"))], b"body")
            .await
            .unwrap();
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
    async fn large_answers_and_close_lists() {
        // Bigger than the copy-out limit: split off the read buffer; the
        // connection still serves the next request.
        static BIG: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
            let mut r = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", 3 * COPY_OUT_MAX).into_bytes();
            r.extend((0..3 * COPY_OUT_MAX).map(|i| (i % 251) as u8));
            r
        });
        let (addr, task) = server(vec![&BIG[..], b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\ncontent-length: 2\r\n\r\nok"]).await;
        let pool = NodePool::new(&addr, 4, Duration::from_secs(10), Duration::from_secs(1), 1 << 20).unwrap();
        let a = pool.request(&Method::GET, "/big", &[], b"").await.unwrap();
        assert_eq!(a.body.len(), 3 * COPY_OUT_MAX);
        assert!(a.body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
        let a = pool.request(&Method::GET, "/small", &[], b"").await.unwrap();
        assert_eq!(&a.body[..], b"ok");
        assert_eq!(task.await.unwrap().len(), 2, "both on one connection");
        assert!(pool.idle.lock().unwrap().is_empty(), "a connection answered with `close` in a list is not reused");
    }

    #[tokio::test]
    async fn refuses_oversized_and_malformed_answers() {
        let (addr, _task) = server(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!"]).await;
        let pool = NodePool::new(&addr, 4, Duration::from_secs(10), Duration::from_secs(1), 100).unwrap();
        assert!(pool.request(&Method::GET, "/", &[], b"").await.unwrap_err().contains("content-length"));
        let (addr, _task) = server(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 999\r\n\r\n"]).await;
        let pool = NodePool::new(&addr, 4, Duration::from_secs(10), Duration::from_secs(1), 100).unwrap();
        assert!(pool.request(&Method::GET, "/", &[], b"").await.unwrap_err().contains("limit"));
        let (addr, _task) = server(vec![b"NOT HTTP\r\n\r\n"]).await;
        let pool = NodePool::new(&addr, 4, Duration::from_secs(10), Duration::from_secs(1), 100).unwrap();
        assert!(pool.request(&Method::GET, "/", &[], b"").await.unwrap_err().contains("unparsable"));
        assert!(NodePool::new("127.0.0.1:1", 1, Duration::from_secs(1), Duration::from_secs(1), 1).is_err());
    }
}
