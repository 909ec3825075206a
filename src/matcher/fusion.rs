//! The text answer with the semantic signal beside the lexical one: each candidate's
//! re-ranked lexical score (as a share of the ticket's best) and its embedding similarity
//! (scaled to [0, 1] over all runbooks) mixed linearly. Candidates are the lexical pool and
//! the runbooks nearest in meaning, so a paraphrase that shares no word with its runbook can
//! still reach it.

use std::sync::Arc;

use super::{Matcher, TextHit};
use crate::search::SearchError;
use crate::semantic::SemanticIndex;
use crate::signature::AlarmSignature;

/// The semantic side of a matcher: the runbooks' vectors and the weight of the signal.
#[derive(Debug, Clone)]
pub struct Semantic {
    pub index: Arc<SemanticIndex>,
    /// Share of the semantic score in the mix, in [0, 1] (`matcher.semantic_weight`).
    pub weight: f32,
}

/// One text candidate in fused order.
#[derive(Debug, Clone)]
pub struct FusedHit {
    pub hit: TextHit,
    /// The mixed score candidates are ordered by (the lexical score alone without the model).
    pub score: f32,
    /// Cosine similarity of ticket and runbook, when the model ran.
    pub similarity: Option<f32>,
    /// Where the lexical ranking alone put this runbook (0 first).
    pub lexical_rank: usize,
}

/// Runbooks nearest in meaning that join the lexical pool.
const SEMANTIC_POOL: usize = 10;
/// Words of a ticket's text given to the model: its opening says what is wrong, and the
/// model's time grows with the length (32, 64 and 128 words gave the same answers on both
/// development corpora; 48 bounds a long ticket's cost near 40 ms).
const QUERY_WORDS: usize = 48;

impl Matcher {
    /// Text candidates, best first: fused when the model is loaded, lexical otherwise.
    pub fn fused_text(
        &self,
        signature: &AlarmSignature,
        limit: usize,
    ) -> Result<Vec<FusedHit>, SearchError> {
        let similarities = self.semantic.as_ref().and_then(|semantic| {
            let text = signature.search_text();
            let words: Vec<&str> = text.split_whitespace().take(QUERY_WORDS).collect();
            match semantic.index.embedder().embed_one(&words.join(" ")) {
                Ok(query) => Some((semantic.weight, semantic.index.similarities(&query))),
                Err(error) => {
                    tracing::warn!(%error, "cannot embed the ticket; matching on text alone");
                    None
                }
            }
        });
        let Some((weight, sims)) = similarities.filter(|(_, s)| !s.is_empty()) else {
            let hits = self.rank_text(signature, limit)?;
            return Ok(hits
                .into_iter()
                .enumerate()
                .map(|(rank, hit)| FusedHit {
                    score: hit.score,
                    similarity: None,
                    lexical_rank: rank,
                    hit,
                })
                .collect());
        };
        let mut nearest: Vec<usize> = (0..sims.len()).collect();
        nearest.sort_by(|a, b| sims[*b].total_cmp(&sims[*a]));
        nearest.truncate(SEMANTIC_POOL);
        // Sorted by the lexical score: the position is the lexical rank.
        let hits = self.rank_text_with(signature, limit, &nearest)?;
        let best = hits.first().map_or(0.0, |h| h.score);
        let (lo, hi) = sims
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), s| (lo.min(*s), hi.max(*s)));
        let spread = hi - lo;
        let mut fused: Vec<FusedHit> = hits
            .into_iter()
            .enumerate()
            .map(|(rank, hit)| {
                let lexical = if best > 0.0 { hit.score / best } else { 0.0 };
                let semantic = if spread > 1e-6 {
                    (sims[hit.ord] - lo) / spread
                } else {
                    0.0
                };
                FusedHit {
                    score: (1.0 - weight) * lexical + weight * semantic,
                    similarity: Some(sims[hit.ord]),
                    lexical_rank: rank,
                    hit,
                }
            })
            .collect();
        fused.sort_by(|a, b| b.score.total_cmp(&a.score));
        fused.truncate(limit);
        Ok(fused)
    }
}
