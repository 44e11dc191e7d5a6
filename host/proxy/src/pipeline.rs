//! Pipelined HTTP/1.1 to a node for every request the proxy forwards
//! (reads, writes and the per-node legs of batches): the requests of many
//! clients share a few connections per node
//! (`proxy.pipelines_per_node`), and the requests that arrive while a write
//! is being prepared leave in one `write`, so the node reads them with one
//! `read` and answers them with one write (the answers of one poll of a
//! connection leave together: `shardgate_role::coalesce`). Under load this divides the proxy -> node syscalls, the most
//! expensive part of a proxied GET, by the batch size.
//!
//! Where it sits: [`crate::h1::NodePool`] owns the pipes of one node and
//! sends requests through them; health checks keep using its
//! one-request-per-connection path, and so does a request that finds every
//! pipe of the node [`MAX_DEPTH`] deep (that path is bounded per node, so
//! a burst waits for a connection instead of opening hundreds).
//!
//! Each pipe is a connection with two tasks: a writer that, once woken,
//! yields once (so the other requests of this scheduler tick can join) and
//! writes everything queued, and a reader that parses answers in order and
//! hands each to the oldest waiting request. A connection that fails, is
//! closed by the node or stalls for `proxy.request_timeout` while requests
//! wait fails every request still waiting, marked "before the answer" when
//! nothing of its answer had arrived (GET and HEAD are safe to send again)
//! and "not sent" when it was still queued (anything is safe to send
//! again; a write that was sent but not answered is not retried: it may
//! have been applied, and an increment or a conditional write is not
//! idempotent).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use http::{HeaderName, HeaderValue, Method};
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, oneshot};
use tokio::task::AbortHandle;

use crate::wire::{Answer, MAX_HEAD, Request, parse_head, take_front};

/// Requests in flight on one pipe before requests use a connection of
/// their own (bounded per node) instead. Bounds head-of-line blocking
/// behind a slow answer; deep enough that 64 RESP clients with 16
/// pipelined commands each stay on the pipes (at 64, the overflow opened
/// hundreds of connections per node: connect timeouts, nodes ejected).
pub const MAX_DEPTH: usize = 1024;

/// Why a pipelined read got no answer.
#[derive(Debug)]
pub enum PipeError {
    /// Every pipe is [`MAX_DEPTH`] deep, or pipelining is off: send it
    /// another way.
    Busy,
    /// The pipe failed. `before_answer`: nothing of this request's answer
    /// arrived, so a read may be sent again; `sent`: the request had been
    /// written (when not, anything may be sent again); `stalled`: it failed
    /// because no answer came within its stall timeout.
    Failed { before_answer: bool, sent: bool, stalled: bool, reason: String },
}

/// The pipes to one node.
pub struct NodePipes {
    authority: String,
    /// The pipes of one connection worker: `proxy.pipelines_per_node`
    /// split among the workers, at least one.
    per_worker: usize,
    /// The pipes of worker `w` are `slots[w * per_worker..][..per_worker]`
    /// (one set when the process has no workers).
    slots: Vec<Mutex<Option<Arc<Pipe>>>>,
    next: std::sync::atomic::AtomicUsize,
    connect_timeout: Duration,
    stall_timeout: Duration,
    max_body: usize,
    counts: Arc<PipeCounts>,
}

/// What the pipes of one node carried (`shardgate_proxy_pipelined_requests`
/// and `_pipelined_writes` per node in `/metrics`).
#[derive(Debug, Default, Clone)]
pub struct PipeCounts {
    /// Requests queued on a pipe.
    pub requests: Counter,
    /// `write` calls that sent them (requests / writes = the batch size).
    pub writes: Counter,
}

struct Pipe {
    state: Mutex<PipeState>,
    writer: Notify,
    /// A request joined an empty queue: the reader's idle read becomes a
    /// read bounded by the stall timeout.
    arrived: Notify,
    tasks: Mutex<Vec<AbortHandle>>,
    counts: Arc<PipeCounts>,
}

struct PipeState {
    /// Encoded requests not written yet.
    out: Vec<u8>,
    /// Requests written or queued, oldest first; answers come in this order.
    waiting: VecDeque<Waiter>,
    /// The newest `unsent` of `waiting` are still in `out`.
    unsent: usize,
    closed: bool,
}

struct Waiter {
    head: bool,
    answer: oneshot::Sender<Result<Answer, PipeError>>,
}

impl NodePipes {
    /// `count` pipes (0: pipelining off) to `authority` (`host:port`).
    pub fn new(
        authority: &str,
        count: usize,
        connect_timeout: Duration,
        stall_timeout: Duration,
        max_body: usize,
        counts: PipeCounts,
    ) -> Self {
        let workers = shardgate_role::workers::installed().map_or(1, |w| w.len());
        let per_worker = count.div_ceil(workers);
        NodePipes {
            authority: authority.to_string(),
            // `count` pipes in all, split among the connection workers
            // (at least one each), so a worker's requests ride pipes whose
            // tasks run on that worker; fewer pipes, fuller writes.
            per_worker,
            slots: (0..per_worker * workers).map(|_| Mutex::new(None)).collect(),
            next: Default::default(),
            connect_timeout,
            stall_timeout,
            max_body,
            counts: Arc::new(counts),
        }
    }

