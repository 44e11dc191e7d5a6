//! Several roles in one process (`serve`, `dev`): each runs until a shared
//! stop signal, and the process stops them all on Ctrl-C/SIGTERM or as soon
//! as one of them fails.

use std::future::Future;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The roles running in this process.
pub struct RoleSet {
    tasks: JoinSet<(&'static str, anyhow::Result<()>)>,
    stop: watch::Sender<bool>,
}

impl RoleSet {
    pub fn new() -> Self {
        RoleSet { tasks: JoinSet::new(), stop: watch::channel(false).0 }
    }

    /// A future that resolves when the roles are told to stop: the
    /// `shutdown` argument of a role's `run`.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// Runs `role` (a role's `run(listener, config, self.stopped())`).
    pub fn spawn<E>(&mut self, name: &'static str, role: impl Future<Output = Result<(), E>> + Send + 'static)
    where
        E: Into<anyhow::Error> + Send + 'static,
    {
        self.tasks.spawn(async move { (name, role.await.map_err(Into::into)) });
    }

    /// Waits until `until` resolves or a role stops; the error of a role that
    /// stopped on its own. The roles keep running.
    pub async fn watch(&mut self, until: impl Future<Output = ()>) -> Option<anyhow::Error> {
        tokio::select! {
            () = until => None,
            Some(done) = self.tasks.join_next() => Some(match done {
                Ok((role, Err(e))) => anyhow::anyhow!("[{role}] stopped: {e:#}"),
                Ok((role, Ok(()))) => anyhow::anyhow!("[{role}] stopped unexpectedly"),
                Err(e) => anyhow::anyhow!("a role panicked: {e}"),
            }),
        }
    }

    /// Runs until Ctrl-C/SIGTERM or until a role stops, then stops every
    /// role and waits for them.
    pub async fn run_until_signal(mut self) -> anyhow::Result<()> {
        let failed = self.watch(crate::signal::shutdown_signal()).await;
        self.shutdown().await;
        failed.map_or(Ok(()), Err)
    }

    /// Tells every role to stop and waits until they have.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while let Some(done) = self.tasks.join_next().await {
            if let Ok((role, Err(e))) = done {
                tracing::warn!(role, error = %e, "role stopped with an error during shutdown");
            }
        }
    }
}
