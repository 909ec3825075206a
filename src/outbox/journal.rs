//! The ingest log in front of the embedded store. An accepted webhook is acknowledged once its
//! record is appended here and fsync'd: one sequential write per group of requests, instead of
//! a SQLite commit that rewrites every B-tree page the group touched. The store applies the
//! records to its tables behind the acknowledgement, in large batches, and retires a segment
//! once every record in it is applied; after a crash, whatever was logged and not yet applied
//! is applied again at start-up (the store remembers the last sequence number it applied).
//!
//! A segment is a file of frames `[len u32][crc32 u32][seq u64][payload]`, little-endian, the
//! checksum over `seq` and the payload. A torn frame can only be the tail of the segment that
//! was being written when the process died; reading stops there. Records are opaque bytes to
//! this module; `Fields` and `FieldReader` are the small codec the store writes them with.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("ingest log {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("ingest log record {seq} is malformed: {message}")]
    Malformed { seq: u64, message: String },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.display().to_string(),
        source,
    }
}

const HEADER: usize = 16;
/// A frame longer than this is corruption, not a record: webhook bodies are capped far below.
const MAX_RECORD: usize = 64 << 20;
/// A new segment is started past this size, so applied records can be deleted a file at a
/// time while the log keeps growing at its end.
const SEGMENT_BYTES: u64 = 64 << 20;
/// How far ahead of its records a segment is filled with zeros.
const ZERO_AHEAD: u64 = 4 << 20;
/// Free space on the log's filesystem that ends a failure to write it: enough for a group
/// of webhooks, not for the zeros ahead (which are skipped when there is no room for them).
pub(super) const ROOM_TO_WRITE: u64 = 1 << 20;

/// The directory beside a store file that holds its ingest log.
pub(super) fn dir_for(store: &Path) -> PathBuf {
    let mut name = store.file_name().unwrap_or_default().to_os_string();
    name.push("-ingest");
    store.with_file_name(name)
}

/// Exclusive ownership of a log: one process appends and applies, others (the operator tools
/// while a server runs) must not. Released when dropped, or when the process dies.
#[derive(Debug)]
pub(super) struct Lock {
    /// Held open, never read: the lock lasts as long as the descriptor.
    _file: File,
}

impl Lock {
    /// `None` when another handle (in this process or another) owns the log.
    pub(super) fn try_acquire(dir: &Path) -> Result<Option<Lock>, JournalError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error(&path))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Lock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(source)) => Err(JournalError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.log")
}

/// Segment files of `dir`, oldest first, with the first sequence number each holds.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            out.push((first, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Every intact record of the log, in order. Records after a bad frame in the same segment
/// are unreachable (their boundaries are lost) and reported through `warn`.
pub(super) fn read_all(dir: &Path) -> Result<Vec<(u64, Vec<u8>)>, JournalError> {
    let mut records = Vec::new();
    for (_, path) in segments(dir)? {
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io_error(&path))?;
        let mut at = 0;
        while at < bytes.len() {
            match frame_at(&bytes[at..]) {
                Some((seq, payload, used)) => {
                    records.push((seq, payload.to_vec()));
                    at += used;
                }
                // Zeros are the space written ahead of the records (see `Journal::write`).
                None if bytes[at..].iter().all(|b| *b == 0) => break,
                None => {
                    tracing::warn!(
                        segment = %path.display(),
                        offset = at,
                        "ingest log ends in an incomplete record (never acknowledged); ignored"
                    );
                    break;
                }
            }
        }
    }
    Ok(records)
}

fn frame_at(bytes: &[u8]) -> Option<(u64, &[u8], usize)> {
    let header = bytes.get(..HEADER)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let seq = u64::from_le_bytes(header[8..16].try_into().ok()?);
    if len > MAX_RECORD {
        return None;
    }
    let payload = bytes.get(HEADER..HEADER + len)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[8..16]);
    hasher.update(payload);
    (hasher.finalize() == crc).then_some((seq, payload, HEADER + len))
}

/// Reads the payload of the frame at `offset` of a segment (written by this process).
pub(super) fn read_at(file: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut bytes = vec![0; len];
    file.read_exact_at(&mut bytes, offset)?;
    match frame_at(&bytes) {
        Some((_, payload, used)) if used == len => Ok(payload.to_vec()),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no intact record at this offset",
        )),
    }
}

