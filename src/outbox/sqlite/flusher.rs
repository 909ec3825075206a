//! The ingest log's write side: appenders decide and frame their records into the pending
//! group on their own threads; one flusher thread writes and fsyncs each group and answers
//! its senders. `start_ingest` replays what a previous run left and starts the threads.

use super::*;

/// Appends the job unless the pending group is full (`None`: the disk is behind, and the
/// sender waits for room: backpressure towards the HTTP layer, not unbounded memory).
pub(super) fn try_append(
    log: &SharedLog,
    job: &mut Option<(Entry, Reply)>,
) -> Option<Result<(), StoreError>> {
    let mut state = log.state.lock().unwrap_or_else(|p| p.into_inner());
    if state.closed {
        return Some(Err(StoreError::Join("store is closing".into())));
    }
    if state.pending.waiting.len() >= PENDING_MAX {
        return None;
    }
    if let Some((entry, reply)) = job.take()
        && let Err((reply, error)) = state.append(entry, reply)
    {
        reply.send(Err(error));
        return Some(Ok(()));
    }
    let wake = state.flusher_waiting;
    drop(state);
    if wake {
        log.flush.notify_one();
    }
    Some(Ok(()))
}

/// Applies what a previous run logged and did not apply, then starts the log's flusher, the
/// applier and the checkpointer.
pub(super) fn start_ingest(
    path: &Path,
    dir: &Path,
    lock: journal::Lock,
    enrich: Option<Arc<dyn Enrich>>,
) -> Result<Ingest, StoreError> {
    let mut apply_conn = open_connection(path)?;
    // Checkpoints run beside the applier, not inside its commits.
    apply_conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    let records = journal::read_all(dir)?;
    let mut applied = applied_seq(&apply_conn)?;
    let last_logged = records.last().map(|(seq, _)| *seq).unwrap_or(0);
    let mut backlog = records
        .into_iter()
        .filter(|(seq, _)| *seq > applied)
        .map(|(seq, bytes)| {
            Ok(Logged {
                seq,
                entry: Entry::decode(seq, &bytes)?,
            })
        })
        .collect::<Result<Vec<_>, JournalError>>()?;
    let unmatched = backlog.iter().filter(|r| r.unmatched()).count();
    if unmatched > 0 {
        let Some(enrich) = enrich.as_deref() else {
            return Err(StoreError::Unmatched(unmatched));
        };
        enrich.ready().map_err(|error| StoreError::CannotMatch {
            records: unmatched,
            reason: error.to_string(),
        })?;
        complete(enrich, &mut backlog);
    }
    if !backlog.is_empty() {
        for chunk in backlog.chunks(APPLY_MAX) {
            applied = applied.max(apply_batch(&mut apply_conn, chunk)?);
        }
        tracing::info!(
            records = backlog.len(),
            "applied what the ingest log held from the last run"
        );
    }
    let next_seq = applied.max(last_logged) + 1;
    // The segments are deleted next: first make sure everything applied so far is on disk
    // (a checkpoint syncs the WAL before it copies it, and the database after).
    apply_conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)")?;
    let (log, retired) = Journal::start(dir, next_seq)?;
    // From here on the log holds every record until a checkpoint has made its application
    // durable, so the applier's commits need no fsync of their own.
    apply_conn.pragma_update(None, "synchronous", "NORMAL")?;

    let overlay = Arc::new(Mutex::new(Overlay::default()));
    let logged = Arc::new(AtomicU64::new(next_seq - 1));
    let (applied_tx, applied_rx) = watch::channel(next_seq - 1);
    let hurry = Arc::new(AtomicBool::new(false));
    let closing = Arc::new(AtomicBool::new(false));
    let health = Arc::new(WriteHealth::default());
    let (apply_tx, apply_rx) = std::sync::mpsc::sync_channel::<Queued>(APPLY_QUEUE);
    let reader = open_connection(path)?;
    let checkpoint_conn = open_connection(path)?;
    let spawn_err = |source| StoreError::Dir {
        path: "store thread".into(),
        source,
    };
    let mut threads = Vec::new();
    let filter = build_filter(&reader, &Overlay::default())?;
    let shared = Arc::new(SharedLog {
        state: Mutex::new(LogState {
            reader,
            filter,
            overlay: overlay.clone(),
            next_seq,
            pending: Group::default(),
            flusher_waiting: false,
            closed: false,
        }),
        flush: std::sync::Condvar::new(),
        room: tokio::sync::Notify::new(),
        records: AtomicU64::new(0),
        fsync_nanos: AtomicU64::new(0),
        fsyncs: Default::default(),
    });
    let flusher = Flusher {
        shared: shared.clone(),
        spare: Vec::new(),
        log,
        logged: logged.clone(),
        apply: apply_tx,
        last_group: 0,
        health: health.clone(),
    };
    threads.push(
        std::thread::Builder::new()
            .name("runlink-ingest-log".into())
            .spawn(move || flusher.run())
            .map_err(spawn_err)?,
    );
    threads.push(
        std::thread::Builder::new()
            .name("runlink-store-apply".into())
            .spawn({
                let applier = Applier {
                    conn: apply_conn,
                    overlay,
                    applied: applied_tx,
                    hurry: hurry.clone(),
                    enrich,
                    closing: closing.clone(),
                    health: health.clone(),
                };
                move || applier.run(apply_rx)
            })
            .map_err(spawn_err)?,
    );
    let alive = Arc::downgrade(&shared);
    let applied_now = applied_rx.clone();
    std::thread::Builder::new()
        .name("runlink-store-checkpoint".into())
        .spawn(move || {
            // Runs while the store is in use; a PASSIVE checkpoint never blocks writers.
            // It syncs the WAL before copying it back, so every record applied before it
            // started is durable once it returns: the log's segments up to there can go.
            while alive.upgrade().is_some() {
                std::thread::sleep(Duration::from_millis(500));
                let through = *applied_now.borrow();
                match checkpoint_conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
                    Ok(()) => retired.delete_through(through),
                    Err(error) => tracing::warn!(%error, "WAL checkpoint failed"),
                }
            }
        })
        .map_err(spawn_err)?;
    Ok(Ingest {
        log: shared,
        logged,
        applied: applied_rx,
        hurry,
        closing,
        health,
        dir: dir.to_path_buf(),
        threads,
        _lock: lock,
    })
}

