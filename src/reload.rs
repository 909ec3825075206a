//! Hot reload of the runbook corpus without a restart and without dropping a request. A new
//! index is built beside the one serving and swapped in whole; a corpus with lint errors is
//! refused and the old index keeps serving. Triggers: a change on disk (polled and debounced,
//! so it works on every filesystem and needs no watcher API), SIGHUP, and
//! `POST /admin/reload`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use crate::audit::AuditEvent;
use crate::matcher::{Matcher, MatcherSettings};
use crate::metrics::Metrics;
use crate::outbox::Store;
use crate::pipeline::MatcherHandle;
use crate::runbooks::lint::{Severity, lint};
use crate::runbooks::{Corpus, CorpusError};
use crate::search::{RunbookIndex, SearchError};
use crate::semantic::SemanticSetup;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReloadError {
    #[error(transparent)]
    Corpus(#[from] CorpusError),
    #[error("refused: {} lint error(s), first: {}", findings.len(), findings.first().map(String::as_str).unwrap_or(""))]
    Lint { findings: Vec<String> },
    #[error(transparent)]
    Search(#[from] SearchError),
    #[error("reload task failed: {0}")]
    Join(String),
    #[error("canary: {0}")]
    Canary(String),
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ReloadReport {
    pub version: String,
    pub runbooks: usize,
    pub warnings: usize,
    pub changed: bool,
    /// With `runbooks.canary`: what became of a changed corpus (in shadow, or decided by
    /// the replicas before). Without it a changed corpus is live at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::canary::Rollout>,
}

#[derive(Debug)]
pub(crate) struct Reloader {
    pub dir: PathBuf,
    pub base_url: url::Url,
    pub settings: MatcherSettings,
    pub matcher: Arc<MatcherHandle>,
    /// The model, when loaded: a reloaded corpus is embedded too (from the cache, but for
    /// the runbooks that changed).
    pub semantic: Option<SemanticSetup>,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    /// One reload at a time: two triggers at once must not race their swaps.
    pub running: tokio::sync::Mutex<()>,
    /// Set when `runbooks.canary` is on: a changed corpus goes into shadow first.
    pub canary: Option<Arc<crate::canary::Canary>>,
}

fn build(
    dir: &Path,
    base_url: &url::Url,
    settings: MatcherSettings,
    semantic: Option<&SemanticSetup>,
) -> Result<(Matcher, usize), ReloadError> {
    let corpus = Corpus::load(dir, base_url)?;
    let findings = lint(&corpus);
    let errors: Vec<String> = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| f.to_string())
        .collect();
    if !errors.is_empty() {
        return Err(ReloadError::Lint { findings: errors });
    }
    let warnings = findings.len();
    let index = RunbookIndex::build(corpus.runbooks)?;
    Ok((
        crate::wiring::matcher_over(index, settings, semantic, dir),
        warnings,
    ))
}

impl Reloader {
    pub(crate) async fn reload(&self, trigger: &str) -> Result<ReloadReport, ReloadError> {
        let _one_at_a_time = self.running.lock().await;
        let (dir, base, settings, semantic) = (
            self.dir.clone(),
            self.base_url.clone(),
            self.settings.clone(),
            self.semantic.clone(),
        );
        let built =
            tokio::task::spawn_blocking(move || build(&dir, &base, settings, semantic.as_ref()))
                .await
                .map_err(|e| ReloadError::Join(e.to_string()))?;
        let outcome = match built {
            Ok((matcher, warnings)) => {
                let mut report = ReloadReport {
                    version: matcher.index().version().to_string(),
                    runbooks: matcher.index().len(),
                    warnings,
                    changed: matcher.index().version() != self.matcher.current().index().version(),
                    rollout: None,
                };
                let in_shadow = self
                    .canary
                    .as_ref()
                    .and_then(|c| c.candidate())
                    .is_some_and(|c| c.index().version() == report.version);
                match &self.canary {
                    Some(canary) if report.changed && !in_shadow => {
                        match canary.start(matcher, trigger).await {
                            Ok(rollout) => report.rollout = Some(rollout),
                            Err(error) => {
                                tracing::error!(%error, "candidate index not started; the live index keeps serving");
                                return Err(ReloadError::Canary(error.to_string()));
                            }
                        }
                    }
                    Some(_) => {}
                    None => self.matcher.swap(matcher),
                }
                tracing::info!(trigger, version = %report.version, runbooks = report.runbooks, "runbook index reloaded");
                let event = AuditEvent::Reloaded {
                    version: report.version.clone(),
                    runbooks: report.runbooks,
                    trigger: trigger.to_string(),
                };
                if let Err(error) = self.store.record(None, event).await {
                    tracing::warn!(%error, "reload not audited");
                }
                Ok(report)
            }
            Err(error) => {
                tracing::error!(trigger, %error, "runbook reload refused; the previous index keeps serving");
                let event = AuditEvent::ReloadRefused {
                    trigger: trigger.to_string(),
                    reason: error.to_string(),
                };
                if let Err(error) = self.store.record(None, event).await {
                    tracing::warn!(%error, "refused reload not audited");
                }
                Err(error)
            }
        };
        self.metrics
            .reloads
            .get_or_create(&crate::metrics::Outcome {
                outcome: if outcome.is_ok() { "ok" } else { "refused" }.to_string(),
            })
            .inc();
        outcome
    }
}

/// A cheap summary of the corpus directory: every file's path, size and modification time.
pub(crate) fn fingerprint(dir: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut entries = Vec::new();
    while let Some(current) = stack.pop() {
        let Ok(read) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in read.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else {
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                entries.push((path, meta.len(), modified));
            }
        }
    }
    entries.sort();
    entries.hash(&mut hasher);
    hasher.finish()
}

/// Polls the corpus; reloads once a change has stayed put for one more interval, so an
/// editor's save or a `git pull` in progress is not loaded half-written.
pub(crate) async fn watch(
    reloader: Arc<Reloader>,
    interval: Duration,
    baseline: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let dir = reloader.dir.clone();
    // Taken before the corpus was first loaded: a change made while the server started is
    // a change, not the baseline.
    let mut seen = baseline;
    let mut pending: Option<u64> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        let dir2 = dir.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || fingerprint(&dir2)).await else {
            continue;
        };
        match pending {
            Some(candidate) if candidate == now => {
                pending = None;
                seen = now;
                let _ = reloader.reload("file change").await;
            }
            _ if now != seen => pending = Some(now),
            _ => pending = None,
        }
    }
}

/// Reloads on SIGHUP, the signal operators expect to mean "re-read your files".
pub(crate) async fn on_sighup(reloader: Arc<Reloader>, mut shutdown: watch::Receiver<bool>) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        tracing::warn!("cannot listen for SIGHUP; reload with POST /admin/reload");
        return;
    };
    loop {
        tokio::select! {
            got = hangups.recv() => {
                if got.is_none() {
                    return;
                }
                let _ = reloader.reload("SIGHUP").await;
            }
            _ = shutdown.changed() => return,
        }
    }
}