/// Appends one framed record to `buf`: the reference `frame_with` is tested against.
#[cfg(test)]
pub(crate) fn frame(buf: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&hasher.finalize().to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Appends a frame whose payload `write` puts straight into `buf`: a record is encoded once,
/// in place, instead of into a buffer of its own that is then copied.
pub(super) fn frame_with(buf: &mut Vec<u8>, seq: u64, write: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER]);
    write(buf);
    let len = buf.len() - start - HEADER;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(&buf[start + HEADER..]);
    buf[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&hasher.finalize().to_le_bytes());
    buf[start + 8..start + 16].copy_from_slice(&seq.to_le_bytes());
}

/// Closed segments and the last sequence number each holds, shared between the appender
/// (which closes them) and the applier (which deletes them once applied).
#[derive(Debug, Clone, Default)]
pub(super) struct Retired(Arc<Mutex<VecDeque<(u64, PathBuf)>>>);

impl Retired {
    /// Deletes every closed segment whose records are all applied (through `applied`).
    pub(super) fn delete_through(&self, applied: u64) {
        let mut closed = self.0.lock().unwrap_or_else(|p| p.into_inner());
        while closed.front().is_some_and(|(last, _)| *last <= applied) {
            if let Some((_, path)) = closed.pop_front()
                && let Err(error) = std::fs::remove_file(&path)
            {
                tracing::warn!(%error, segment = %path.display(), "cannot delete applied ingest log segment");
            }
        }
    }
}

/// The segment being appended to.
#[derive(Debug)]
pub(super) struct Journal {
    dir: PathBuf,
    file: Arc<File>,
    path: PathBuf,
    len: u64,
    /// The last sequence number written to the current segment (0 when it is empty).
    last_seq: u64,
    /// How far the segment has been filled with zeros ahead of `len`.
    zeroed: u64,
    retired: Retired,
    segment_bytes: u64,
}

impl Journal {
    /// Deletes the segments that recovery applied and starts an empty one whose first record
    /// will be `next_seq`.
    pub(super) fn start(dir: &Path, next_seq: u64) -> Result<(Journal, Retired), JournalError> {
        for (_, path) in segments(dir)? {
            std::fs::remove_file(&path).map_err(io_error(&path))?;
        }
        let retired = Retired::default();
        let journal = Journal::create(dir, next_seq, retired.clone())?;
        Ok((journal, retired))
    }

    fn create(dir: &Path, first_seq: u64, retired: Retired) -> Result<Journal, JournalError> {
        let path = dir.join(segment_name(first_seq));
        // Readable too: the applier reads records back from here (see `read_at`).
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .read(true)
            .open(&path)
            .map_err(io_error(&path))?;
        // The new name must survive a crash as well as the bytes written under it.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(dir))?;
        Ok(Journal {
            dir: dir.to_path_buf(),
            file: Arc::new(file),
            path,
            len: 0,
            last_seq: 0,
            zeroed: 0,
            retired,
            segment_bytes: SEGMENT_BYTES,
        })
    }

    /// Writes framed records (`frame`) and returns the file to fsync before they count as
    /// stored: syncing is left to the caller, so the next group can be written while the
    /// last one is being flushed. On a write error the segment is cut back to where it was,
    /// so a record whose sender was told "not stored" is never applied later.
    pub(super) fn write(
        &mut self,
        framed: &[u8],
        last_seq: u64,
    ) -> Result<(Arc<File>, u64), JournalError> {
        if let Err(source) = self.write_at_end(framed) {
            self.cut_back(&source);
            // A full disk: the records this segment holds can only be deleted with the
            // whole file, so it is closed now rather than at its full size; once they are
            // applied, the space comes back without a restart.
            if source.kind() == std::io::ErrorKind::StorageFull
                && self.len > 0
                && let Err(error) = self.rotate()
            {
                tracing::warn!(%error, "cannot start a new ingest log segment");
            }
            return Err(io_error(&self.path)(source));
        }
        let written = (self.file.clone(), self.len);
        self.len += framed.len() as u64;
        self.last_seq = last_seq;
        if self.len >= self.segment_bytes {
            self.rotate()?;
        }
        Ok(written)
    }

    /// After a failed write the segment is cut back to where it was, so a record whose
    /// sender was told "not stored" is never applied later (and the zeros ahead, which may
    /// be what filled the disk, are given back).
    fn cut_back(&mut self, source: &std::io::Error) {
        self.zeroed = self.len;
        if let Err(error) = self.file.set_len(self.len) {
            // The log may now hold part of a refused group; stop before applying it.
            tracing::error!(
                segment = %self.path.display(),
                %source,
                %error,
                "ingest log write failed and cannot be cut back"
            );
            std::process::abort();
        }
    }

