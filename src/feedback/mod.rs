//! What operators say about runlink's answers, from inside their tickets: `/runlink right`,
//! `wrong`, `use <runbook>` and `none` on the first line of a comment. Each command is
//! recorded with who said it, about which ticket and which decision; `use` teaches an answer
//! that later tickets of the same alarm get at once (`Lessons`), until an author turns it
//! into a rule (`runlink suggest`) or someone calls it wrong.

mod command;
mod lessons;
pub mod report;
pub mod suggest;
mod teach;

pub use command::{Command, CommandError, parse_command};
pub use lessons::{Lesson, LessonBook, Lessons, lesson_key};
pub use teach::{Taught, TeachError, Teacher, closest, resolve};

use serde::{Deserialize, Serialize};

use crate::ticket::{DeliveryId, ReplyTarget, SourceKind, Ticket, TicketId};

/// The kinds of feedback, as stored and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackKind {
    Right,
    Wrong,
    Use,
    None,
}

impl FeedbackKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackKind::Right => "right",
            FeedbackKind::Wrong => "wrong",
            FeedbackKind::Use => "use",
            FeedbackKind::None => "none",
        }
    }
}

/// A comment that carries a command, as a source parsed it: which ticket, who wrote it, and
/// what the comment event says about the ticket itself (for a ticket runlink never stored).
#[derive(Debug, Clone)]
pub struct CommentCommand {
    pub source: SourceKind,
    /// The comment event's delivery: a retried event records nothing twice.
    pub delivery: DeliveryId,
    pub ticket: TicketId,
    pub author: String,
    pub command: Command,
    /// The ticket as the comment event describes it, when it carries one.
    pub described: Option<Box<Ticket>>,
    /// Where a reply about this command would go.
    pub reply: Option<ReplyTarget>,
    /// How the comment itself can be acknowledged, where the destination allows it.
    pub ack: Option<Ack>,
}

/// An acknowledgement that makes no noise in the ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// A reaction on a GitHub issue comment.
    GithubReaction {
        owner: String,
        repo: String,
        comment_id: u64,
    },
}

/// One recorded command: what the feedback table keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    pub at_ms: i64,
    pub source: String,
    pub delivery: String,
    pub ticket: String,
    pub author: String,
    pub kind: FeedbackKind,
    /// `use`: the runbook that should have been linked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook: Option<String>,
    /// The alarm the command is about (`lesson_key`), when runlink knows the ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lesson_key: Option<String>,
    /// The signature as people read it, and the ticket's alert name as it was written.
    #[serde(default)]
    pub signature: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertname: Option<String>,
    /// The decision the command answers: its first runbook, whether it was confident, and
    /// whether it was itself taught.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered: Option<String>,
    #[serde(default)]
    pub answered_confident: bool,
    #[serde(default)]
    pub answered_taught: bool,
    #[serde(default)]
    pub index_version: String,
}

/// A feedback row as read back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeedbackRow {
    pub id: i64,
    #[serde(flatten)]
    pub feedback: Feedback,
    /// When `runlink feedback forget` set it aside.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forgotten_ms: Option<i64>,
}

/// The audit event that records feedback row `id`.
pub(crate) fn audit_event(feedback: &Feedback, id: i64) -> crate::audit::AuditEvent {
    crate::audit::AuditEvent::Feedback {
        kind: feedback.kind,
        author: feedback.author.clone(),
        runbook: feedback.runbook.clone(),
        answered: feedback.answered.clone(),
        index_version: feedback.index_version.clone(),
        id,
    }
}
