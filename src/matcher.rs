//! Decides which runbooks answer an alarm. Explicit rules come first and always win: an exact
//! alarm name (front matter `alarms`, else the H1 or file stem), then a `match` regex. Only
//! then the full-text ranking, whose best hit is posted as a link only when it is confident;
//! below that, runlink says it found nothing rather than sending an operator down a wrong path.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use crate::runbooks::Runbook;
use crate::search::{RunbookIndex, SearchError};
use crate::signature::AlarmSignature;

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MatchReason {
    /// The alert name equals one of the runbook's alarm names.
    Alarm { name: String },
    /// A front-matter `match` regex matched the signature.
    Rule { pattern: String },
    /// Ranked full-text search; `terms` are the query terms the runbook contains.
    FullText { terms: Vec<String> },
}

impl MatchReason {
    pub fn describe(&self) -> String {
        match self {
            MatchReason::Alarm { name } => format!("alert name `{name}` is listed by this runbook"),
            MatchReason::Rule { pattern } => format!("match rule `{pattern}`"),
            MatchReason::FullText { terms } => {
                let shown: Vec<_> = terms.iter().take(6).map(String::as_str).collect();
                format!("text search on: {}", shown.join(", "))
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
    by_alarm: HashMap<String, Vec<usize>>,
    /// Every `match` rule of the corpus in one automaton: one pass over the ticket finds all
    /// rules that fire, however many runbooks there are.
    rules: regex::RegexSet,
    /// For each rule of the set: the runbook and the rule as written.
    rule_owners: Vec<(usize, String)>,
    settings: MatcherSettings,
}

/// Candidates in rank order, each runbook at most once (its best reason wins).
struct Ranked<'a> {
    runbooks: &'a [Arc<Runbook>],
    candidates: Vec<Candidate>,
    taken: Vec<bool>,
    min_confidence: f32,
}

impl Ranked<'_> {
    fn push(&mut self, ord: usize, score: f32, confidence: f32, reason: MatchReason) {
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

/// Explicit matches are ranked above any text score.
const ALARM_SCORE: f32 = 1000.0;
const RULE_SCORE: f32 = 500.0;

impl Matcher {
    pub fn new(index: Arc<RunbookIndex>, settings: MatcherSettings) -> Self {
        let mut by_alarm: HashMap<String, Vec<usize>> = HashMap::new();
        for (ord, runbook) in index.runbooks().iter().enumerate() {
            for alarm in &runbook.alarms {
                let list = by_alarm.entry(alarm.to_lowercase()).or_default();
                if !list.contains(&ord) {
                    list.push(ord);
                }
            }
        }
        let mut patterns = Vec::new();
        let mut rule_owners = Vec::new();
        for (ord, runbook) in index.runbooks().iter().enumerate() {
            for rule in &runbook.match_rules {
                patterns.push(rule.regex.as_str().to_string());
                rule_owners.push((ord, rule.pattern.clone()));
            }
        }
        // Each pattern already compiled on its own when the runbook loaded; the set can only
        // fail on size limits, and then rules are matched one by one instead.
        let rules = regex::RegexSet::new(&patterns).unwrap_or_else(|error| {
            tracing::warn!(%error, "match rules too large for one set");
            regex::RegexSet::empty()
        });
        Matcher {
            index,
            by_alarm,
            rules,
            rule_owners,
            settings,
        }
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
        let runbooks = self.index.runbooks();
        let mut ranked = Ranked {
            runbooks,
            candidates: Vec::new(),
            taken: vec![false; runbooks.len()],
            min_confidence: self.settings.min_confidence,
        };
        if let Some(name) = &signature.alertname
            && let Some(ords) = self.by_alarm.get(&name.to_lowercase())
        {
            for &ord in ords {
                ranked.push(
                    ord,
                    ALARM_SCORE,
                    1.0,
                    MatchReason::Alarm { name: name.clone() },
                );
            }
        }

        let rule_subject = format!(
            "{}\n{}",
            signature.alertname.as_deref().unwrap_or(""),
            signature.text
        );
        let fired: Vec<usize> = if self.rules.len() == self.rule_owners.len() {
            self.rules.matches(&rule_subject).into_iter().collect()
        } else {
            runbooks
                .iter()
                .flat_map(|r| &r.match_rules)
                .enumerate()
                .filter(|(_, rule)| rule.regex.is_match(&rule_subject))
                .map(|(i, _)| i)
                .collect()
        };
        for i in fired {
            let (ord, pattern) = &self.rule_owners[i];
            ranked.push(
                *ord,
                RULE_SCORE,
                1.0,
                MatchReason::Rule {
                    pattern: pattern.clone(),
                },
            );
        }

        if ranked.candidates.len() < top_k {
            let hits = self.rank_text(signature, top_k.max(2) + 1)?;
            let scores: Vec<f32> = hits.iter().map(|h| h.score).collect();
            for (i, hit) in hits.into_iter().enumerate() {
                // Only the winner can stand clear of a runner-up.
                let margin = match (i, scores.get(1)) {
                    (0, Some(next)) if hit.score > 0.0 => (hit.score - next) / hit.score,
                    (0, None) => 1.0,
                    _ => 0.0,
                };
                let confidence = text_confidence(&hit, margin);
                ranked.push(
                    hit.ord,
                    hit.score,
                    confidence,
                    MatchReason::FullText { terms: hit.terms },
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
/// (`matcher.min_confidence`) were fitted with `runlink eval` so that 95 % of right answers
/// on the development sets are confident; see README for the figures.
fn text_confidence(hit: &TextHit, margin: f32) -> f32 {
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
        let hits = index.search(&weighted, pool)?;
        let Some(best) = hits.first().map(|h| h.score).filter(|s| *s > 0.0) else {
            return Ok(Vec::new());
        };
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
        out.truncate(limit);
        Ok(out)
    }
}

/// The most query terms a text search uses (by idf).
const MAX_QUERY_TERMS: usize = 24;
/// How many BM25 hits the re-ranker looks at.
const RERANK_POOL: usize = 10;
/// Re-ranking weights, set by `runlink eval` on the development sets (see README): the
/// runbook's name words found in the ticket separate siblings best; coverage of the
/// ticket's words breaks ties between runbooks that share a name shape.
const NAME_WEIGHT: f32 = 1.0;
const COVERAGE_WEIGHT: f32 = 0.5;
/// Metric-name words from the alert query: supporting evidence, weaker than the text.
const METRIC_WEIGHT: f32 = 0.3;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::Normalizer;
    use std::path::Path;
    use url::Url;

    fn matcher(docs: &[(&str, &str)]) -> Matcher {
        let base = Url::parse("https://x.example/").unwrap();
        let runbooks = docs
            .iter()
            .map(|(p, s)| Runbook::parse(Path::new(p), s, &base).unwrap())
            .collect();
        Matcher::new(
            Arc::new(RunbookIndex::build(runbooks).unwrap()),
            MatcherSettings {
                top_k: 3,
                min_confidence: 0.5,
            },
        )
    }

    fn signature(title: &str, alertname: Option<&str>) -> AlarmSignature {
        let ticket = crate::ingest::manual::ManualTicket {
            title: title.into(),
            alertname: alertname.map(str::to_string),
            ..Default::default()
        }
        .into_ticket(0);
        AlarmSignature::of(&ticket, &Normalizer::default())
    }

    const DOCS: &[(&str, &str)] = &[
        (
            "disk.md",
            "---\nalarms: [HostOutOfDiskSpace]\n---\n# Disk space\n\n## Meaning\n\nA filesystem is almost full of data.\n",
        ),
        (
            "cpu.md",
            "---\nmatch: ['cpu (usage|load) (is )?high']\n---\n# High CPU\n\n## Meaning\n\nProcessor saturation.\n",
        ),
        (
            "KubePodCrashLooping.md",
            "# KubePodCrashLooping\n\n## Meaning\n\nA pod container keeps restarting.\n",
        ),
    ];

    #[test]
    fn exact_alarm_name_beats_everything_case_insensitively() {
        let m = matcher(DOCS);
        let d = m
            .decide(&signature("x", Some("hostoutofdiskspace")), 3)
            .unwrap();
        assert_eq!(d.candidates[0].runbook.id.as_str(), "disk.md");
        assert!(d.is_confident());
        assert!(matches!(d.candidates[0].reason, MatchReason::Alarm { .. }));
    }

    #[test]
    fn file_stem_is_an_alarm_name() {
        let m = matcher(DOCS);
        let d = m
            .decide(&signature("[FIRING:1] KubePodCrashLooping", None), 3)
            .unwrap();
        assert_eq!(
            d.candidates[0].runbook.id.as_str(),
            "KubePodCrashLooping.md"
        );
    }

    #[test]
    fn match_rule_fires_on_the_text() {
        let m = matcher(DOCS);
        let d = m
            .decide(&signature("CPU load is high on web-1", None), 3)
            .unwrap();
        assert_eq!(d.candidates[0].runbook.id.as_str(), "cpu.md");
        assert!(matches!(d.candidates[0].reason, MatchReason::Rule { .. }));
    }

    #[test]
    fn full_text_finds_the_runbook_by_description() {
        let m = matcher(DOCS);
        let d = m
            .decide(&signature("container keeps restarting in pod", None), 3)
            .unwrap();
        assert_eq!(
            d.candidates[0].runbook.id.as_str(),
            "KubePodCrashLooping.md"
        );
        assert!(d.is_confident(), "{:?}", d.candidates[0].confidence);
    }

    #[test]
    fn unrelated_text_is_not_confident() {
        let m = matcher(DOCS);
        let d = m
            .decide(
                &signature("payment gateway returns invoices twice", None),
                3,
            )
            .unwrap();
        assert!(!d.is_confident());
    }

    /// Sibling runbooks that plain BM25 confuses: the same words, a different condition.
    const SIBLINGS: &[(&str, &str)] = &[
        (
            "node/NodeFilesystemSpaceFillingUp.md",
            "# NodeFilesystemSpaceFillingUp\n\n## Meaning\n\nThe free disk space of a filesystem is predicted to run out within hours, extrapolated from its recent usage trend.\n\n## Diagnosis\n\nCheck which directories grow with du.\n",
        ),
        (
            "node/NodeFilesystemAlmostOutOfSpace.md",
            "# NodeFilesystemAlmostOutOfSpace\n\n## Meaning\n\nA filesystem has less than a few percent of its space left.\n\n## Diagnosis\n\nFree space now: remove old logs and images.\n",
        ),
        (
            "node/NodeFilesystemFilesFillingUp.md",
            "# NodeFilesystemFilesFillingUp\n\n## Meaning\n\nThe free inodes of a filesystem are predicted to run out within hours.\n\n## Diagnosis\n\nFind directories with many small files.\n",
        ),
        (
            "node/NodeFilesystemAlmostOutOfFiles.md",
            "# NodeFilesystemAlmostOutOfFiles\n\n## Meaning\n\nA filesystem has less than a few percent of its inodes left; new files cannot be created.\n\n## Diagnosis\n\nDelete stale small files.\n",
        ),
        (
            "kubernetes/KubeAPIDown.md",
            "# KubeAPIDown\n\n## Meaning\n\nThe Kubernetes API server target disappeared from Prometheus target discovery.\n",
        ),
        (
            "kubernetes/KubeSchedulerDown.md",
            "# KubeSchedulerDown\n\n## Meaning\n\nThe Kubernetes scheduler target disappeared from Prometheus target discovery; new pods are not scheduled.\n",
        ),
        (
            "kubernetes/KubeControllerManagerDown.md",
            "# KubeControllerManagerDown\n\n## Meaning\n\nThe Kubernetes controller manager target disappeared from Prometheus target discovery.\n",
        ),
        (
            "kubernetes/KubeDeploymentReplicasMismatch.md",
            "# KubeDeploymentReplicasMismatch\n\n## Meaning\n\nA deployment has not matched the expected number of replicas for a while.\n",
        ),
        (
            "kubernetes/KubeStatefulSetReplicasMismatch.md",
            "# KubeStatefulSetReplicasMismatch\n\n## Meaning\n\nA StatefulSet has not matched the expected number of replicas for a while.\n",
        ),
        (
            "kubernetes/KubeHpaReplicasMismatch.md",
            "# KubeHpaReplicasMismatch\n\n## Meaning\n\nA horizontal pod autoscaler has not matched the desired number of replicas.\n",
        ),
    ];

    fn best(m: &Matcher, title: &str) -> String {
        let d = m.decide(&signature(title, None), 3).unwrap();
        d.candidates[0].runbook.id.to_string()
    }

    #[test]
    fn inodes_are_not_space() {
        let m = matcher(SIBLINGS);
        let got = best(&m, "Inodes exhausted on build agent");
        assert!(got.contains("Files"), "{got}");
        let got = best(&m, "Filesystem on db-3 has less than 4% space left");
        assert_eq!(got, "node/NodeFilesystemAlmostOutOfSpace.md");
    }

    #[test]
    fn filling_up_is_not_almost_out() {
        let m = matcher(SIBLINGS);
        assert_eq!(
            best(&m, "Disk on logs-1 will fill up within 4 hours"),
            "node/NodeFilesystemSpaceFillingUp.md"
        );
        assert_eq!(
            best(&m, "Filesystem on web-2 has less than 3% inodes left"),
            "node/NodeFilesystemAlmostOutOfFiles.md"
        );
    }

    #[test]
    fn down_family_is_told_apart_by_the_component() {
        let m = matcher(SIBLINGS);
        assert_eq!(
            best(&m, "Kube scheduler has disappeared from target discovery"),
            "kubernetes/KubeSchedulerDown.md"
        );
        assert_eq!(
            best(
                &m,
                "KubeControllerManager has disappeared from Prometheus target discovery"
            ),
            "kubernetes/KubeControllerManagerDown.md"
        );
    }

    #[test]
    fn replicas_mismatch_family_is_told_apart_by_the_workload() {
        let m = matcher(SIBLINGS);
        assert_eq!(
            best(
                &m,
                "StatefulSet shop/web has not matched the expected number of replicas"
            ),
            "kubernetes/KubeStatefulSetReplicasMismatch.md"
        );
        assert_eq!(
            best(
                &m,
                "HPA shop/api has not matched the desired number of replicas"
            ),
            "kubernetes/KubeHpaReplicasMismatch.md"
        );
    }
}
