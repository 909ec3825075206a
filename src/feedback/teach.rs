//! Acting on a command: find the ticket and the decision it answers, record the command,
//! refresh the lessons, and acknowledge it without noise. An unknown runbook in `/runlink
//! use` is the one case that earns a reply, naming the closest ids.

use std::collections::HashSet;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{Ack, Command, CommentCommand, Feedback, FeedbackKind, LessonBook};
use crate::audit::AuditEvent;
use crate::deliver::github::GithubDestination;
use crate::metrics::Metrics;
use crate::outbox::{AuditQuery, NewDelivery, Store, StoreError, now_ms};
use crate::pipeline::MatcherHandle;
use crate::render::MarkerKey;
use crate::runbooks::Runbook;
use crate::signature::{AlarmSignature, Normalizer};
use crate::ticket::{ReplyTarget, TicketId};

#[derive(Debug, thiserror::Error)]
pub enum TeachError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What became of a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Taught {
    Recorded {
        id: i64,
        kind: FeedbackKind,
    },
    /// The same comment event was recorded before.
    Duplicate,
    /// Not recorded: `use` named no runbook of the corpus.
    UnknownRunbook {
        runbook: String,
        closest: Vec<String>,
        /// Whether a reply naming the closest ids was queued.
        replied: bool,
    },
}

/// How many ids an unknown-runbook reply offers.
const CLOSEST: usize = 3;

#[derive(Debug)]
pub struct Teacher {
    pub store: Arc<dyn Store>,
    pub matcher: Arc<MatcherHandle>,
    pub normalizer: Normalizer,
    pub book: Arc<LessonBook>,
    pub metrics: Arc<Metrics>,
    pub marker: MarkerKey,
    /// Destinations configured to post, for replies.
    pub destinations: HashSet<String>,
    /// For reactions on GitHub comments, when GitHub is a destination.
    pub github: Option<Arc<GithubDestination>>,
}

/// The first runbook of the ticket's latest decision: its id, whether it was confident,
/// whether it was taught, and the index that decided.
#[derive(Debug, Default)]
struct Answered {
    runbook: Option<String>,
    confident: bool,
    taught: bool,
    index_version: String,
}

impl Teacher {
    #[tracing::instrument(skip_all, fields(ticket = %command.ticket, delivery = %command.delivery))]
    pub async fn receive(&self, command: CommentCommand) -> Result<Taught, TeachError> {
        let stored = self.store.ticket(&command.ticket).await?;
        let ticket = stored
            .map(|s| s.ticket)
            .or_else(|| command.described.as_deref().cloned());
        let signature = ticket
            .as_ref()
            .map(|t| AlarmSignature::of(t, &self.normalizer));
        let answered = self.answered(&command.ticket).await?;
        let matcher = self.matcher.current();
        let runbook = match &command.command {
            Command::Use(wanted) => match resolve(matcher.index().runbooks(), wanted) {
                Some(runbook) => Some(runbook.id.to_string()),
                None => {
                    let closest = closest(matcher.index().runbooks(), wanted);
                    let replied = self
                        .reply_unknown(&command, wanted, &closest)
                        .await
                        .unwrap_or_else(|error| {
                            tracing::warn!(%error, "reply to an unknown runbook not queued");
                            false
                        });
                    self.count("refused");
                    self.react(&command.ack, "confused");
                    return Ok(Taught::UnknownRunbook {
                        runbook: wanted.clone(),
                        closest,
                        replied,
                    });
                }
            },
            _ => None,
        };
        let kind = command.command.kind();
        let feedback = Feedback {
            at_ms: now_ms(),
            source: command.source.to_string(),
            delivery: command.delivery.to_string(),
            ticket: command.ticket.to_string(),
            author: command.author.clone(),
            kind,
            runbook,
            lesson_key: signature.as_ref().map(super::lesson_key),
            signature: signature
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
            alertname: signature.as_ref().and_then(|s| s.alertname.clone()),
            answered: answered.runbook,
            answered_confident: answered.confident,
            answered_taught: answered.taught,
            index_version: if answered.index_version.is_empty() {
                matcher.index().version().to_string()
            } else {
                answered.index_version
            },
        };
        let Some(id) = self.store.record_feedback(&feedback).await? else {
            return Ok(Taught::Duplicate);
        };
        tracing::info!(id, kind = kind.as_str(), author = %feedback.author, "feedback recorded");
        self.count(kind.as_str());
        self.refresh().await?;
        self.react(&command.ack, "+1");
        Ok(Taught::Recorded { id, kind })
    }

