//! Runbook embeddings kept on disk between builds: a restart or a hot reload embeds only the
//! runbooks whose text changed. One file per model and corpus (named by the model's digest
//! and a digest of the corpus directory, so a server and a tool on another corpus do not
//! evict each other's vectors), holding for each
//! runbook text its SHA-256 and vector; rewritten whole (to a temporary name, then renamed)
//! with the texts of the last build, so it never grows past the corpus.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"RLEMB01\n";

type Key = [u8; 32];

fn key(text: &str) -> Key {
    Sha256::digest(text.as_bytes()).into()
}

pub(super) struct Cache {
    path: PathBuf,
    dim: usize,
    entries: HashMap<Key, Vec<f32>>,
    changed: bool,
}

impl Cache {
    /// The cache of model `digest` in `dir`; empty when there is none or it cannot be read.
    pub(super) fn open(dir: &Path, digest: &str, scope: &str) -> Cache {
        let path = dir.join(format!(
            "embeddings-{}-{scope}.bin",
            &digest[..digest.len().min(16)]
        ));
        let (dim, entries) = match read(&path) {
            Ok(read) => read,
            Err(error) => {
                if error.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(%error, cache = %path.display(), "runbook embedding cache unreadable; embedding again");
                }
                (0, HashMap::new())
            }
        };
        Cache {
            path,
            dim,
            entries,
            changed: false,
        }
    }

    pub(super) fn get(&self, text: &str) -> Option<Vec<f32>> {
        self.entries.get(&key(text)).cloned()
    }

    pub(super) fn put(&mut self, text: &str, vector: &[f32]) {
        if self.dim != vector.len() {
            // A model of another width: what was kept is of no use.
            self.entries.clear();
            self.dim = vector.len();
        }
        self.entries.insert(key(text), vector.to_vec());
        self.changed = true;
    }

    /// Keeps the entries of `texts` only, and writes the file if anything changed.
    pub(super) fn save<'a>(&mut self, texts: impl Iterator<Item = &'a str>) -> std::io::Result<()> {
        let keep: std::collections::HashSet<Key> = texts.map(key).collect();
        let before = self.entries.len();
        self.entries.retain(|k, _| keep.contains(k));
        if !self.changed && self.entries.len() == before {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut bytes = Vec::with_capacity(16 + self.entries.len() * (32 + 4 * self.dim));
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(self.dim as u32).to_le_bytes());
        for (k, vector) in &self.entries {
            bytes.extend_from_slice(k);
            for x in vector {
                bytes.extend_from_slice(&x.to_le_bytes());
            }
        }
        // Two processes (a server and a tool) may save at once: each its own file.
        let tmp = self.path.with_extension(format!(
            "tmp.{}.{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        self.changed = false;
        Ok(())
    }
}

fn read(path: &Path) -> std::io::Result<(usize, HashMap<Key, Vec<f32>>)> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut bytes)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an embedding cache");
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err(bad());
    }
    let dim = u32::from_le_bytes(bytes[8..12].try_into().map_err(|_| bad())?) as usize;
    let entry = 32 + 4 * dim;
    let body = &bytes[12..];
    if dim == 0 || !body.len().is_multiple_of(entry) {
        return Err(bad());
    }
    let entries = body
        .chunks_exact(entry)
        .map(|e| {
            let mut k = [0u8; 32];
            k.copy_from_slice(&e[..32]);
            let v = e[32..]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (k, v)
        })
        .collect();
    Ok((dim, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_survive_a_reopen_and_only_the_last_build_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = Cache::open(dir.path(), "abcdef0123456789ffff", "c1");
        assert!(cache.get("a").is_none());
        cache.put("a", &[1.0, 2.0]);
        cache.put("b", &[3.0, 4.0]);
        cache.save(["a", "b"].into_iter()).unwrap();
        let mut cache = Cache::open(dir.path(), "abcdef0123456789ffff", "c1");
        assert_eq!(cache.get("a"), Some(vec![1.0, 2.0]));
        assert_eq!(cache.get("b"), Some(vec![3.0, 4.0]));
        // A build without "b" drops it.
        cache.save(["a"].into_iter()).unwrap();
        let cache = Cache::open(dir.path(), "abcdef0123456789ffff", "c1");
        assert_eq!(cache.get("b"), None);
        // Another model starts empty.
        assert!(
            Cache::open(dir.path(), "0000000000000000", "c1")
                .get("a")
                .is_none()
        );
    }

    #[test]
    fn a_damaged_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = Cache::open(dir.path(), "abcdef0123456789", "c1");
        cache.put("a", &[1.0, 2.0]);
        cache.save(["a"].into_iter()).unwrap();
        let path = dir.path().join("embeddings-abcdef0123456789-c1.bin");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&path, bytes).unwrap();
        assert!(
            Cache::open(dir.path(), "abcdef0123456789", "c1")
                .get("a")
                .is_none()
        );
    }
}
