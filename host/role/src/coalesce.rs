//! Answers written during one poll of a connection leave in one write.
//!
//! Where it sits: between hyper's HTTP/1 connection and the socket (or the
//! TLS stream) of every connection [`crate::serve`] serves. hyper writes an
//! answer and flushes it before it parses the next request; with requests
//! pipelined in one read (a proxy's pipes, `proxy.pipelines_per_node`), that
//! is one `writev` per answer. [`coalesce`] splits the socket into
//! [`CoalescedIo`], which hyper reads and writes, and [`FlushAtEndOfPoll`],
//! which wraps the connection's future: writes go to a buffer, hyper's
//! flushes are deferred, and after every poll of the connection the buffer
//! is written at once. So everything hyper answered in one poll leaves in
//! one write, and nothing stays buffered past the poll that wrote it (a
//! streamed body's chunk, a `100 Continue`, the answer before a close:
//! [`CoalescedIo`]'s shutdown writes the buffer first).
//!
//! hyper's own `pipeline_flush` option batched the same way, but skipped
//! every flush while its read buffer held bytes, the one before closing
//! included: the answer to a request with `Connection: close` and requests
//! pipelined behind it, or followed by garbage, was never written.
//!
//! Memory: the buffer holds at most [`MAX_BUFFERED`] bytes (and keeps at
//! most 16 KiB of capacity between batches); a write that
//! would take it past that first writes the buffer out (a client that does
//! not read holds hyper back, as the socket would), and a write of at least
//! [`MAX_BUFFERED`] bytes (a large value) goes to the socket without a copy.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes buffered between writes to the socket.
pub const MAX_BUFFERED: usize = 64 * 1024;
/// The buffer's capacity kept once it is written out; a larger one (after
/// a big batch of answers) is freed.
const KEPT_CAPACITY: usize = 16 * 1024;

/// The socket and what is waiting to be written to it, shared by the two
/// halves (both are only ever used by the connection's own task, so the
/// lock is never contended).
struct Shared<I> {
    io: I,
    out: Vec<u8>,
    /// A write error met while writing the buffer at the end of a poll,
    /// returned to hyper by its next operation.
    failed: Option<io::ErrorKind>,
}

impl<I: AsyncWrite + Unpin> Shared<I> {
    /// Writes the buffer out, then flushes the socket.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(kind) = self.failed {
            return Poll::Ready(Err(kind.into()));
        }
        let mut written = 0;
        let result = loop {
            if written == self.out.len() {
                break Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.io).poll_write(cx, &self.out[written..]) {
                Poll::Ready(Ok(0)) => break Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
                Poll::Pending => break Poll::Pending,
            }
        };
        self.out.drain(..written);
        // An idle connection keeps at most a small buffer.
        if self.out.is_empty() && self.out.capacity() > KEPT_CAPACITY {
            self.out = Vec::new();
        }
        ready!(result)?;
        Pin::new(&mut self.io).poll_flush(cx)
    }
}

/// Splits `io` into the side hyper serves on and the wrapper its
/// connection future must run in (see the module docs).
pub fn coalesce<I>(io: I) -> (CoalescedIo<I>, Flusher<I>) {
    let shared = Arc::new(Mutex::new(Shared { io, out: Vec::new(), failed: None }));
    (CoalescedIo { shared: shared.clone() }, Flusher { shared })
}

fn lock<I>(shared: &Mutex<Shared<I>>) -> MutexGuard<'_, Shared<I>> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// The socket as hyper sees it: reads pass through, writes are buffered,
/// flushes deferred to the end of the poll.
pub struct CoalescedIo<I> {
    shared: Arc<Mutex<Shared<I>>>,
}

/// What writes the buffer of a [`CoalescedIo`] after each poll: turn the
/// connection's future into one with [`Flusher::around`].
pub struct Flusher<I> {
    shared: Arc<Mutex<Shared<I>>>,
}

impl<I> Flusher<I> {
    /// `connection`, with the buffer written out after each of its polls.
    pub fn around<F: Future>(self, connection: F) -> FlushAtEndOfPoll<F, I> {
        FlushAtEndOfPoll { connection: Box::pin(connection), shared: self.shared }
    }
}

/// A connection future whose buffered answers are written after each poll.
pub struct FlushAtEndOfPoll<F, I> {
    connection: Pin<Box<F>>,
    shared: Arc<Mutex<Shared<I>>>,
}

