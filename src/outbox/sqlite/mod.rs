//! The embedded store: one SQLite file in WAL mode, with an ingest log in front of it.
//!
//! A webhook is answered 2xx once its record is in the ingest log and fsync'd (`journal`):
//! one thread takes every request that is waiting, makes the dedup and cap decisions against
//! the tables plus the records not applied yet (the overlay), appends the whole group with
//! one sequential write and one fsync, and answers. A second thread applies the records to
//! the tables in transactions of thousands, so a burst costs a few B-tree commits instead of
//! one per group of requests. Opened with an `Enrich`, the store takes tickets that are not
//! matched yet: the second thread matches and renders them before it applies them, so a
//! burst is acknowledged at the cost of parsing and logging, and the tables only ever hold
//! matched tickets. Reads wait until the tables hold everything acknowledged
//! before them. Everything else runs on tokio's blocking pool behind its own connection.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{oneshot, watch};

use super::health::{WriteHealth, WritePart, available_bytes};
use super::journal::{self, FieldReader, Fields, Journal, JournalError};
use super::keys::KeyFilter;
use super::{
    AcceptOutcome, Accepted, AuditQuery, Comment, Enrich, EnrichError, FSYNC_BUCKETS, ItemState,
    LogStats, Matching, OutboxCounts, OutboxItem, OutboxRow, Requeue, Settle, Store, StoreError,
    StoredTicket, WriteState, fsync_bucket, now_ms,
};
use crate::audit::{AuditEvent, AuditRecord};
use crate::ticket::TicketId;

mod applier;
mod codec;
mod console;
mod decide;
mod feedback;
mod flusher;
mod queries;
mod schema;
#[cfg(test)]
mod tests;

use applier::*;
use codec::*;
use decide::*;
use flusher::*;
use schema::*;

const PAGE_SIZE: i64 = 4096;

/// How many records may wait for the log's flusher; past it senders wait for room.
const PENDING_MAX: usize = 4096;
/// How many logged records one apply transaction takes at most.
const APPLY_MAX: usize = 4096;
/// Logged records queued for the applier while it is applying, at most; past it the log's
/// flusher waits for it, and so do the requests behind it (backpressure, not unbounded
/// memory). While it gathers, it takes them off the queue as they come.
const APPLY_QUEUE: usize = 65_536;
/// After a group of at least this many records the flusher waits `LINGER` before taking
/// the next one...
const LINGER_AFTER: usize = 4;
/// ...which adds this much to a burst's acknowledgements and takes most of its fsyncs away
/// (measured in bench/HISTORY.md).
const LINGER: Duration = Duration::from_micros(300);
/// Applied records taken out of the overlay per hold of its lock.
const OVERLAY_SLICE: usize = 64;
/// The applier thread's nice value (0 is normal, 19 the lowest).
const APPLY_NICE: libc::c_int = 19;
/// The applier starts once no record has arrived for this long (unless a reader waits)...
const APPLY_QUIET: Duration = Duration::from_millis(50);
/// ...or once this many records wait (their keys are held in memory by the overlay)...
const DEFER_MAX: usize = 65_536;
/// ...or once the oldest of them has waited this long.
const DEFER_AGE: Duration = Duration::from_secs(5);
/// An fsync this long is a disk stall senders notice (their p99 is a few milliseconds): worth
/// a warning, since nothing else in the log says why acknowledgements paused.
const SLOW_FSYNC: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    conn: Arc<Mutex<Connection>>,
    /// `None` when another process owns this store's ingest log: accepts then commit
    /// straight to the tables.
    ingest: Option<Ingest>,
    /// Present when the applier matches what was acknowledged unmatched.
    enrich: Option<Arc<dyn Enrich>>,
}

#[derive(Debug)]
struct Ingest {
    log: Arc<SharedLog>,
    /// The highest sequence number acknowledged to a sender.
    logged: Arc<AtomicU64>,
    /// The highest sequence number applied to the tables.
    applied: watch::Receiver<u64>,
    /// Set by a reader that waits for the applier.
    hurry: Arc<AtomicBool>,
    /// Set when the last handle goes: the applier stops retrying what it cannot write (the
    /// log keeps it for the next start) instead of holding the shutdown.
    closing: Arc<AtomicBool>,
    health: Arc<WriteHealth>,
    /// The log's directory: where free space is looked up while the log cannot be written.
    dir: PathBuf,
    threads: Vec<std::thread::JoinHandle<()>>,
    _lock: journal::Lock,
}

