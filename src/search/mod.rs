//! The full-text index over the runbook corpus. It is built in memory at start-up (a corpus
//! is thousands of files at most) and never mutated: a new corpus gets a new index, swapped
//! whole, so a reader always sees one consistent version.

mod schema;
mod synonyms;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{Index, IndexReader, TantivyDocument, Term};

use crate::runbooks::Runbook;
use crate::signature::split_identifier;
use schema::Fields;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("search index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
}

/// One full-text hit: which runbook (by position in the corpus), its score, and which query
/// terms it contains (used for confidence and for "why matched").
#[derive(Debug, Clone)]
pub struct Hit {
    pub ord: usize,
    pub score: f32,
}

pub struct RunbookIndex {
    index: Index,
    reader: IndexReader,
    fields: Fields,
    analyzer: TextAnalyzer,
    runbooks: Vec<Arc<Runbook>>,
    /// Analyzed tokens of each runbook, all fields together, for coverage checks.
    doc_terms: Vec<HashSet<String>>,
    /// Analyzed terms of each alarm name (and the title) of each runbook: siblings differ
    /// exactly there ("space" vs "files", "filling up" vs "almost out of").
    name_terms: Vec<Vec<Vec<String>>>,
    doc_freq: HashMap<String, u32>,
    /// A digest of the corpus content: recorded with every decision, and the key that keeps
    /// decisions of one corpus from being served after a reload.
    version: String,
}

impl std::fmt::Debug for RunbookIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunbookIndex")
            .field("runbooks", &self.runbooks.len())
            .finish()
    }
}

impl RunbookIndex {
    pub fn build(runbooks: Vec<Runbook>) -> Result<Self, SearchError> {
        Self::build_with(runbooks, &schema::default_synonyms())
    }