    /// Writes past the end of the records, first filling the file with zeros a few MiB
    /// ahead. Records then land in blocks the file already has, so the fsync that makes
    /// them durable has only data to flush: no size change and no block allocation, which
    /// would make it wait for a commit of the filesystem's journal, shared with everything
    /// else the machine is writing (the database's own writes, during a burst). One fsync
    /// in a few thousand carries the next extension. Without room for the zeros the
    /// records are written alone: slower fsyncs, but webhooks are still taken.
    fn write_at_end(&mut self, framed: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let end = self.len + framed.len() as u64;
        if end > self.zeroed {
            let target = end + ZERO_AHEAD;
            let zeros = vec![0u8; 1 << 20];
            while self.zeroed < target {
                let n = ((target - self.zeroed) as usize).min(zeros.len());
                if let Err(error) = self.file.write_all_at(&zeros[..n], self.zeroed) {
                    if error.kind() != std::io::ErrorKind::StorageFull {
                        return Err(error);
                    }
                    self.cut_back(&error);
                    break;
                }
                self.zeroed += n as u64;
            }
        }
        self.file.write_all_at(framed, self.len)
    }

    /// `write` and the fsync, for tests that do not pipeline.
    #[cfg(test)]
    pub(crate) fn append(&mut self, framed: &[u8], last_seq: u64) -> Result<(), JournalError> {
        let path = self.path.clone();
        self.write(framed, last_seq)?
            .0
            .sync_data()
            .map_err(io_error(&path))
    }

    fn rotate(&mut self) -> Result<(), JournalError> {
        let mut next = Journal::create(&self.dir, self.last_seq + 1, self.retired.clone())?;
        next.segment_bytes = self.segment_bytes;
        let closed = std::mem::replace(self, next);
        self.retired
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back((closed.last_seq, closed.path));
        Ok(())
    }
}

/// Length-prefixed fields: what a record's payload is made of.
#[derive(Debug, Default)]
pub(super) struct Fields(pub Vec<u8>);

impl Fields {
    pub(super) fn str(&mut self, s: &str) -> &mut Self {
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }

    pub(super) fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub(super) fn flag(&mut self, v: bool) -> &mut Self {
        self.0.push(u8::from(v));
        self
    }
}

/// Reads back what `Fields` wrote, in the same order.
#[derive(Debug)]
pub(super) struct FieldReader<'a> {
    seq: u64,
    bytes: &'a [u8],
}

