//! Time as the rest of authgate sees it. Production reads the system clock; tests hold a
//! [`Clock::manual`] and move it forward, so expiry is tested without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicU64>>,
}

impl Clock {
    pub fn system() -> Self {
        Self { manual: None }
    }

    /// A clock that stands still at `unix_secs` until [`Clock::advance`] or [`Clock::set`].
    pub fn manual(unix_secs: u64) -> Self {
        Self {
            manual: Some(Arc::new(AtomicU64::new(unix_secs))),
        }
    }

    /// Seconds since the Unix epoch.
    pub fn now(&self) -> u64 {
        match &self.manual {
            Some(t) => t.load(Ordering::Relaxed),
            // The one place that reads the wall clock.
            #[allow(clippy::disallowed_methods)]
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }

    /// Moves a manual clock forward; no effect on the system clock.
    pub fn advance(&self, secs: u64) {
        if let Some(t) = &self.manual {
            t.fetch_add(secs, Ordering::Relaxed);
        }
    }

    pub fn set(&self, unix_secs: u64) {
        if let Some(t) = &self.manual {
            t.store(unix_secs, Ordering::Relaxed);
        }
    }
}