    /// Requests and writes so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.counts.requests.get(), self.counts.writes.get())
    }

    /// Sends a request and waits for its answer. The caller bounds the
    /// wait; dropping the future leaves the answer to be read and
    /// discarded (the request itself is sent, once queued).
    pub async fn send(
        &self,
        method: &Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        extra: &[(HeaderName, HeaderValue)],
        body: &[u8],
    ) -> Result<Answer, PipeError> {
        if self.slots.is_empty() {
            return Err(PipeError::Busy);
        }
        let request = Request { method, path, authority: &self.authority, headers, extra, body };
        // This worker's pipes first (round robin among them), then the
        // others' when all of its own are full.
        let own = shardgate_role::workers::current().map_or(0, |w| w * self.per_worker % self.slots.len());
        let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for i in 0..self.slots.len() {
            let index = if i < self.per_worker { own + (turn + i) % self.per_worker } else { (own + i) % self.slots.len() };
            let slot = &self.slots[index];
            let pipe = match live(slot) {
                Some(pipe) => pipe,
                // Boxed: a connect's state, inline, would size every
                // request's future (and each future above it).
                None => match Box::pin(self.open(slot)).await {
                    Ok(pipe) => pipe,
                    Err(reason) => return Err(PipeError::Failed { before_answer: true, sent: false, stalled: false, reason }),
                },
            };
            let (tx, rx) = oneshot::channel();
            let (wake_writer, wake_reader) = {
                let mut st = pipe.state.lock().unwrap_or_else(|e| e.into_inner());
                if st.closed || st.waiting.len() >= MAX_DEPTH {
                    continue;
                }
                // The writer takes `out` whole: empty means no write is
                // scheduled yet.
                let wake_writer = st.out.is_empty();
                let wake_reader = st.waiting.is_empty();
                request.encode_head(&mut st.out);
                st.out.extend_from_slice(body);
                st.unsent += 1;
                st.waiting.push_back(Waiter { head: *method == Method::HEAD, answer: tx });
                (wake_writer, wake_reader)
            };
            self.counts.requests.inc();
            if wake_reader {
                pipe.arrived.notify_one();
            }
            if wake_writer {
                pipe.writer.notify_one();
            }
            return match rx.await {
                Ok(result) => result,
                Err(_) => Err(PipeError::Failed { before_answer: true, sent: true, stalled: false, reason: "pipe closed".into() }),
            };
        }
        Err(PipeError::Busy)
    }

    /// Connects a new pipe into `slot`, which [`live`] found empty or
    /// closed; a pipe another request connected meanwhile wins.
    async fn open(&self, slot: &Mutex<Option<Arc<Pipe>>>) -> Result<Arc<Pipe>, String> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.authority))
            .await
            .map_err(|_| format!("connect timed out after {}", humantime::format_duration(self.connect_timeout)))?
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let mut current = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pipe) = current.as_ref()
            && !pipe.is_closed()
        {
            return Ok(pipe.clone()); // another request connected first; ours is dropped
        }
        // Any pipe still in the slot is closed: dropping it is all it needs.
        let pipe = Pipe::start(stream, self.stall_timeout, self.max_body, self.counts.clone());
        *current = Some(pipe.clone());
        Ok(pipe)
    }
}

/// The pipe in `slot` if it is open.
fn live(slot: &Mutex<Option<Arc<Pipe>>>) -> Option<Arc<Pipe>> {
    slot.lock().unwrap_or_else(|e| e.into_inner()).as_ref().filter(|pipe| !pipe.is_closed()).cloned()
}

impl Drop for NodePipes {
    fn drop(&mut self) {
        for slot in &self.slots {
            if let Some(pipe) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
                pipe.close("the node left the routing state", true);
            }
        }
    }
}

impl Pipe {
    fn start(stream: TcpStream, stall_timeout: Duration, max_body: usize, counts: Arc<PipeCounts>) -> Arc<Pipe> {
        let (read, write) = stream.into_split();
        let pipe = Arc::new(Pipe {
            state: Mutex::new(PipeState { out: Vec::with_capacity(4096), waiting: VecDeque::new(), unsent: 0, closed: false }),
            writer: Notify::new(),
            arrived: Notify::new(),
            tasks: Mutex::new(Vec::new()),
            counts,
        });
        let writer = tokio::spawn(write_loop(pipe.clone(), write));
        let reader = tokio::spawn(read_loop(pipe.clone(), read, stall_timeout, max_body));
        pipe.tasks.lock().unwrap_or_else(|e| e.into_inner()).extend([writer.abort_handle(), reader.abort_handle()]);
        pipe
    }

