//! The runtime stall watch: a plain thread beside a role's tokio runtime
//! that asks the runtime to run a trivial task every [`StallWatch::INTERVAL`]
//! and reports when none ran within a threshold, i.e. when every worker
//! thread is blocked (a lock taken twice, a blocking call in async code, a
//! spin). Such a process still accepts TCP connections but answers nothing
//! and logs nothing; the watch gives that a log line (and a second one if
//! the runtime comes back), which is how a wedged meta leader (a nested
//! state-machine read under `apply`) would have been seen at once.
//!
//! Where it sits: started by the binary next to the runtime it watches
//! (`shardgate serve`, `meta`, `node`, `proxy`, `dev`); it knows no role.
//! Cost: one sleeping thread and one tiny task per interval.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::Thread;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;

/// What the watch reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stall {
    /// No task of the runtime ran for `for_at_least` (reported at the
    /// threshold, then again at every further threshold while it lasts).
    Stuck { for_at_least: Duration },
    /// A task ran again after a stall of `lasted`.
    Recovered { lasted: Duration },
}

/// Stops the watch thread when dropped.
pub struct StallWatch {
    stop: Arc<AtomicBool>,
    /// Unparked on drop, so the thread sees `stop` at once; never joined
    /// (a watch blocked on a stuck runtime would hold up the exit it is
    /// reporting on: it ends at its next wake-up).
    thread: Thread,
}

impl StallWatch {
    /// How often the runtime is asked to run a task.
    pub const INTERVAL: Duration = Duration::from_millis(500);

    /// Watches the runtime of `handle`; `report` runs on the watch thread
    /// (never on the runtime, which may be the thing that is stuck).
    pub fn start(handle: Handle, threshold: Duration, report: impl Fn(Stall) + Send + 'static) -> std::io::Result<StallWatch> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new().name("stall-watch".into()).spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let (tx, rx) = mpsc::sync_channel::<()>(1);
                let asked = Instant::now();
                // A runtime that is shutting down drops the task: the
                // receiver sees a disconnect, and the loop ends.
                handle.spawn(async move {
                    let _ = tx.send(());
                });
                let mut reported = false;
                loop {
                    match rx.recv_timeout(threshold) {
                        Ok(()) => {
                            if reported {
                                report(Stall::Recovered { lasted: asked.elapsed() });
                            }
                            break;
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            if stopping.load(Ordering::Relaxed) {
                                return;
                            }
                            reported = true;
                            report(Stall::Stuck { for_at_least: asked.elapsed() });
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
                std::thread::park_timeout(Self::INTERVAL);
            }
        })?;
        Ok(StallWatch { stop, thread: thread.thread().clone() })
    }
}

impl Drop for StallWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.unpark();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime whose only worker is blocked is reported stuck, and
    /// recovered once it is let go; a healthy runtime is reported nothing.
    #[test]
    fn a_blocked_runtime_is_reported_and_its_recovery_too() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        // Healthy: with a threshold no scheduler delay reaches, rounds of
        // asking pass without a report.
        let (calm_tx, calm) = mpsc::channel();
        let calm_watch = StallWatch::start(runtime.handle().clone(), Duration::from_secs(20), move |s| {
            let _ = calm_tx.send(s);
        })
        .unwrap();
        let (ran_tx, ran) = mpsc::channel();
        for _ in 0..3 {
            let tx = ran_tx.clone();
            runtime.spawn(async move { tx.send(()).unwrap() });
            ran.recv_timeout(Duration::from_secs(10)).expect("the runtime runs tasks");
        }
        drop(calm_watch);
        assert!(calm.try_recv().is_err(), "a healthy runtime was reported");
        let (reports_tx, reports) = mpsc::channel();
        let _watch = StallWatch::start(runtime.handle().clone(), Duration::from_millis(50), move |s| {
            let _ = reports_tx.send(s);
        })
        .unwrap();
        // Block the only worker until told.
        let (release_tx, release) = mpsc::channel::<()>();
        runtime.spawn(async move {
            let _ = release.recv();
        });
        let stuck = loop {
            match reports.recv_timeout(Duration::from_secs(30)).expect("no report of the blocked runtime within 30 s") {
                Stall::Recovered { .. } => continue, // a scheduling delay before the block
                stuck => break stuck,
            }
        };
        assert!(matches!(stuck, Stall::Stuck { for_at_least } if for_at_least >= Duration::from_millis(50)), "{stuck:?}");
        release_tx.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match reports.recv_timeout(left).expect("no recovery report within 30 s of the release") {
                Stall::Stuck { .. } => continue, // reported again before the release took effect
                Stall::Recovered { lasted } => {
                    assert!(lasted >= Duration::from_millis(50), "{lasted:?}");
                    break;
                }
            }
        }
    }
}