    /// Rebuilds the lessons from the feedback table (another replica, or `runlink feedback
    /// forget`, may have changed it).
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let rows = self.store.feedback_since(0).await?;
        self.book.replace(&rows);
        Ok(())
    }

    fn count(&self, kind: &str) {
        self.metrics
            .feedback
            .get_or_create(&crate::metrics::Kind {
                kind: kind.to_string(),
            })
            .inc();
    }

    async fn answered(&self, ticket: &TicketId) -> Result<Answered, StoreError> {
        let records = self
            .store
            .audit_log(AuditQuery {
                ticket: Some(ticket.to_string()),
                since_ms: None,
                limit: None,
            })
            .await?;
        let decided = records.into_iter().rev().find_map(|r| match r.event {
            AuditEvent::Decided {
                candidates,
                index_version,
                ..
            } => Some((candidates, index_version)),
            _ => None,
        });
        Ok(match decided {
            Some((candidates, index_version)) => {
                let first = candidates.first();
                Answered {
                    runbook: first.map(|c| c.runbook.clone()),
                    confident: first.is_some_and(|c| c.confident),
                    taught: first.is_some_and(|c| c.reason.starts_with("taught")),
                    index_version,
                }
            }
            None => Answered::default(),
        })
    }

    /// Queues a short reply naming the closest runbook ids, where the ticket can be replied
    /// to; `false` when it cannot.
    async fn reply_unknown(
        &self,
        command: &CommentCommand,
        wanted: &str,
        closest: &[String],
    ) -> Result<bool, StoreError> {
        let event = AuditEvent::FeedbackRefused {
            author: command.author.clone(),
            reason: format!("no runbook `{wanted}`"),
        };
        let Some(target) = command
            .reply
            .clone()
            .filter(|t| self.destinations.contains(&t.destination()))
        else {
            self.store.record(Some(&command.ticket), event).await?;
            return Ok(false);
        };
        let key = reply_key(command);
        let mut body = format!("runlink has no runbook `{wanted}`.");
        if !closest.is_empty() {
            let ids: Vec<String> = closest.iter().map(|id| format!("`{id}`")).collect();
            body.push_str(&format!(" Closest: {}.", ids.join(", ")));
        }
        body.push_str(&format!("\n\n{}", self.marker_for(&target, &key)));
        let queued = self
            .store
            .enqueue_reply(
                &command.ticket,
                NewDelivery {
                    delivery_key: key,
                    destination: target.destination(),
                    summary: format!("{}: reply to /runlink use {wanted}", command.ticket),
                    target,
                    body,
                },
                event,
            )
            .await?;
        if queued {
            self.metrics.add_pending(1);
        }
        Ok(queued)
    }

    /// The marker as the destination's own comments carry it: hidden in Markdown, a
    /// reference line in plain-text notes, nothing where it travels beside the text (Jira).
    fn marker_for(&self, target: &ReplyTarget, key: &str) -> String {
        match target {
            ReplyTarget::GithubIssue { .. } | ReplyTarget::Generic { .. } => self.marker.html(key),
            ReplyTarget::JiraIssue { .. } => String::new(),
            _ => format!("ref {}", self.marker.token(key)),
        }
    }

    /// A reaction, sent in the background: it is a courtesy, never worth failing a command
    /// over.
    fn react(&self, ack: &Option<Ack>, content: &'static str) {
        let (
            Some(Ack::GithubReaction {
                owner,
                repo,
                comment_id,
            }),
            Some(github),
        ) = (ack.clone(), self.github.clone())
        else {
            return;
        };
        tokio::spawn(async move {
            if let Err(error) = github.react(&owner, &repo, comment_id, content).await {
                tracing::warn!(%error, comment_id, "reaction not posted");
            }
        });
    }
}

/// The delivery key of a reply: one per comment event, so a retried event queues it once.
fn reply_key(command: &CommentCommand) -> String {
    let mut hash = Sha256::new();
    for part in [
        "feedback-reply",
        command.source.as_str(),
        command.delivery.as_str(),
    ] {
        hash.update(part.as_bytes());
        hash.update([0u8]);
    }
    hex::encode(&hash.finalize()[..16])
}

/// The runbook `wanted` names: its id (any case, `.md` optional) or its URL.
pub fn resolve<'a>(runbooks: &'a [Arc<Runbook>], wanted: &str) -> Option<&'a Arc<Runbook>> {
    let wanted = wanted.trim();
    let bare = |s: &str| s.trim_end_matches('/').to_string();
    runbooks
        .iter()
        .find(|r| r.id.as_str() == wanted)
        .or_else(|| {
            runbooks.iter().find(|r| {
                let id = r.id.as_str();
                id.eq_ignore_ascii_case(wanted)
                    || id.eq_ignore_ascii_case(&format!("{wanted}.md"))
                    || (wanted.contains('#')
                        && id.eq_ignore_ascii_case(&wanted.replacen('#', ".md#", 1)))
            })
        })
        .or_else(|| {
            runbooks
                .iter()
                .find(|r| bare(r.url.as_str()) == bare(wanted))
        })
}

/// The ids nearest to `wanted` by edit distance, nearest first.
pub fn closest(runbooks: &[Arc<Runbook>], wanted: &str) -> Vec<String> {
    let wanted = wanted.to_lowercase();
    let mut scored: Vec<(usize, &str)> = runbooks
        .iter()
        .map(|r| {
            let id = r.id.as_str();
            let lower = id.to_lowercase();
            // A bare name is compared with the file name, a path with the path.
            let against = if wanted.contains('/') {
                lower.as_str()
            } else {
                lower.rsplit('/').next().unwrap_or(&lower)
            };
            (crate::did_you_mean::levenshtein(&wanted, against), id)
        })
        .collect();
    scored.sort();
    scored
        .into_iter()
        .take(CLOSEST)
        .map(|(_, id)| id.to_string())
        .collect()
}
