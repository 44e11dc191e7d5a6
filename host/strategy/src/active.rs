//! The active router of a process, swapped atomically.
//!
//! A request loads the current [`Router`] once and routes entirely with it,
//! so a swap of (component, config, nodes) is never seen half-applied: each
//! caller sees either the old router or the new one.

use crate::router::Router;
use arc_swap::ArcSwapOption;
use std::sync::Arc;

/// The router in force, or none before the first configuration.
#[derive(Default)]
pub struct ActiveRouter {
    current: ArcSwapOption<Router>,
}

impl ActiveRouter {
    pub fn new(router: Option<Router>) -> Self {
        ActiveRouter { current: ArcSwapOption::new(router.map(Arc::new)) }
    }

    /// The router in force now; route a whole request with this one value.
    pub fn load(&self) -> Option<Arc<Router>> {
        self.current.load_full()
    }

    /// Installs `router` and returns the one it replaced.
    pub fn swap(&self, router: Router) -> Option<Arc<Router>> {
        self.current.swap(Some(Arc::new(router)))
    }
}