/// What the log's appenders share: every accept is decided and framed on the request's own
/// thread under this lock (no hand-off to a writer thread), and waits in `pending` for the
/// flusher, which writes and fsyncs everything that piled up while it flushed the last group.
pub(super) struct LogState {
    pub(super) reader: Connection,
    pub(super) filter: KeyFilter,
    pub(super) overlay: Arc<Mutex<Overlay>>,
    pub(super) next_seq: u64,
    pub(super) pending: Group,
    /// The flusher sleeps on the condition variable: appenders wake it only then.
    pub(super) flusher_waiting: bool,
    pub(super) closed: bool,
}

/// Framed records waiting for the flusher, and whom to answer once they are on disk.
#[derive(Default)]
pub(super) struct Group {
    pub(super) framed: Vec<u8>,
    pub(super) waiting: Vec<Waiting>,
    pub(super) last: u64,
}

pub(super) struct Waiting {
    pub(super) reply: Reply,
    pub(super) seq: u64,
    pub(super) outcome: Option<AcceptOutcome>,
    pub(super) start: usize,
    pub(super) len: usize,
}

/// The log's lock, the flusher's wake-up, and room for appenders held back by a full group.
pub(super) struct SharedLog {
    pub(super) state: Mutex<LogState>,
    pub(super) flush: std::sync::Condvar,
    pub(super) room: tokio::sync::Notify,
    /// What the flusher has written, for `/metrics` (see `LogStats`); one fsync per write, so
    /// the buckets also count the writes.
    pub(super) records: AtomicU64,
    pub(super) fsync_nanos: AtomicU64,
    pub(super) fsyncs: [AtomicU64; FSYNC_BUCKETS.len() + 1],
}

impl std::fmt::Debug for SharedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLog").finish_non_exhaustive()
    }
}

impl LogState {
    /// Decides one entry and frames it into the pending group; `Err` when it cannot be
    /// decided (answered right away, nothing logged).
    pub(super) fn append(
        &mut self,
        mut entry: Entry,
        reply: Reply,
    ) -> Result<(), (Reply, StoreError)> {
        let seq = self.next_seq;
        let outcome = match &mut entry {
            Entry::Accept(p) => {
                let mut overlay = self.overlay.lock().unwrap_or_else(|p| p.into_inner());
                let seen = Pending {
                    tables: Snapshot::new(&self.reader),
                    overlay: &overlay,
                    filter: &self.filter,
                };
                let decided = decide(&seen, p);
                seen.tables.end();
                match decided.and_then(|(outcome, event)| {
                    p.decided = Some(Decided {
                        outcome,
                        event: event.as_ref().map(serde_json::to_string).transpose()?,
                    });
                    Ok(outcome)
                }) {
                    Ok(outcome) => {
                        overlay.add(seq, p, outcome);
                        remember(&mut self.filter, p, outcome);
                        Some(outcome)
                    }
                    Err(error) => return Err((reply, error)),
                }
            }
            Entry::Audit(_) => None,
        };
        self.next_seq += 1;
        let start = self.pending.framed.len();
        // Encoded straight into the group's buffer, which is reused from group to group.
        journal::frame_with(&mut self.pending.framed, seq, |buf| {
            let mut fields = Fields(std::mem::take(buf));
            entry.encode_into(&mut fields);
            *buf = fields.0;
        });
        self.pending.waiting.push(Waiting {
            reply,
            seq,
            outcome,
            start,
            len: self.pending.framed.len() - start,
        });
        self.pending.last = seq;
        Ok(())
    }

