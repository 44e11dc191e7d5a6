//! Connection workers: single-threaded tokio runtimes, one per core, each
//! on its own thread, that serve the connections of the data path (node
//! and proxy listeners). A connection lives on one worker for its whole
//! life, and so do the proxy's pipes to the nodes that worker opened
//! ([`current`] tells them apart), so a request's tasks (client
//! connection, pipe writer, pipe reader) wake each other on one thread.
//!
//! Why: on the multi-threaded runtime every wake of a task by another one
//! may hand it to the other worker thread (a futex wake, a steal, a park),
//! and for small requests that costs more than the request. Measured with
//! `host/proxy/benches/resp-vs-twemproxy.sh` (one `shardgate dev` process,
//! 2 cores): a RESP `SET` through the proxy cost 25.2 us of server CPU on
//! the multi-threaded runtime and 15.1 us on a single thread; the workers
//! keep the single thread's cost and use every core. This is the
//! arrangement of a process per core (twemproxy, redis) inside one
//! process: state (routing, the node board, the cache) stays shared.
//!
//! Where it sits: the binary installs the workers once ([`install`])
//! beside the main runtime, which keeps everything else (accept loops,
//! meta, health checks, timers of background work); the accept loop of
//! [`crate::serve`] hands each accepted connection of a listener whose
//! `ServeConfig::on_workers` is set to the next worker, in turn. An accept
//! loop looks for the workers when it starts: without [`install`] before
//! (library use, in-process tests) its connections are spawned on its own
//! runtime.

use std::cell::Cell;
use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpStream;
use tokio::runtime::Handle;

/// The installed workers of this process.
static WORKERS: OnceLock<Workers> = OnceLock::new();

thread_local! {
    /// The index of the worker this thread is, if it is one.
    static CURRENT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The single-threaded runtimes connections are spread over.
pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

/// Why the workers could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkersError {
    #[error("starting connection worker {index}: {source}")]
    Start { index: usize, source: std::io::Error },
    #[error("the connection workers of this process are installed already")]
    Installed,
}

impl Workers {
    /// Starts `count` workers (at least one), each a current-thread
    /// runtime driven by a thread named `shardgate-conn-N` for the life of
    /// the process.
    fn start(count: usize) -> Result<Workers, WorkersError> {
        let mut handles = Vec::with_capacity(count.max(1));
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| WorkersError::Start { index, source })?;
            handles.push(runtime.handle().clone());
            std::thread::Builder::new()
                .name(format!("shardgate-conn-{index}"))
                .spawn(move || {
                    CURRENT.with(|c| c.set(Some(index)));
                    // A current-thread runtime runs its tasks only while
                    // some thread blocks on it: this one, forever.
                    runtime.block_on(std::future::pending::<()>());
                })
                .map_err(|source| WorkersError::Start { index, source })?;
        }
        Ok(Workers { handles, next: AtomicUsize::new(0) })
    }

    /// How many workers there are.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Never: there is at least one worker.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// The handles of the workers' runtimes (for a stall watch each).
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// Serves `stream` on the next worker: the stream leaves the reactor
    /// of the accepting runtime and joins the worker's, then `serve` runs
    /// there. A stream that cannot move (it failed already) is dropped,
    /// which closes it.
    pub fn serve<F, Fut>(&self, stream: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Ok(stream) = stream.into_std() else { return };
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[index].spawn(async move {
            // On the worker: `from_std` registers with the reactor of the
            // runtime it runs on.
            let Ok(stream) = TcpStream::from_std(stream) else { return };
            serve(stream).await;
        });
    }
}

/// Installs `count` connection workers for this process (once; the
/// binary calls it beside its main runtime).
pub fn install(count: usize) -> Result<&'static Workers, WorkersError> {
    let workers = Workers::start(count)?;
    WORKERS.set(workers).map_err(|_| WorkersError::Installed)?;
    Ok(WORKERS.get().expect("set above"))
}

/// The workers of this process, when [`install`]ed.
pub fn installed() -> Option<&'static Workers> {
    WORKERS.get()
}

/// The index of the worker the calling thread is, `None` on any other
/// thread. The proxy keeps pipes to each node per worker with it.
pub fn current() -> Option<usize> {
    CURRENT.with(Cell::get)
}
