//! The audit log: every ticket received, every decision and every delivery attempt, as typed
//! events. They are written by the store in the same transaction as the state change they
//! describe, so the log never claims something that did not happen, nor misses what did.

use serde::{Deserialize, Serialize};

use crate::matcher::{Decision, MatchReason};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditCandidate {
    pub runbook: String,
    pub score: f32,
    pub confidence: f32,
    pub confident: bool,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditEvent {
    Received {
        source: String,
        delivery: String,
        title: String,
    },
    DuplicateDelivery {
        source: String,
        delivery: String,
    },
    Ignored {
        source: String,
        reason: String,
    },
    /// A resolved alert: recorded, not enriched.
    Resolved {
        source: String,
        alertname: String,
    },
    Decided {
        signature: String,
        confident: bool,
        candidates: Vec<AuditCandidate>,
        /// The runbook index the decision was made with.
        #[serde(default)]
        index_version: String,
        /// A synthetic ticket (`runlink canary probe`): left out of coverage and reports.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        probe: bool,
    },
    /// The runbook corpus was reloaded, or a reload was refused.
    Reloaded {
        version: String,
        runbooks: usize,
        trigger: String,
    },
    ReloadRefused {
        trigger: String,
        reason: String,
    },
    Enqueued {
        delivery_key: String,
        destination: String,
    },
    AlreadyEnriched {
        delivery_key: String,
    },
    NotEnqueued {
        reason: String,
    },
    /// Not posted as a comment of its own: its reply target had its comments. `into` is the
    /// delivery whose comment lists it; without one, the target's last comment was already
    /// posted and this alert is recorded here only.
    Folded {
        delivery_key: String,
        destination: String,
        into: Option<String>,
        reason: String,
    },
    /// An operator's `/runlink` command about the ticket's answer.
    Feedback {
        kind: crate::feedback::FeedbackKind,
        author: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        runbook: Option<String>,
        /// The first runbook of the decision it answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        answered: Option<String>,
        #[serde(default)]
        index_version: String,
        /// The feedback row.
        id: i64,
    },
    /// A command runlink could not act on (an unknown runbook), and what it replied.
    FeedbackRefused {
        author: String,
        reason: String,
    },
    /// `runlink feedback forget`: the row no longer counts.
    FeedbackForgotten {
        id: i64,
    },
    /// A reloaded corpus went into shadow beside the live one (`runbooks.canary`).
    CanaryStarted {
        version: String,
        live_version: String,
        runbooks: usize,
        trigger: String,
    },
    /// The candidate became the live index; `by` is `automatic`, an admin, or another
    /// replica.
    CanaryPromoted {
        version: String,
        seen: u64,
        changed: u64,
        by: String,
    },
    /// The candidate was dropped; the live index never changed.
    CanaryAborted {
        version: String,
        seen: u64,
        changed: u64,
        by: String,
    },
    DeliveryAttempt {
        delivery_key: String,
        destination: String,
        attempt: u32,
        outcome: AttemptOutcome,
        status: Option<u16>,
        detail: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Delivered,
    Retry,
    Dead,
}

impl AttemptOutcome {
    /// The word in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::Retry => "retry",
            AttemptOutcome::Dead => "dead",
        }
    }
}