    fn is_closed(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).closed
    }

    /// Fails every waiting request and stops both tasks. `front_before`:
    /// nothing of the oldest request's answer has arrived.
    fn close(&self, reason: &str, front_before: bool) {
        self.fail(reason, front_before, false);
    }

    /// [`Pipe::close`]; `stalled`: because no answer came in time.
    fn fail(&self, reason: &str, front_before: bool, stalled: bool) {
        let (waiting, unsent) = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.closed = true;
            st.out.clear();
            (std::mem::take(&mut st.waiting), std::mem::take(&mut st.unsent))
        };
        let sent_count = waiting.len().saturating_sub(unsent);
        for (i, w) in waiting.into_iter().enumerate() {
            let before_answer = i > 0 || front_before;
            let sent = i < sent_count;
            let _ = w.answer.send(Err(PipeError::Failed { before_answer, sent, stalled, reason: reason.to_string() }));
        }
        // The writer also exits on its own when woken (in case its abort
        // handle was not stored yet).
        self.writer.notify_one();
        for task in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            task.abort();
        }
    }
}

async fn write_loop(pipe: Arc<Pipe>, mut write: OwnedWriteHalf) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        pipe.writer.notified().await;
        // Let the requests of this scheduler tick join this write.
        tokio::task::yield_now().await;
        {
            let mut st = pipe.state.lock().unwrap_or_else(|e| e.into_inner());
            if st.closed {
                return;
            }
            std::mem::swap(&mut st.out, &mut buf);
            st.unsent = 0;
        }
        if buf.is_empty() {
            continue;
        }
        pipe.counts.writes.inc();
        if let Err(e) = write.write_all(&buf).await {
            pipe.close(&format!("write: {e}"), true);
            return;
        }
        buf.clear();
        if buf.capacity() > 1 << 20 {
            buf = Vec::with_capacity(4096);
        }
    }
}

async fn read_loop(pipe: Arc<Pipe>, mut read: OwnedReadHalf, stall_timeout: Duration, max_body: usize) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // The pipe's one timer, pushed back before every read while requests
    // wait (pushing a timer later is an atomic store, not a new timer).
    let stall = tokio::time::sleep(stall_timeout);
    tokio::pin!(stall);
    loop {
        // Hand out every complete answer in the buffer.
        loop {
            let head = {
                let st = pipe.state.lock().unwrap_or_else(|e| e.into_inner());
                st.waiting.front().map(|w| w.head)
            };
            let Some(head) = head else {
                if !buf.is_empty() {
                    return pipe.close("the node sent bytes nobody asked for", false);
                }
                break;
            };
            let framing = match parse_head(&buf) {
                Ok(Some(f)) => f,
                Ok(None) if buf.len() < MAX_HEAD => break,
                Ok(None) => return pipe.close("response head over 64 KiB", false),
                Err(f) => return pipe.close(&f.reason, false),
            };
            let Some(len) = framing.body_length(head) else {
                // Not framed by length: the pipe cannot tell where the next
                // answer starts. Nodes always send a length.
                return pipe.close("an answer without content-length on a pipelined connection", buf.is_empty());
            };
            if len > max_body {
                return pipe.close(&format!("answer body of {len} bytes is over the {max_body} byte limit"), false);
            }
            let total = framing.head_len + len;
            if buf.len() < total {
                buf.reserve(total - buf.len());
                break;
            }
            let all = take_front(&mut buf, total);
            let body = all.slice(framing.head_len..);
            let close = framing.close;
            let answer = match framing.into_answer(&all, body) {
                Ok(answer) => answer,
                Err(f) => return pipe.close(&f.reason, false),
            };
            let waiter = pipe.state.lock().unwrap_or_else(|e| e.into_inner()).waiting.pop_front();
            if let Some(w) = waiter {
                let _ = w.answer.send(Ok(answer)); // the caller may have given up
            }
            if close {
                return pipe.close("the node closed the connection", true);
            }
        }
        let waiting = !pipe.state.lock().unwrap_or_else(|e| e.into_inner()).waiting.is_empty();
        let n = if waiting {
            stall.as_mut().reset(tokio::time::Instant::now() + stall_timeout);
            tokio::select! {
                biased;
                n = read.read_buf(&mut buf) => n,
                () = &mut stall => {
                    let reason = format!("no answer within {}", humantime::format_duration(stall_timeout));
                    return pipe.fail(&reason, buf.is_empty(), true);
                }
            }
        } else {
            tokio::select! {
                n = read.read_buf(&mut buf) => n,
                // A request arrived: read again, bounded (`read_buf` is
                // cancel safe).
                () = pipe.arrived.notified() => continue,
            }
        };
        match n {
            Ok(0) => return pipe.close("the node closed the connection", buf.is_empty()),
            Ok(_) => {}
            Err(e) => return pipe.close(&format!("read: {e}"), buf.is_empty()),
        }
    }
}