impl Drop for Inner {
    /// The last handle applies what is logged before the log's lock is let go, so the next
    /// owner (in this process or another) starts from tables that are up to date.
    fn drop(&mut self) {
        if let Some(ingest) = &mut self.ingest {
            ingest.closing.store(true, Ordering::Release);
            {
                let mut state = ingest.log.state.lock().unwrap_or_else(|p| p.into_inner());
                state.closed = true;
            }
            ingest.log.flush.notify_all();
            for thread in ingest.threads.drain(..) {
                let _ = thread.join();
            }
        }
    }
}

/// Stores open in this process, by path: a second `open` of the same file shares the first
/// one's log instead of fighting it for the lock.
static OPEN: LazyLock<Mutex<HashMap<PathBuf, Weak<Inner>>>> = LazyLock::new(Default::default);

/// The directory a store file goes in, made if it is not there.
fn create_parent(path: &Path) -> Result<(), StoreError> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.display().to_string(),
            source,
        }),
        None => Ok(()),
    }
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    // Takes effect only on a new, empty file.
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, None)
    }

    /// With `enrich`, webhooks may be acknowledged before they are matched (`Enrich`): the
    /// applier completes them, here and after a crash. A handle of this process that is
    /// already open is shared, with the `Enrich` it was opened with.
    pub fn open_with(path: &Path, enrich: Option<Arc<dyn Enrich>>) -> Result<Self, StoreError> {
        create_parent(path)?;
        let key = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        let closing = match open.get(&key) {
            Some(weak) => match weak.upgrade() {
                Some(inner) => return Ok(SqliteStore { inner }),
                None => true,
            },
            None => false,
        };
        let dir = journal::dir_for(path);
        let mut lock = journal::Lock::try_acquire(&dir)?;
        // A handle of this process that is still applying its last records lets go soon.
        let deadline = Instant::now() + Duration::from_secs(10);
        while closing && lock.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            lock = journal::Lock::try_acquire(&dir)?;
        }
        let mut conn = open_connection(path)?;
        migrate(&mut conn)?;
        let ingest = match lock {
            Some(lock) => Some(start_ingest(path, &dir, lock, enrich.clone())?),
            None => {
                tracing::warn!(
                    store = %path.display(),
                    "another runlink process owns this store's ingest log: reading what it has applied, writing straight to the tables"
                );
                None
            }
        };
        let inner = Arc::new(Inner {
            conn: Arc::new(Mutex::new(conn)),
            ingest,
            enrich,
        });
        open.insert(key, Arc::downgrade(&inner));
        Ok(SqliteStore { inner })
    }

    /// The secret stored under `name`, stored as `fresh` first if there is none. Read before
    /// the store is opened: the applier signs the comments of tickets a crash left unmatched
    /// while it opens.
    pub fn stored_secret(path: &Path, name: &str, fresh: &str) -> Result<String, StoreError> {
        create_parent(path)?;
        let conn = open_connection(path)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
        )?;
        conn.execute(
            "INSERT INTO secrets (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
            params![name, fresh],
        )?;
        Ok(conn.query_row(
            "SELECT value FROM secrets WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )?)
    }

    async fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.inner.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic in another store call must not make the store unusable: the connection
            // itself is still consistent (SQLite rolled back the open transaction).
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?
    }

    /// Waits until everything acknowledged so far is in the tables, so a read sees every
    /// write that was answered before it.
    async fn caught_up(&self) {
        if let Some(ingest) = &self.inner.ingest {
            let target = ingest.logged.load(Ordering::SeqCst);
            let mut applied = ingest.applied.clone();
            if *applied.borrow() < target {
                ingest.hurry.store(true, Ordering::Release);
            }
            // An error means the applier is gone; nothing more will arrive.
            let _ = applied.wait_for(|a| *a >= target).await;
        }
    }

    fn behind(&self) -> bool {
        self.inner
            .ingest
            .as_ref()
            .is_some_and(|i| *i.applied.borrow() < i.logged.load(Ordering::SeqCst))
    }

    /// Decides and frames the entry on this thread, then leaves it to the flusher, which
    /// answers `reply` once it is on disk.
    async fn submit(&self, entry: Entry, reply: Reply) -> Result<(), StoreError> {
        let log = &self
            .inner
            .ingest
            .as_ref()
            .ok_or_else(|| StoreError::Join("store is closing".into()))?
            .log;
        let mut job = Some((entry, reply));
        // Nearly always there is room at once. Otherwise the sender registers for the
        // flusher's signal before it looks again, so room made in between is not missed.
        if let Some(done) = try_append(log, &mut job) {
            return done;
        }
        loop {
            let room = log.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if let Some(done) = try_append(log, &mut job) {
                return done;
            }
            room.await;
        }
    }
}
