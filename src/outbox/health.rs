//! Whether the store can be written now, and why not: what `/readyz` and `/metrics` report
//! while a disk is full, so an operator sees the cause in one place instead of a retry loop
//! in the log.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The part of a store that cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WritePart {
    /// The ingest log: new webhooks are refused (503) until it can be written again.
    IngestLog,
    /// The tables: webhooks are still acknowledged (the log holds them), but nothing new is
    /// matched into the outbox or delivered until the tables take them.
    Tables,
}

impl WritePart {
    fn index(self) -> usize {
        self as usize
    }

    fn as_str(self) -> &'static str {
        match self {
            WritePart::IngestLog => "ingest log",
            WritePart::Tables => "tables",
        }
    }
}

/// The current failure, as `/readyz` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WriteFailure {
    pub part: WritePart,
    pub reason: String,
    pub since_ms: i64,
}

/// What `Store::write_state` reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WriteState {
    pub failure: Option<WriteFailure>,
    /// Failed writes since the start (each retry counts).
    pub failures_total: u64,
}

/// A failure keeps being retried; its log line is repeated this often, not at every retry.
const REPEAT_LOG: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub(crate) struct WriteHealth {
    /// One slot per part (`WritePart::index`): the log and the tables fail and recover apart.
    current: Mutex<[Option<Current>; 2]>,
    failures: AtomicU64,
}

#[derive(Debug)]
struct Current {
    failure: WriteFailure,
    started: Instant,
    logged: Instant,
    retries: u64,
}

impl WriteHealth {
    /// Records a failed write of `part`. Logged when it starts, and then every
    /// `REPEAT_LOG` with how many retries failed meanwhile.
    pub(crate) fn failed(&self, part: WritePart, reason: &str) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut slots = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let current = &mut slots[part.index()];
        match current.as_mut() {
            Some(c) => {
                c.retries += 1;
                c.failure.reason = reason.to_string();
                if c.logged.elapsed() >= REPEAT_LOG {
                    c.logged = Instant::now();
                    tracing::error!(
                        part = part.as_str(),
                        reason,
                        retries = c.retries,
                        for_secs = c.started.elapsed().as_secs(),
                        "store still cannot be written; retrying (nothing acknowledged is lost)"
                    );
                }
            }
            None => {
                tracing::error!(
                    part = part.as_str(),
                    reason,
                    "store cannot be written; not ready until it can (nothing acknowledged is lost)"
                );
                *current = Some(Current {
                    failure: WriteFailure {
                        part,
                        reason: reason.to_string(),
                        since_ms: super::now_ms(),
                    },
                    started: Instant::now(),
                    logged: Instant::now(),
                    retries: 0,
                });
            }
        }
    }

    /// A write of `part` succeeded: a failure of that part is over.
    pub(crate) fn succeeded(&self, part: WritePart) {
        let over = self.current.lock().unwrap_or_else(|p| p.into_inner())[part.index()].take();
        if let Some(c) = over {
            tracing::warn!(
                part = part.as_str(),
                after_secs = c.started.elapsed().as_secs(),
                retries = c.retries,
                "store can be written again"
            );
        }
    }

    pub(crate) fn failing(&self, part: WritePart) -> bool {
        self.current.lock().unwrap_or_else(|p| p.into_inner())[part.index()].is_some()
    }

    pub(crate) fn state(&self) -> WriteState {
        WriteState {
            // The log first: while it fails, webhooks are refused, which matters most.
            failure: self
                .current
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .flatten()
                .next()
                .map(|c| c.failure.clone()),
            failures_total: self.failures.load(Ordering::Relaxed),
        }
    }
}

/// Bytes an unprivileged process may still write on the filesystem holding `path`.
pub(crate) fn available_bytes(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the struct it is given and reads only the NUL-terminated path.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let result = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    (result == 0).then(|| (stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_lasts_until_that_part_is_written_again() {
        let health = WriteHealth::default();
        assert_eq!(health.state(), WriteState::default());
        health.failed(WritePart::Tables, "database or disk is full");
        health.failed(WritePart::Tables, "database or disk is full");
        let state = health.state();
        assert_eq!(state.failures_total, 2);
        assert_eq!(
            state.failure.as_ref().map(|f| f.part),
            Some(WritePart::Tables)
        );
        // A write of another part says nothing about the tables.
        health.succeeded(WritePart::IngestLog);
        assert!(health.failing(WritePart::Tables));
        // Both failing: the log is the one reported (webhooks are refused).
        health.failed(WritePart::IngestLog, "No space left on device");
        let part = health.state().failure.map(|f| f.part);
        assert_eq!(part, Some(WritePart::IngestLog));
        health.succeeded(WritePart::IngestLog);
        let part = health.state().failure.map(|f| f.part);
        assert_eq!(part, Some(WritePart::Tables));
        health.succeeded(WritePart::Tables);
        assert_eq!(health.state().failure, None);
        assert_eq!(health.state().failures_total, 3);
    }

    #[test]
    fn free_space_is_read_from_the_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        assert!(available_bytes(dir.path()).is_some_and(|n| n > 0));
        assert_eq!(available_bytes(&dir.path().join("absent/nested")), None);
    }
}