impl<'a> FieldReader<'a> {
    pub(super) fn new(seq: u64, bytes: &'a [u8]) -> Self {
        FieldReader { seq, bytes }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], JournalError> {
        if self.bytes.len() < n {
            return Err(JournalError::Malformed {
                seq: self.seq,
                message: format!("{what} runs past the end"),
            });
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    /// Whether fields remain: a field added to the end of a record is absent from records
    /// an older version wrote.
    pub(super) fn more(&self) -> bool {
        !self.bytes.is_empty()
    }

    pub(super) fn u64(&mut self, what: &str) -> Result<u64, JournalError> {
        let raw = self.take(8, what)?;
        Ok(u64::from_le_bytes(raw.try_into().unwrap_or([0; 8])))
    }

    pub(super) fn flag(&mut self, what: &str) -> Result<bool, JournalError> {
        Ok(self.take(1, what)?[0] != 0)
    }

    pub(super) fn str(&mut self, what: &str) -> Result<String, JournalError> {
        let len = self.take(4, what)?;
        let len = u32::from_le_bytes(len.try_into().unwrap_or([0; 4])) as usize;
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| JournalError::Malformed {
            seq: self.seq,
            message: format!("{what} is not UTF-8"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(records: &[(u64, &[u8])]) -> Vec<u8> {
        let mut buf = Vec::new();
        for (seq, payload) in records {
            frame(&mut buf, *seq, payload);
        }
        buf
    }

    #[test]
    fn a_frame_written_in_place_is_the_same_frame() {
        let payload = b"the record's fields";
        let mut copied = vec![7];
        frame(&mut copied, 42, payload);
        let mut in_place = vec![7];
        frame_with(&mut in_place, 42, |buf| buf.extend_from_slice(payload));
        assert_eq!(copied, in_place);
        assert_eq!(
            frame_at(&in_place[1..]).map(|(seq, p, _)| (seq, p)),
            Some((42, &payload[..]))
        );
    }

    #[test]
    fn records_survive_a_restart_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::start(dir.path(), 1).unwrap();
        let buf = framed(&[(1, b"first"), (2, b"second")]);
        journal.append(&buf, 2).unwrap();
        // A crash in the middle of the next write leaves half a frame in the zeroed space.
        let torn = framed(&[(3, b"third, never acknowledged")]);
        use std::os::unix::fs::FileExt;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&journal.path)
            .unwrap()
            .write_all_at(&torn[..torn.len() - 4], buf.len() as u64)
            .unwrap();
        let records = read_all(dir.path()).unwrap();
        assert_eq!(
            records,
            vec![(1, b"first".to_vec()), (2, b"second".to_vec())]
        );
    }

    #[test]
    fn records_go_into_space_zeroed_ahead_and_zeros_read_as_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::start(dir.path(), 1).unwrap();
        let buf = framed(&[(1, b"first")]);
        journal.append(&buf, 1).unwrap();
        let size = std::fs::metadata(&journal.path).unwrap().len();
        assert_eq!(size, buf.len() as u64 + ZERO_AHEAD);
        // The next records fit in the zeroed space: the file does not grow.
        journal
            .append(&framed(&[(2, b"second"), (3, b"third")]), 3)
            .unwrap();
        assert_eq!(std::fs::metadata(&journal.path).unwrap().len(), size);
        let seqs: Vec<u64> = read_all(dir.path())
            .unwrap()
            .into_iter()
            .map(|(seq, _)| seq)
            .collect();
        assert_eq!(seqs, [1, 2, 3]);
    }

    #[test]
    fn a_written_record_is_read_back_at_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::start(dir.path(), 1).unwrap();
        let first = framed(&[(1, b"first")]);
        journal.write(&first, 1).unwrap();
        let second = framed(&[(2, b"second")]);
        let (file, offset) = journal.write(&second, 2).unwrap();
        assert_eq!(offset, first.len() as u64);
        assert_eq!(read_at(&file, offset, second.len()).unwrap(), b"second");
        assert!(
            read_at(&file, 0, second.len()).is_err(),
            "not a frame boundary"
        );
    }

    #[test]
    fn a_flipped_byte_ends_the_segment_there() {
        let mut buf = framed(&[(7, b"payload")]);
        assert!(frame_at(&buf).is_some());
        let last = buf.len() - 1;
        buf[last] ^= 1;
        assert!(frame_at(&buf).is_none());
    }

    #[test]
    fn full_segments_are_closed_and_deleted_once_applied() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, retired) = Journal::start(dir.path(), 1).unwrap();
        journal.segment_bytes = 200;
        let big = vec![b'x'; 100];
        for seq in 1..=4 {
            journal.append(&framed(&[(seq, &big)]), seq).unwrap();
        }
        assert_eq!(segments(dir.path()).unwrap().len(), 3);
        retired.delete_through(3);
        let left: Vec<u64> = segments(dir.path())
            .unwrap()
            .into_iter()
            .map(|s| s.0)
            .collect();
        assert_eq!(left, vec![3, 5], "segment 1-2 deleted, 3-4 closed, 5 open");
        retired.delete_through(4);
        assert_eq!(segments(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn only_one_handle_owns_a_log() {
        let dir = tempfile::tempdir().unwrap();
        let first = Lock::try_acquire(dir.path()).unwrap();
        assert!(first.is_some());
        assert!(Lock::try_acquire(dir.path()).unwrap().is_none());
        drop(first);
        assert!(Lock::try_acquire(dir.path()).unwrap().is_some());
    }

    #[test]
    fn fields_read_back_in_order_and_truncation_is_an_error() {
        let mut f = Fields::default();
        f.str("héllo").u64(42).flag(true);
        let mut r = FieldReader::new(1, &f.0);
        assert_eq!(r.str("a").unwrap(), "héllo");
        assert_eq!(r.u64("b").unwrap(), 42);
        assert!(r.flag("c").unwrap());
        let mut short = FieldReader::new(9, &f.0[..5]);
        let err = short.str("title").unwrap_err().to_string();
        assert!(err.contains("record 9") && err.contains("title"), "{err}");
    }
}