impl AuditEvent {
    pub fn kind(&self) -> &'static str {
        match self {
            AuditEvent::Received { .. } => "received",
            AuditEvent::DuplicateDelivery { .. } => "duplicate_delivery",
            AuditEvent::Ignored { .. } => "ignored",
            AuditEvent::Resolved { .. } => "resolved",
            AuditEvent::Decided { .. } => "decided",
            AuditEvent::Reloaded { .. } => "reloaded",
            AuditEvent::ReloadRefused { .. } => "reload_refused",
            AuditEvent::Enqueued { .. } => "enqueued",
            AuditEvent::AlreadyEnriched { .. } => "already_enriched",
            AuditEvent::NotEnqueued { .. } => "not_enqueued",
            AuditEvent::Folded { .. } => "folded",
            AuditEvent::DeliveryAttempt { .. } => "delivery_attempt",
            AuditEvent::Feedback { .. } => "feedback",
            AuditEvent::CanaryStarted { .. } => "canary_started",
            AuditEvent::CanaryPromoted { .. } => "canary_promoted",
            AuditEvent::CanaryAborted { .. } => "canary_aborted",
            AuditEvent::FeedbackRefused { .. } => "feedback_refused",
            AuditEvent::FeedbackForgotten { .. } => "feedback_forgotten",
        }
    }

    /// One line for people: `runlink audit` and the console print it.
    pub fn describe(&self) -> String {
        match self {
            AuditEvent::Received { source, title, .. } => {
                format!("received from {source}: {title}")
            }
            AuditEvent::DuplicateDelivery { delivery, .. } => {
                format!("duplicate delivery {delivery}")
            }
            AuditEvent::Ignored { reason, .. } => format!("ignored: {reason}"),
            AuditEvent::Resolved { alertname, .. } => format!("resolved: {alertname}"),
            AuditEvent::Reloaded {
                version,
                runbooks,
                trigger,
            } => format!("runbooks reloaded ({trigger}): {runbooks} runbooks, index {version}"),
            AuditEvent::ReloadRefused { trigger, reason } => {
                format!("runbook reload refused ({trigger}): {reason}")
            }
            AuditEvent::Decided {
                signature,
                confident,
                candidates,
                index_version,
                ..
            } => format!(
                "decided {}: {} [{signature}] (index {index_version})",
                if *confident {
                    "confidently"
                } else {
                    "without confidence"
                },
                candidates
                    .iter()
                    .map(|c| format!("{} ({:.2})", c.runbook, c.confidence))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            AuditEvent::Enqueued { destination, .. } => format!("queued for {destination}"),
            AuditEvent::AlreadyEnriched { .. } => "already enriched".into(),
            AuditEvent::NotEnqueued { reason } => format!("not queued: {reason}"),
            AuditEvent::Folded {
                into: Some(into),
                destination,
                ..
            } => format!("listed in the {destination} comment of delivery {into}"),
            AuditEvent::Folded {
                into: None, reason, ..
            } => format!("not posted: {reason}"),
            AuditEvent::Feedback {
                kind,
                author,
                runbook,
                answered,
                id,
                ..
            } => format!(
                "feedback #{id} from {author}: {}{} (answer was {})",
                kind.as_str(),
                runbook
                    .as_deref()
                    .map(|r| format!(" {r}"))
                    .unwrap_or_default(),
                answered.as_deref().unwrap_or("none")
            ),
            AuditEvent::FeedbackRefused { author, reason } => {
                format!("feedback from {author} refused: {reason}")
            }
            AuditEvent::FeedbackForgotten { id } => format!("feedback #{id} forgotten"),
            AuditEvent::CanaryStarted {
                version,
                live_version,
                runbooks,
                trigger,
            } => format!(
                "runbook index {version} ({runbooks} runbooks, {trigger}) in shadow beside {live_version}"
            ),
            AuditEvent::CanaryPromoted {
                version,
                seen,
                changed,
                by,
            } => format!(
                "runbook index {version} promoted ({by}): {changed} of {seen} decisions changed"
            ),
            AuditEvent::CanaryAborted {
                version,
                seen,
                changed,
                by,
            } => {
                format!(
                    "runbook index {version} aborted ({by}): {changed} of {seen} decisions changed"
                )
            }
            AuditEvent::DeliveryAttempt {
                attempt,
                outcome,
                status,
                detail,
                ..
            } => format!(
                "delivery attempt {attempt}: {outcome:?}{}{}",
                status.map(|s| format!(" HTTP {s}")).unwrap_or_default(),
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({detail})")
                }
            ),
        }
    }

    pub fn decided(signature: String, decision: &Decision) -> Self {
        AuditEvent::Decided {
            probe: false,
            index_version: decision.index_version.clone(),
            signature,
            confident: decision.is_confident(),
            candidates: decision
                .candidates
                .iter()
                .map(|c| AuditCandidate {
                    runbook: c.runbook.id.to_string(),
                    score: c.score,
                    confidence: c.confidence,
                    confident: c.confident,
                    reason: match &c.reason {
                        MatchReason::Alarm { .. } => "alarm".into(),
                        MatchReason::Rule { pattern } => format!("rule:{pattern}"),
                        MatchReason::Taught { feedback, .. } => format!("taught:{feedback}"),
                        MatchReason::FullText { .. } => "full_text".into(),
                    },
                })
                .collect(),
        }
    }
}

/// One row of the audit log as read back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    pub at_ms: i64,
    pub ticket: Option<String>,
    #[serde(flatten)]
    pub event: AuditEvent,
}
