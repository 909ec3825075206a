//! Taught answers: what `/runlink use` commands add up to, replayed from the feedback table
//! in order. A lesson holds until a later `/runlink wrong` on a ticket it answered, a newer
//! `use` for the same alarm, or `runlink feedback forget`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;

use super::{FeedbackKind, FeedbackRow};
use crate::signature::AlarmSignature;

/// What identifies "the same alarm" for a lesson: the alert name, or the normalized title
/// when the ticket has none. Coarser than the signature key on purpose: an operator teaching
/// an answer for `KubePodCrashLooping` means it for every service it fires on.
pub fn lesson_key(signature: &AlarmSignature) -> String {
    match &signature.alertname {
        Some(name) => format!("alert:{}", name.to_lowercase()),
        None => format!("title:{}", signature.title.trim().to_lowercase()),
    }
}

/// One taught answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lesson {
    /// The feedback row that taught it (what `runlink feedback forget` takes).
    pub feedback: i64,
    pub runbook: String,
    pub author: String,
    pub ticket: String,
    pub at_ms: i64,
}

impl Lesson {
    /// The date it was taught, as a comment shows it.
    pub fn date(&self) -> String {
        chrono::DateTime::from_timestamp_millis(self.at_ms)
            .map(|t| t.format("%Y-%m-%d").to_string())
            .unwrap_or_default()
    }
}

/// Every lesson in force, by `lesson_key`.
#[derive(Debug, Clone, Default)]
pub struct Lessons {
    by_key: HashMap<String, Lesson>,
    /// Changes whenever the lessons do, so a decision remembered under older lessons is not
    /// served after a new one.
    generation: u64,
}

impl Lessons {
    /// Replays the feedback rows (any order; they are sorted by id here).
    pub fn from_rows(rows: &[FeedbackRow], generation: u64) -> Self {
        let mut rows: Vec<&FeedbackRow> =
            rows.iter().filter(|r| r.forgotten_ms.is_none()).collect();
        rows.sort_by_key(|r| r.id);
        let mut by_key: HashMap<String, Lesson> = HashMap::new();
        for row in rows {
            let f = &row.feedback;
            let Some(key) = &f.lesson_key else { continue };
            match f.kind {
                FeedbackKind::Use => {
                    if let Some(runbook) = &f.runbook {
                        by_key.insert(
                            key.clone(),
                            Lesson {
                                feedback: row.id,
                                runbook: runbook.clone(),
                                author: f.author.clone(),
                                ticket: f.ticket.clone(),
                                at_ms: f.at_ms,
                            },
                        );
                    }
                }
                // Only a verdict on the taught answer itself removes it: calling an older,
                // untaught answer wrong says nothing about what was taught since.
                FeedbackKind::Wrong => {
                    if f.answered_taught
                        && by_key
                            .get(key)
                            .is_some_and(|l| f.answered.as_deref() == Some(l.runbook.as_str()))
                    {
                        by_key.remove(key);
                    }
                }
                FeedbackKind::Right | FeedbackKind::None => {}
            }
        }
        Lessons { by_key, generation }
    }