    /// A bigger filter once this one has taken all the keys it was sized for (rare: it is
    /// sized for twice the keys stored, at least a million). Appenders wait meanwhile.
    pub(super) fn rebuild_filter(&mut self) {
        let rebuilt = (|| {
            let snapshot = self.reader.unchecked_transaction()?;
            let overlay = self.overlay.lock().unwrap_or_else(|p| p.into_inner());
            build_filter(&snapshot, &overlay)
        })();
        match rebuilt {
            Ok(filter) => self.filter = filter,
            Err(error) => tracing::warn!(%error, "cannot rebuild the key filter"),
        }
    }

    /// Takes back what a failed write and everything decided after it (every record from
    /// `first` on) put in the overlay: those senders are refused, and later decisions must
    /// not count on them.
    pub(super) fn forget_from(&mut self, first: u64) {
        self.overlay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forget_from(first);
    }
}

/// Writes and fsyncs what the appenders framed, a group at a time, answers its senders and
/// hands the records to the applier. While it flushes, the next group gathers.
pub(super) struct Flusher {
    pub(super) shared: Arc<SharedLog>,
    /// The last group's buffer, emptied, for the next group (no regrowing it each time).
    pub(super) spare: Vec<u8>,
    pub(super) log: Journal,
    pub(super) logged: Arc<AtomicU64>,
    pub(super) apply: std::sync::mpsc::SyncSender<Queued>,
    /// Records in the last group written.
    pub(super) last_group: usize,
    pub(super) health: Arc<WriteHealth>,
}

impl Flusher {
    pub(super) fn run(mut self) {
        loop {
            // Senders are queueing (a burst): gather a little longer, so each write and fsync
            // carries about three times the records. The kernel's share of a webhook is mostly
            // its fsync, and a steady trickle (groups of one or two) never waits.
            if self.last_group >= LINGER_AFTER {
                std::thread::sleep(LINGER);
            }
            let group = {
                let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
                while state.pending.waiting.is_empty() && !state.closed {
                    state.flusher_waiting = true;
                    state = self
                        .shared
                        .flush
                        .wait(state)
                        .unwrap_or_else(|p| p.into_inner());
                    state.flusher_waiting = false;
                }
                if state.pending.waiting.is_empty() {
                    return;
                }
                if state.filter.is_full() {
                    state.rebuild_filter();
                }
                let next = Group {
                    framed: std::mem::take(&mut self.spare),
                    ..Group::default()
                };
                std::mem::replace(&mut state.pending, next)
            };
            self.shared.room.notify_waiters();
            if !self.flush(group) {
                return;
            }
        }
    }

    /// False once the applier is gone (the store is closing).
    pub(super) fn flush(&mut self, group: Group) -> bool {
        self.last_group = group.waiting.len();
        let (file, base) = match self.log.write(&group.framed, group.last) {
            Ok(written) => written,
            Err(error) => {
                let message = error.to_string();
                self.health.failed(WritePart::IngestLog, &message);
                let later = {
                    let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
                    let later = std::mem::take(&mut state.pending);
                    if let Some(first) = group.waiting.first() {
                        state.forget_from(first.seq);
                    }
                    later
                };
                self.shared.room.notify_waiters();
                for w in group.waiting.into_iter().chain(later.waiting) {
                    w.reply.send(Err(StoreError::Join(format!(
                        "ingest log write failed: {message}"
                    ))));
                }
                return true;
            }
        };
        self.health.succeeded(WritePart::IngestLog);
        let fsync_started = Instant::now();
        if let Err(error) = file.sync_data() {
            // After a failed fsync the kernel may have dropped the dirty pages: what is on
            // disk is unknown, and retrying could report success for data that is gone.
            // Stopping is the only honest answer; the senders see no reply and retry, and
            // the log is read back at the next start.
            tracing::error!(%error, "ingest log fsync failed; stopping");
            std::process::abort();
        }
        let took = fsync_started.elapsed();
        if took >= SLOW_FSYNC {
            tracing::warn!(
                ms = took.as_millis() as u64,
                records = group.waiting.len(),
                "ingest log fsync was slow: these acknowledgements waited for the disk"
            );
        }
        let stats = &self.shared;
        stats.fsync_nanos.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        stats.fsyncs[fsync_bucket(took.as_secs_f64())].fetch_add(1, Ordering::Relaxed);
        stats
            .records
            .fetch_add(group.waiting.len() as u64, Ordering::Relaxed);
        self.logged.fetch_max(group.last, Ordering::SeqCst);
        self.spare = group.framed;
        self.spare.clear();
        for w in group.waiting {
            w.reply.send(Ok(w.outcome));
            let queued = Queued {
                seq: w.seq,
                file: file.clone(),
                offset: base + w.start as u64,
                len: w.len,
            };
            if self.apply.send(queued).is_err() {
                tracing::error!("store applier stopped; the ingest log keeps what it missed");
                return false;
            }
        }
        true
    }
}
