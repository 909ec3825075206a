//! Decides which runbooks answer an alarm. Explicit rules come first and always win: an exact
//! alarm name (front matter `alarms`, else the H1 or file stem), then a `match` regex. Only
//! then the full-text ranking, whose best hit is posted as a link only when it is confident;
//! below that, runlink says it found nothing rather than sending an operator down a wrong path.

use std::sync::Arc;

use serde::Serialize;

use crate::feedback::Lessons;
use crate::runbooks::Runbook;
use crate::search::{RunbookIndex, SearchError};
use crate::signature::AlarmSignature;

mod fusion;
mod rerank;
mod rules;
#[cfg(test)]
mod tests;

pub use fusion::{FusedHit, Semantic};
pub use rerank::TextHit;
use rerank::text_confidence;
use rules::ExplicitRules;

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MatchReason {
    /// The alert name equals one of the runbook's alarm names.
    Alarm { name: String },
    /// A front-matter `match` regex matched the signature.
    Rule { pattern: String },
    /// An operator taught it for this alarm with `/runlink use` (`feedback` is the row).
    Taught {
        author: String,
        ticket: String,
        date: String,
        feedback: i64,
    },
    /// Ranked full-text search; `terms` are the query terms the runbook contains. With the
    /// semantic signal, `similarity` is the ticket's cosine similarity to the runbook and
    /// `lexical_rank` where the words alone ranked it (1 first).
    FullText {
        terms: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        similarity: Option<f32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        lexical_rank: Option<usize>,
    },
}

