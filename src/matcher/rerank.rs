//! The full-text answer: BM25 retrieval, then re-ranking of the top hits with features that
//! separate siblings (name words, coverage of the ticket's words), and how confident the
//! winner is.

use super::Matcher;
use crate::search::SearchError;
use crate::signature::AlarmSignature;

/// One full-text candidate after re-ranking, with the features that placed it.
#[derive(Debug, Clone)]
pub struct TextHit {
    pub ord: usize,
    /// The re-ranked score: BM25 relative to the best hit, plus name and coverage evidence.
    pub score: f32,
    pub bm25: f32,
    /// Share (idf-weighted) of the best-matching name variant's words found in the ticket.
    pub name_coverage: f32,
    /// Share (idf-weighted) of the ticket's words found in the runbook.
    pub coverage: f32,
    /// The same for the title alone: the sharpest statement of what is wrong.
    pub title_coverage: f32,
    pub terms: Vec<String>,
}

/// How sure runlink is of a text answer, in [0, 1]. A runbook is a confident answer when the
/// ticket carries its name words, its words explain the ticket (the title above all), and
/// it stands clear of the runner-up. The weights and the default threshold
/// (`matcher.min_confidence`) were fitted with `runlink eval` so that nearly all right answers
/// on the development sets are confident; docs/matching.md has the figures.
pub(super) fn text_confidence(hit: &TextHit, margin: f32) -> f32 {
    let raw = 2.0 * hit.name_coverage
        + 0.75 * hit.coverage
        + 0.25 * margin.clamp(0.0, 1.0)
        + 1.5 * hit.title_coverage;
    (raw / 4.5).clamp(0.0, 1.0)
}

impl Matcher {
    /// BM25 retrieval, then re-ranking of the top candidates with features that separate
    /// siblings. Blocking.
    pub fn rank_text(
        &self,
        signature: &AlarmSignature,
        limit: usize,
    ) -> Result<Vec<TextHit>, SearchError> {
        self.rank_text_with(signature, limit, &[])
    }

    /// `rank_text`, with the runbooks `also` scored by the same features even when BM25 did
    /// not retrieve them (the semantic signal's nearest runbooks; their BM25 share is 0).
    pub(super) fn rank_text_with(
        &self,
        signature: &AlarmSignature,
        limit: usize,
        also: &[usize],
    ) -> Result<Vec<TextHit>, SearchError> {
        let index = &self.index;
        let mut terms = index.query_terms(&signature.search_text());
        // A long ticket body would make a query of hundreds of terms; the most informative
        // ones decide the ranking, the rest only cost time.
        if terms.len() > MAX_QUERY_TERMS {
            let mut by_idf: Vec<(f32, usize)> = terms
                .iter()
                .enumerate()
                .map(|(i, t)| (index.idf(t), i))
                .collect();
            by_idf.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let mut keep: Vec<usize> = by_idf[..MAX_QUERY_TERMS].iter().map(|(_, i)| *i).collect();
            keep.sort_unstable();
            terms = keep.into_iter().map(|i| terms[i].clone()).collect();
        }

        let mut weighted: Vec<(String, f32)> = terms.iter().map(|t| (t.clone(), 1.0)).collect();
        for term in index.query_terms(&signature.metric_text()) {
            if !terms.contains(&term) {
                weighted.push((term, METRIC_WEIGHT));
            }
        }
        let pool = limit.max(RERANK_POOL);
        let mut hits = index.search(&weighted, pool)?;
        let Some(best) = hits.first().map(|h| h.score).filter(|s| *s > 0.0) else {
            return Ok(Vec::new());
        };
        for ord in also {
            if !hits.iter().any(|h| h.ord == *ord) {
                hits.push(crate::search::Hit {
                    ord: *ord,
                    score: 0.0,
                });
            }
        }
        let query: std::collections::HashSet<&str> = terms.iter().map(String::as_str).collect();
        let title_terms =
            index.query_terms(&crate::signature::strip_class_tokens(&signature.title));
        let title_idf: f32 = title_terms.iter().map(|t| index.idf(t)).sum();
        let total_idf: f32 = terms.iter().map(|t| index.idf(t)).sum();
        let mut out: Vec<TextHit> = hits
            .into_iter()
            .map(|hit| {
                let found: Vec<String> = terms
                    .iter()
                    .filter(|t| index.contains(hit.ord, t))
                    .cloned()
                    .collect();
                let found_idf: f32 = found.iter().map(|t| index.idf(t)).sum();
                let coverage = if total_idf > 0.0 {
                    found_idf / total_idf
                } else {
                    0.0
                };
                let name_coverage = index
                    .name_terms(hit.ord)
                    .iter()
                    .map(|name| {
                        let all: f32 = name.iter().map(|t| index.idf(t)).sum();
                        let hit: f32 = name
                            .iter()
                            .filter(|t| query.contains(t.as_str()))
                            .map(|t| index.idf(t))
                            .sum();
                        if all > 0.0 { hit / all } else { 0.0 }
                    })
                    .fold(0.0f32, f32::max);
                let title_found: f32 = title_terms
                    .iter()
                    .filter(|t| index.contains(hit.ord, t))
                    .map(|t| index.idf(t))
                    .sum();
                let title_coverage = if title_idf > 0.0 {
                    title_found / title_idf
                } else {
                    coverage
                };
                let bm25 = hit.score / best;
                TextHit {
                    ord: hit.ord,
                    score: bm25 + NAME_WEIGHT * name_coverage + COVERAGE_WEIGHT * coverage,
                    bm25: hit.score,
                    name_coverage,
                    coverage,
                    title_coverage,
                    terms: found,
                }
            })
            .collect();
        out.sort_by(|a, b| b.score.total_cmp(&a.score));
        out.truncate(limit.max(RERANK_POOL) + also.len());
        Ok(out)
    }
}

/// The most query terms a text search uses (by idf).
const MAX_QUERY_TERMS: usize = 24;
/// How many BM25 hits the re-ranker looks at.
const RERANK_POOL: usize = 10;
/// Re-ranking weights, set by `runlink eval` on the development sets (docs/matching.md): the
/// runbook's name words found in the ticket separate siblings best; coverage of the
/// ticket's words breaks ties between runbooks that share a name shape.
const NAME_WEIGHT: f32 = 1.0;
const COVERAGE_WEIGHT: f32 = 0.5;
/// Metric-name words from the alert query: supporting evidence, weaker than the text.
const METRIC_WEIGHT: f32 = 0.3;