    pub fn get(&self, signature: &AlarmSignature) -> Option<&Lesson> {
        if self.by_key.is_empty() {
            return None;
        }
        self.by_key.get(&lesson_key(signature))
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Lessons by key, in key order.
    pub fn all(&self) -> Vec<(&str, &Lesson)> {
        let mut all: Vec<_> = self.by_key.iter().map(|(k, l)| (k.as_str(), l)).collect();
        all.sort_by_key(|(k, _)| *k);
        all
    }
}

/// The lessons in force, replaced whole when the feedback table changes.
#[derive(Debug, Default)]
pub struct LessonBook {
    current: RwLock<Arc<Lessons>>,
    /// What the table looked like when the lessons were last built (rows, latest id,
    /// forgotten rows): a refresh that finds the same rebuilds nothing.
    seen: RwLock<Option<(usize, i64, usize)>>,
}

impl LessonBook {
    pub fn current(&self) -> Arc<Lessons> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Rebuilds from the whole feedback table, unless it is as it was.
    pub fn replace(&self, rows: &[FeedbackRow]) {
        let shape = (
            rows.len(),
            rows.iter().map(|r| r.id).max().unwrap_or(0),
            rows.iter().filter(|r| r.forgotten_ms.is_some()).count(),
        );
        let mut seen = self.seen.write().unwrap_or_else(|p| p.into_inner());
        if *seen == Some(shape) {
            return;
        }
        *seen = Some(shape);
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let generation = current.generation + 1;
        *current = Arc::new(Lessons::from_rows(rows, generation));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::Feedback;

    fn row(
        id: i64,
        kind: FeedbackKind,
        runbook: Option<&str>,
        answered: Option<&str>,
    ) -> FeedbackRow {
        FeedbackRow {
            id,
            forgotten_ms: None,
            feedback: Feedback {
                at_ms: id * 1000,
                source: "github".into(),
                delivery: format!("d{id}"),
                ticket: format!("github:acme/ops#{id}"),
                author: format!("user{id}"),
                kind,
                runbook: runbook.map(String::from),
                lesson_key: Some("alert:diskfull".into()),
                signature: "DiskFull: disk full".into(),
                alertname: Some("DiskFull".into()),
                answered: answered.map(String::from),
                answered_confident: answered.is_some(),
                answered_taught: false,
                index_version: "v1".into(),
            },
        }
    }

    fn signature() -> AlarmSignature {
        AlarmSignature {
            alertname: Some("DiskFull".into()),
            service: None,
            namespace: None,
            instance: None,
            title: "disk full".into(),
            text: "disk full".into(),
            metrics: vec![],
        }
    }

    #[test]
    fn the_latest_use_teaches_and_only_wrong_on_the_taught_answer_removes_it() {
        let first = row(1, FeedbackKind::Use, Some("a.md"), Some("x.md"));
        let second = row(2, FeedbackKind::Use, Some("b.md"), Some("a.md"));
        let lessons = Lessons::from_rows(&[second.clone(), first.clone()], 1);
        let lesson = lessons.get(&signature()).unwrap();
        assert_eq!((lesson.runbook.as_str(), lesson.feedback), ("b.md", 2));
        assert_eq!(lesson.author, "user2");

        // Wrong about an untaught answer, or about another runbook: the lesson stays.
        let untaught = row(3, FeedbackKind::Wrong, None, Some("b.md"));
        let mut other = row(4, FeedbackKind::Wrong, None, Some("a.md"));
        other.feedback.answered_taught = true;
        let lessons = Lessons::from_rows(&[first.clone(), second.clone(), untaught, other], 2);
        assert_eq!(lessons.get(&signature()).unwrap().runbook, "b.md");

        let mut wrong = row(5, FeedbackKind::Wrong, None, Some("b.md"));
        wrong.feedback.answered_taught = true;
        let lessons = Lessons::from_rows(&[first.clone(), second.clone(), wrong], 3);
        assert!(lessons.get(&signature()).is_none());

        let mut forgotten = second;
        forgotten.forgotten_ms = Some(9);
        let lessons = Lessons::from_rows(&[first, forgotten], 4);
        assert_eq!(lessons.get(&signature()).unwrap().runbook, "a.md");
    }

    #[test]
    fn a_ticket_without_alert_name_is_known_by_its_normalized_title() {
        let mut sig = signature();
        sig.alertname = None;
        sig.title = "Disk full on <host>".into();
        assert_eq!(lesson_key(&sig), "title:disk full on <host>");
        assert_eq!(lesson_key(&signature()), "alert:diskfull");
    }

    #[test]
    fn the_book_rebuilds_only_when_the_table_changed() {
        let book = LessonBook::default();
        let rows = vec![row(1, FeedbackKind::Use, Some("a.md"), None)];
        book.replace(&rows);
        let generation = book.current().generation();
        book.replace(&rows);
        assert_eq!(book.current().generation(), generation);
        let mut rows = rows;
        rows[0].forgotten_ms = Some(1);
        book.replace(&rows);
        assert!(book.current().generation() > generation);
        assert!(book.current().is_empty());
    }
}