impl MatchReason {
    pub fn describe(&self) -> String {
        match self {
            MatchReason::Alarm { name } => format!("alert name `{name}` is listed by this runbook"),
            MatchReason::Rule { pattern } => format!("match rule `{pattern}`"),
            MatchReason::Taught {
                author,
                ticket,
                date,
                ..
            } => format!("taught by {author} in {ticket} on {date}"),
            MatchReason::FullText {
                terms,
                similarity,
                lexical_rank,
            } => {
                let shown: Vec<_> = terms.iter().take(6).map(String::as_str).collect();
                let mut out = if shown.is_empty() {
                    "similar in meaning".to_string()
                } else {
                    format!("text search on: {}", shown.join(", "))
                };
                if let (Some(similarity), Some(rank)) = (similarity, lexical_rank) {
                    out.push_str(&format!(
                        " (meaning similarity {similarity:.2}, words alone rank {rank})"
                    ));
                }
                out
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Candidate {
    pub runbook: Arc<Runbook>,
    pub score: f32,
    /// In [0, 1]: 1 for explicit rules; for text hits, the share of the query's information
    /// (idf-weighted terms) that the runbook contains, scaled down when a runner-up is as good.
    pub confidence: f32,
    pub confident: bool,
    pub reason: MatchReason,
}

#[derive(Debug, Clone)]
pub struct Decision {
    pub candidates: Vec<Candidate>,
    /// The version of the runbook index that decided.
    pub index_version: String,
}

impl Decision {
    /// The runbooks runlink would link as answers: confident candidates only.
    pub fn confident(&self) -> impl Iterator<Item = &Candidate> {
        self.candidates.iter().filter(|c| c.confident)
    }

    pub fn is_confident(&self) -> bool {
        self.candidates.first().is_some_and(|c| c.confident)
    }
}

#[derive(Debug, Clone)]
pub struct MatcherSettings {
    pub top_k: usize,
    pub min_confidence: f32,
}

#[derive(Debug)]
pub struct Matcher {
    index: Arc<RunbookIndex>,
    rules: ExplicitRules,
    settings: MatcherSettings,
    semantic: Option<Semantic>,
}

/// Candidates in rank order, each runbook at most once (its best reason wins).
struct Ranked<'a> {
    runbooks: &'a [Arc<Runbook>],
    /// The ticket's alert name, lowercased: runbooks whose `not_alarms` list it answer it
    /// only by an explicit rule.
    alertname: Option<String>,
    candidates: Vec<Candidate>,
    taken: Vec<bool>,
    min_confidence: f32,
}

impl Ranked<'_> {
    fn push(&mut self, ord: usize, score: f32, confidence: f32, reason: MatchReason) {
        let explicit = matches!(reason, MatchReason::Alarm { .. } | MatchReason::Rule { .. });
        if !explicit
            && let Some(name) = &self.alertname
            && self.runbooks[ord]
                .not_alarms
                .iter()
                .any(|a| a.eq_ignore_ascii_case(name))
        {
            return;
        }
        if !self.taken[ord] {
            self.taken[ord] = true;
            self.candidates.push(Candidate {
                runbook: self.runbooks[ord].clone(),
                score,
                confidence,
                confident: confidence >= self.min_confidence,
                reason,
            });
        }
    }
}

impl Matcher {
    pub fn new(index: Arc<RunbookIndex>, settings: MatcherSettings) -> Self {
        Matcher {
            rules: ExplicitRules::new(index.runbooks()),
            index,
            settings,
            semantic: None,
        }
    }

    /// With the semantic signal beside the lexical one (its index must be built over this
    /// matcher's runbooks, in the same order).
    pub fn with_semantic(mut self, semantic: Semantic) -> Self {
        self.semantic = Some(semantic);
        self
    }

    pub fn semantic(&self) -> Option<&Semantic> {
        self.semantic.as_ref()
    }

    pub fn index(&self) -> &Arc<RunbookIndex> {
        &self.index
    }

    pub fn settings(&self) -> &MatcherSettings {
        &self.settings
    }

    /// Blocking (the text search runs here): call from a blocking thread.
    pub fn decide(
        &self,
        signature: &AlarmSignature,
        top_k: usize,
    ) -> Result<Decision, SearchError> {
        self.decide_with(signature, top_k, None)
    }

    /// `decide` with the answers operators taught (`crate::feedback`): below the corpus's
    /// explicit rules, above any text answer.
    pub fn decide_with(
        &self,
        signature: &AlarmSignature,
        top_k: usize,
        lessons: Option<&Lessons>,
    ) -> Result<Decision, SearchError> {
        let runbooks = self.index.runbooks();
        let mut ranked = Ranked {
            runbooks,
            alertname: signature.alertname.as_ref().map(|a| a.to_lowercase()),
            candidates: Vec::new(),
            taken: vec![false; runbooks.len()],
            min_confidence: self.settings.min_confidence,
        };
        self.rules.answer(signature, runbooks, &mut ranked);
        if let Some(lesson) = lessons.and_then(|l| l.get(signature))
            && let Some(ord) = runbooks
                .iter()
                .position(|r| r.id.as_str() == lesson.runbook)
        {
            ranked.push(
                ord,
                TAUGHT_SCORE,
                1.0,
                MatchReason::Taught {
                    author: lesson.author.clone(),
                    ticket: lesson.ticket.clone(),
                    date: lesson.date(),
                    feedback: lesson.feedback,
                },
            );
        }

        if ranked.candidates.len() < top_k {
            let hits = self.fused_text(signature, top_k.max(2) + 1)?;
            let scores: Vec<f32> = hits.iter().map(|h| h.score).collect();
            // A winner that does not stand clear of the runner-up is a coin toss between
            // them, however well both fit; and a winner the words alone would not have
            // chosen is the two signals disagreeing. No text answer is confident then.
            let clear = match (scores.first(), scores.get(1)) {
                (Some(best), Some(next)) if *best > 0.0 => (best - next) / best >= MIN_MARGIN,
                _ => true,
            };
            let agreed = hits.first().is_none_or(|h| h.lexical_rank == 0);
            let ceiling = if clear && agreed {
                1.0
            } else {
                (self.settings.min_confidence - 0.01).max(0.0)
            };
            for (i, fused) in hits.into_iter().enumerate() {
                // Only the winner can stand clear of a runner-up.
                let margin = match (i, scores.get(1)) {
                    (0, Some(next)) if fused.score > 0.0 => (fused.score - next) / fused.score,
                    (0, None) => 1.0,
                    _ => 0.0,
                };
                let confidence = text_confidence(&fused.hit, margin).min(ceiling);
                ranked.push(
                    fused.hit.ord,
                    fused.score,
                    confidence,
                    MatchReason::FullText {
                        terms: fused.hit.terms,
                        similarity: fused.similarity,
                        lexical_rank: fused.similarity.map(|_| fused.lexical_rank + 1),
                    },
                );
            }
        }

        ranked.candidates.truncate(top_k);
        Ok(Decision {
            candidates: ranked.candidates,
            index_version: self.index.version().to_string(),
        })
    }
}

/// Taught answers rank below the corpus's explicit rules (`rules::RULE_SCORE`) and above
/// any text score.
const TAUGHT_SCORE: f32 = 250.0;

/// How far (a share of its score) the best text answer must stand above the runner-up to be
/// confident. Chosen with `runlink eval` on both development corpora, where it halves the
/// confident wrong answers of each (bench/HISTORY.md).
const MIN_MARGIN: f32 = 0.08;