impl<F: Future, I: AsyncWrite + Unpin> Future for FlushAtEndOfPoll<F, I> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let result = self.connection.as_mut().poll(cx);
        let mut shared = lock(&self.shared);
        if shared.failed.is_none()
            && let Poll::Ready(Err(e)) = shared.poll_drain(cx)
        {
            // hyper learns of it on its next read or write.
            shared.failed = Some(e.kind());
            if result.is_pending() {
                cx.waker().wake_by_ref();
            }
        }
        // Pending drain: the socket wakes this task when it can take more.
        result
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for CoalescedIo<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let mut shared = lock(&self.shared);
        if let Some(kind) = shared.failed {
            return Poll::Ready(Err(kind.into()));
        }
        Pin::new(&mut shared.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for CoalescedIo<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let mut shared = lock(&self.shared);
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if shared.out.len() + total > MAX_BUFFERED {
            ready!(shared.poll_drain(cx))?;
            if total >= MAX_BUFFERED {
                return Pin::new(&mut shared.io).poll_write_vectored(cx, bufs);
            }
        } else if let Some(kind) = shared.failed {
            return Poll::Ready(Err(kind.into()));
        }
        for b in bufs {
            shared.out.extend_from_slice(b);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Deferred: [`FlushAtEndOfPoll`] writes the buffer when this poll of
    /// the connection ends.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match lock(&self.shared).failed {
            Some(kind) => Poll::Ready(Err(kind.into())),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Everything buffered is written before the socket is shut down.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut shared = lock(&self.shared);
        ready!(shared.poll_drain(cx))?;
        Pin::new(&mut shared.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A socket that counts the writes that reach it.
    struct Counting<I> {
        io: I,
        writes: Arc<AtomicUsize>,
    }

    impl<I: AsyncWrite + Unpin> AsyncWrite for Counting<I> {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.writes.fetch_add(1, Ordering::Relaxed);
            Pin::new(&mut self.io).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    #[tokio::test]
    async fn writes_of_one_poll_leave_together_and_shutdown_writes_the_rest() {
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let writes = Arc::new(AtomicUsize::new(0));
        let (mut io, flusher) = coalesce(Counting { io: near, writes: writes.clone() });
        // One poll: three answers, each flushed; they reach the socket as one write.
        flusher
            .around(async {
                for answer in [&b"one "[..], b"two ", b"three "] {
                    io.write_all(answer).await.unwrap();
                    io.flush().await.unwrap();
                }
            })
            .await;
        assert_eq!(writes.load(Ordering::Relaxed), 1);
        // Written, no poll end in sight: shutdown writes it first.
        io.write_all(b"last").await.unwrap();
        io.shutdown().await.unwrap();
        let mut got = String::new();
        far.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "one two three last");
        assert_eq!(writes.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_write_leaves_when_its_poll_ends_though_the_connection_waits() {
        // A `100 Continue`, a streamed chunk: written and flushed, then the
        // connection waits (for the body, the next event) without writing.
        let (near, mut far) = tokio::io::duplex(1 << 16);
        let (mut io, flusher) = coalesce(near);
        let (go_on, wait) = tokio::sync::oneshot::channel::<()>();
        let connection = tokio::spawn(flusher.around(async move {
            io.write_all(b"first").await.unwrap();
            io.flush().await.unwrap();
            wait.await.unwrap();
            io.write_all(b" second").await.unwrap();
            io.shutdown().await.unwrap();
        }));
        let mut first = [0u8; 5];
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), far.read_exact(&mut first)).await;
        assert!(read.is_ok(), "the first write stayed buffered while the connection waited");
        assert_eq!(&first, b"first");
        go_on.send(()).unwrap();
        let mut rest = String::new();
        far.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, " second");
        connection.await.unwrap();
    }

    #[tokio::test]
    async fn the_buffer_is_bounded_and_large_writes_are_not_copied() {
        // A peer that reads nothing: writes stop once the pipe and the buffer are full.
        let (near, mut far) = tokio::io::duplex(1024);
        let (mut io, flusher) = coalesce(near);
        let mut pending = flusher.around(async {
            loop {
                io.write_all(&[7u8; 1000]).await.unwrap();
            }
        });
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), &mut pending).await;
        assert!(waited.is_err(), "the writer never waits for a peer that does not read");
        // Stuck with at most the buffer's worth held.
        drop(pending);
        let held = lock(&io.shared).out.len();
        assert!(held <= MAX_BUFFERED, "{held} bytes buffered");
        // A large write goes straight to the socket (after what was buffered).
        let (near, mut far2) = tokio::io::duplex(4 * MAX_BUFFERED);
        let (mut io2, flusher2) = coalesce(near);
        let big = vec![1u8; 2 * MAX_BUFFERED];
        flusher2.around(async { io2.write_all(&big).await.unwrap() }).await;
        assert!(lock(&io2.shared).out.is_empty());
        let mut got = vec![0u8; big.len()];
        far2.read_exact(&mut got).await.unwrap();
        assert_eq!(got, big);
        let _ = far.read(&mut [0u8; 16]).await;
    }
}