    pub fn build_with(
        runbooks: Vec<Runbook>,
        synonyms: &[Vec<String>],
    ) -> Result<Self, SearchError> {
        let (schema, fields) = schema::build();
        let index = Index::create_in_ram(schema);
        let mut analyzer = schema::analyzer(synonyms);
        index
            .tokenizers()
            .register(schema::ANALYZER, analyzer.clone());
        // One thread: the corpus is small, and a second indexing thread only costs memory.
        let mut writer = index.writer_with_num_threads::<TantivyDocument>(1, 15_000_000)?;
        let mut doc_terms = Vec::with_capacity(runbooks.len());
        let mut name_terms = Vec::with_capacity(runbooks.len());
        let mut doc_freq: HashMap<String, u32> = HashMap::new();
        for (ord, runbook) in runbooks.iter().enumerate() {
            let names: Vec<String> = runbook.alarms.iter().map(|a| split_identifier(a)).collect();
            // Compounds the split broke apart, written as one word in prose ("MisScheduled"
            // is "misscheduled", "DaemonSet" is "daemonset"): adjacent parts joined.
            let compounds: Vec<String> = names.iter().flat_map(|n| joined_pairs(n)).collect();
            let names = format!("{}\n{}", names.join("\n"), compounds.join(" "));
            let headings = runbook.headings.join("\n");
            let mut doc = TantivyDocument::default();
            doc.add_text(fields.id, runbook.id.as_str());
            doc.add_u64(fields.ord, ord as u64);
            doc.add_text(fields.name, &names);
            doc.add_text(fields.title, schema::prepare(&runbook.title));
            doc.add_text(fields.meaning, schema::prepare(&runbook.meaning));
            doc.add_text(fields.headings, schema::prepare(&headings));
            doc.add_text(fields.body, schema::prepare(&runbook.body));
            writer.add_document(doc)?;

            let mut terms = HashSet::new();
            for text in [
                &names,
                &runbook.title,
                &runbook.meaning,
                &headings,
                &runbook.body,
            ] {
                terms.extend(schema::tokens(&mut analyzer, text));
            }
            for term in &terms {
                *doc_freq.entry(term.clone()).or_default() += 1;
            }
            doc_terms.push(terms);
            let mut names: Vec<Vec<String>> = runbook
                .alarms
                .iter()
                .map(|a| dedup(schema::tokens(&mut analyzer, &split_identifier(a))))
                .collect();
            names.push(dedup(schema::tokens(&mut analyzer, &runbook.title)));
            names.retain(|n| !n.is_empty());
            name_terms.push(names);
        }
        writer.commit()?;
        // The index is read-only once built: one segment means one pass per query instead
        // of one per segment.
        let segments = index.searchable_segment_ids()?;
        if segments.len() > 1 {
            futures::executor::block_on(writer.merge(&segments))?;
        }
        writer.wait_merging_threads()?;
        let reader = index.reader()?;
        let version = {
            use sha2::{Digest, Sha256};
            let mut hash = Sha256::new();
            for runbook in &runbooks {
                for part in [
                    runbook.id.as_str(),
                    &runbook.title,
                    &runbook.body,
                    runbook.url.as_str(),
                ] {
                    hash.update(part.as_bytes());
                    hash.update([0u8]);
                }
                for part in runbook
                    .alarms
                    .iter()
                    .chain(runbook.match_rules.iter().map(|r| &r.pattern))
                {
                    hash.update(part.as_bytes());
                    hash.update([1u8]);
                }
                for part in &runbook.not_alarms {
                    hash.update(part.as_bytes());
                    hash.update([2u8]);
                }
            }
            hex::encode(&hash.finalize()[..6])
        };
        Ok(RunbookIndex {
            index,
            reader,
            fields,
            analyzer,
            runbooks: runbooks.into_iter().map(Arc::new).collect(),
            doc_terms,
            name_terms,
            doc_freq,
            version,
        })
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn runbooks(&self) -> &[Arc<Runbook>] {
        &self.runbooks
    }

    pub fn len(&self) -> usize {
        self.runbooks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runbooks.is_empty()
    }

    /// The distinct analyzed terms of a query text, in first-seen order.
    pub fn query_terms(&self, text: &str) -> Vec<String> {
        let mut analyzer = self.analyzer.clone();
        let mut seen = HashSet::new();
        schema::tokens(&mut analyzer, text)
            .into_iter()
            .filter(|t| seen.insert(t.clone()))
            .collect()
    }

    /// Inverse document frequency of a term, smoothed so unseen terms weigh the most.
    pub fn idf(&self, term: &str) -> f32 {
        let n = self.runbooks.len() as f32;
        let df = self.doc_freq.get(term).copied().unwrap_or(0) as f32;
        ((n - df + 0.5) / (df + 0.5) + 1.0).ln()
    }

    /// The analyzed name variants (alarm names, title) of a runbook.
    pub fn name_terms(&self, ord: usize) -> &[Vec<String>] {
        self.name_terms.get(ord).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn contains(&self, ord: usize, term: &str) -> bool {
        self.doc_terms.get(ord).is_some_and(|t| t.contains(term))
    }

    /// BM25 over the weighted fields: every term may match in any field, each field with its
    /// boost. Blocking: call it off the async executor.
    /// `terms` carry their own weight (1.0 for the ticket's words, less for weaker evidence).
    pub fn search(&self, terms: &[(String, f32)], limit: usize) -> Result<Vec<Hit>, SearchError> {
        if terms.is_empty() || self.runbooks.is_empty() {
            return Ok(Vec::new());
        }
        let searcher = self.reader.searcher();
        // A word in a quarter or more of all bodies says little there, and its long posting
        // list is most of what a query costs: such words are matched in the other fields only.
        let common = (self.runbooks.len() as u64 / 4).max(8);
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for (term, weight) in terms {
            for (field, field_boost) in self.fields.weighted() {
                let boost = field_boost * weight;
                let indexed = Term::from_field_text(field, term);
                if field == self.fields.body && searcher.doc_freq(&indexed)? >= common {
                    continue;
                }
                let query = TermQuery::new(indexed, IndexRecordOption::WithFreqs);
                clauses.push((
                    Occur::Should,
                    Box::new(BoostQuery::new(Box::new(query), boost)),
                ));
            }
        }
        let query = BooleanQuery::new(clauses);
        let top = searcher.search(&query, &TopDocs::with_limit(limit).order_by_score())?;
        // The corpus position is a fast field: reading it costs an array lookup, where
        // loading stored documents would decompress a block per hit.
        let mut columns = HashMap::new();
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let column = match columns.entry(address.segment_ord) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(
                    searcher
                        .segment_reader(address.segment_ord)
                        .fast_fields()
                        .u64("ord")?,
                ),
            };
            if let Some(ord) = column.first(address.doc_id) {
                hits.push(Hit {
                    ord: ord as usize,
                    score,
                });
            }
        }
        Ok(hits)
    }

    pub fn schema_index(&self) -> &Index {
        &self.index
    }
}

