//! Runbook embeddings, one per runbook of an index and in its order, and the similarity of a
//! ticket to each.

use std::path::Path;
use std::sync::Arc;

use super::cache::Cache;
use super::{Embedder, SemanticError, cosine};
use crate::runbooks::Runbook;

/// Words of a runbook's text embedded after its title: the model reads 256 tokens at most,
/// and the opening of a runbook (what the alert means) is what a ticket paraphrases.
const TEXT_WORDS: usize = 200;
/// Runbooks embedded per model call.
const BATCH: usize = 16;

/// What a runbook is embedded as: its title (an alert name split into words) and the
/// opening of its text.
pub fn embedding_text(runbook: &Runbook) -> String {
    let mut text = crate::signature::split_identifier(&runbook.title);
    text.push_str(".\n");
    let words: Vec<&str> = runbook.body.split_whitespace().take(TEXT_WORDS).collect();
    text.push_str(&words.join(" "));
    text
}

/// The embedder and the vectors of one index's runbooks.
#[derive(Debug)]
pub struct SemanticIndex {
    embedder: Arc<Embedder>,
    dim: usize,
    vectors: Vec<f32>,
    /// Runbooks embedded by this build (not found in the cache).
    pub embedded: usize,
}

impl SemanticIndex {
    /// Embeds `runbooks`, taking from the cache in `cache_dir` what an earlier build of the
    /// same corpus (`scope`, any short name for it) already embedded with this model, and
    /// writing back what it adds. A cache that cannot be read or written costs time, never
    /// the index.
    pub fn build(
        embedder: Arc<Embedder>,
        runbooks: &[Arc<Runbook>],
        cache_dir: Option<&Path>,
        scope: &str,
    ) -> Result<SemanticIndex, SemanticError> {
        let texts: Vec<String> = runbooks.iter().map(|r| embedding_text(r)).collect();
        let mut cache = cache_dir.map(|dir| Cache::open(dir, embedder.digest(), scope));
        let mut found: Vec<Option<Vec<f32>>> = texts
            .iter()
            .map(|t| cache.as_ref().and_then(|c| c.get(t)))
            .collect();
        let missing: Vec<usize> = (0..texts.len()).filter(|i| found[*i].is_none()).collect();
        for chunk in missing.chunks(BATCH) {
            let batch: Vec<&str> = chunk.iter().map(|i| texts[*i].as_str()).collect();
            for (i, vector) in chunk.iter().zip(embedder.embed(&batch)?) {
                if let Some(cache) = cache.as_mut() {
                    cache.put(&texts[*i], &vector);
                }
                found[*i] = Some(vector);
            }
        }
        if let Some(cache) = cache.as_mut()
            && let Err(error) = cache.save(texts.iter().map(String::as_str))
        {
            tracing::warn!(%error, "cannot write the runbook embedding cache");
        }
        let dim = found.iter().flatten().next().map_or(0, Vec::len);
        let vectors = found.into_iter().flatten().flatten().collect();
        Ok(SemanticIndex {
            embedder,
            dim,
            vectors,
            embedded: missing.len(),
        })
    }

    pub fn embedder(&self) -> &Arc<Embedder> {
        &self.embedder
    }

    /// Cosine similarity of `query` (a unit vector) to every runbook, in index order.
    pub fn similarities(&self, query: &[f32]) -> Vec<f32> {
        if self.dim == 0 {
            return Vec::new();
        }
        self.vectors
            .chunks_exact(self.dim)
            .map(|v| cosine(v, query))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runbook(path: &str, source: &str) -> Arc<Runbook> {
        let base = url::Url::parse("https://rb.example/").unwrap();
        Arc::new(Runbook::parse(Path::new(path), source, &base).unwrap())
    }

    #[test]
    fn a_rebuild_embeds_only_what_changed() {
        let Some(model) = super::super::tests::model() else {
            return;
        };
        let model = Arc::new(model);
        let cache = tempfile::tempdir().unwrap();
        let mut runbooks = vec![
            runbook(
                "crash.md",
                "# PodCrashLooping\n\nA container keeps restarting.\n",
            ),
            runbook(
                "disk.md",
                "# DiskFull\n\nThe filesystem has no space left.\n",
            ),
        ];
        let first =
            SemanticIndex::build(model.clone(), &runbooks, Some(cache.path()), "t").unwrap();
        assert_eq!(first.embedded, 2);
        let again =
            SemanticIndex::build(model.clone(), &runbooks, Some(cache.path()), "t").unwrap();
        assert_eq!(again.embedded, 0);
        let query = model.embed_one("pods restarting over and over").unwrap();
        assert_eq!(first.similarities(&query), again.similarities(&query));
        let sims = again.similarities(&query);
        assert!(sims[0] > sims[1], "{sims:?}");

        runbooks[1] = runbook("disk.md", "# DiskFull\n\nThe volume is out of space.\n");
        let changed = SemanticIndex::build(model, &runbooks, Some(cache.path()), "t").unwrap();
        assert_eq!(changed.embedded, 1);
    }

    #[test]
    fn a_runbook_is_embedded_as_its_title_words_and_opening() {
        let rb = runbook("x.md", "# KubePodCrashLooping\n\nPods restart.\n");
        let text = embedding_text(&rb);
        assert!(text.starts_with("Kube Pod Crash Looping."), "{text}");
        assert!(text.contains("Pods restart."), "{text}");
    }
}