/// `Kube Daemon Set` -> `kubedaemon daemonset`: lowercase, so that no analyzer step splits
/// them again at the case change.
fn joined_pairs(split_name: &str) -> Vec<String> {
    let words: Vec<&str> = split_name.split_whitespace().collect();
    words
        .windows(2)
        .map(|w| format!("{}{}", w[0], w[1]).to_lowercase())
        .collect()
}

fn dedup(terms: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    terms
        .into_iter()
        .filter(|t| seen.insert(t.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use url::Url;

    /// The query terms of `text`, each with weight 1.
    fn weighted(index: &RunbookIndex, text: &str) -> Vec<(String, f32)> {
        index
            .query_terms(text)
            .into_iter()
            .map(|t| (t, 1.0))
            .collect()
    }

    fn runbook(path: &str, src: &str) -> Runbook {
        Runbook::parse(
            Path::new(path),
            src,
            &Url::parse("https://x.example/").unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn name_words_outrank_body_mentions() {
        let index = RunbookIndex::build(vec![
            runbook(
                "a/CertificateExpiry.md",
                "# CertificateExpiry\n\n## Meaning\n\nA TLS certificate expires soon.\n",
            ),
            runbook(
                "a/NodeDown.md",
                "# NodeDown\n\n## Meaning\n\nThe node is gone. Certificate checks may fail too.\n",
            ),
        ])
        .unwrap();
        let terms = weighted(&index, "certificate expiring on web");
        let hits = index.search(&terms, 5).unwrap();
        assert_eq!(
            index.runbooks()[hits[0].ord].id.as_str(),
            "a/CertificateExpiry.md"
        );
        assert!(hits[0].score > hits[1].score);
    }

    #[test]
    fn query_terms_are_stemmed_deduplicated_and_keep_not() {
        let index = RunbookIndex::build(Vec::new()).unwrap();
        assert_eq!(
            index.query_terms("Pods not ready, pod restarting and the pods"),
            vec!["pod", "not", "readi", "restart"]
        );
    }

    #[test]
    fn compounds_split_from_a_name_still_match_the_one_word_form() {
        assert_eq!(
            joined_pairs("Kube Daemon Set Mis Scheduled"),
            ["kubedaemon", "daemonset", "setmis", "misscheduled"]
        );
        let index = RunbookIndex::build(vec![
            runbook(
                "k/KubeDaemonSetMisScheduled.md",
                "# KubeDaemonSetMisScheduled\n\n## Meaning\n\nPods run where they should not.\n",
            ),
            runbook(
                "k/KubeDaemonSetRolloutStuck.md",
                "# KubeDaemonSetRolloutStuck\n\n## Meaning\n\nThe rollout makes no progress; pods were scheduled long ago.\n",
            ),
        ])
        .unwrap();
        let terms = weighted(&index, "daemonset misscheduled");
        let hits = index.search(&terms, 5).unwrap();
        assert_eq!(
            index.runbooks()[hits[0].ord].id.as_str(),
            "k/KubeDaemonSetMisScheduled.md"
        );
        assert!(index.contains(hits[0].ord, &index.query_terms("misscheduled")[0]));
    }

    #[test]
    fn bad_and_invalid_mean_failed() {
        let index = RunbookIndex::build(Vec::new()).unwrap();
        assert_eq!(
            index.query_terms("bad config"),
            index.query_terms("failed configuration")
        );
    }

    #[test]
    fn words_common_to_most_bodies_match_only_in_the_other_fields() {
        let mut runbooks: Vec<Runbook> = (0..12)
            .map(|i| {
                runbook(
                    &format!("a/Thing{i}.md"),
                    &format!("# Thing{i}\n\n## Meaning\n\nSomething {i}.\n\n## Steps\n\nRestart the service.\n"),
                )
            })
            .collect();
        runbooks.push(runbook(
            "a/ServiceRestarting.md",
            "# ServiceRestarting\n\n## Meaning\n\nThe service keeps restarting.\n",
        ));
        let index = RunbookIndex::build(runbooks).unwrap();
        let terms = weighted(&index, "restart");
        let hits = index.search(&terms, 20).unwrap();
        assert_eq!(hits.len(), 1, "only the runbook named for it: {hits:?}");
        assert_eq!(
            index.runbooks()[hits[0].ord].id.as_str(),
            "a/ServiceRestarting.md"
        );
    }
}
