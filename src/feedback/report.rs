//! `runlink feedback`: what operators said, per runbook and per alarm, for the authors who
//! own the match rules.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::{FeedbackKind, FeedbackRow, Lessons};

/// One runbook's record over the period.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunbookReport {
    pub runbook: String,
    /// Tickets it was linked to (their confident first answer).
    pub linked: usize,
    pub confirmed: usize,
    pub called_wrong: usize,
    /// Where operators corrected it to (`/runlink use` on a ticket it answered).
    pub corrected_to: BTreeMap<String, usize>,
}

/// One alarm's corrections.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SignatureReport {
    pub alarm: String,
    pub signature: String,
    /// `/runlink use` votes by runbook.
    pub corrections: BTreeMap<String, usize>,
    pub called_wrong: usize,
    /// `/runlink none`: operators say no runbook covers it.
    pub no_runbook: usize,
    /// The answer taught for it now, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub taught: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    pub commands: usize,
    pub by_kind: BTreeMap<&'static str, usize>,
    pub runbooks: Vec<RunbookReport>,
    pub alarms: Vec<SignatureReport>,
}

/// `linked`: confident first answers per runbook over the same period (from the audit log).
pub fn build(rows: &[FeedbackRow], linked: &HashMap<String, usize>, lessons: &Lessons) -> Report {
    let mut report = Report::default();
    let mut runbooks: BTreeMap<String, RunbookReport> = BTreeMap::new();
    let mut alarms: BTreeMap<String, SignatureReport> = BTreeMap::new();
    for (id, n) in linked {
        runbooks.insert(
            id.clone(),
            RunbookReport {
                runbook: id.clone(),
                linked: *n,
                ..Default::default()
            },
        );
    }
    let taught: HashMap<&str, &str> = lessons
        .all()
        .into_iter()
        .map(|(key, lesson)| (key, lesson.runbook.as_str()))
        .collect();
    for row in rows.iter().filter(|r| r.forgotten_ms.is_none()) {
        let f = &row.feedback;
        report.commands += 1;
        *report.by_kind.entry(f.kind.as_str()).or_default() += 1;
        // Only a linked (confident) answer is the runbook's record.
        if let Some(answered) = f.answered.as_ref().filter(|_| f.answered_confident) {
            let r = runbooks
                .entry(answered.clone())
                .or_insert_with(|| RunbookReport {
                    runbook: answered.clone(),
                    ..Default::default()
                });
            match f.kind {
                FeedbackKind::Right => r.confirmed += 1,
                FeedbackKind::Wrong => r.called_wrong += 1,
                FeedbackKind::Use => {
                    if let Some(to) = f.runbook.as_ref().filter(|to| *to != answered) {
                        *r.corrected_to.entry(to.clone()).or_default() += 1;
                    }
                }
                FeedbackKind::None => {}
            }
        }
        let Some(key) = &f.lesson_key else { continue };
        let a = alarms
            .entry(key.clone())
            .or_insert_with(|| SignatureReport {
                alarm: key.clone(),
                signature: f.signature.clone(),
                taught: taught.get(key.as_str()).map(|r| r.to_string()),
                ..Default::default()
            });
        match f.kind {
            FeedbackKind::Use => {
                if let Some(to) = &f.runbook {
                    *a.corrections.entry(to.clone()).or_default() += 1;
                }
            }
            FeedbackKind::Wrong => a.called_wrong += 1,
            FeedbackKind::None => a.no_runbook += 1,
            FeedbackKind::Right => {}
        }
    }
    report.runbooks = runbooks.into_values().collect();
    report.runbooks.sort_by(|a, b| {
        let score = |r: &RunbookReport| r.called_wrong + r.corrected_to.values().sum::<usize>();
        score(b)
            .cmp(&score(a))
            .then(b.linked.cmp(&a.linked))
            .then(a.runbook.cmp(&b.runbook))
    });
    report.alarms = alarms.into_values().collect();
    report.alarms.sort_by(|a, b| {
        let votes = |s: &SignatureReport| {
            s.corrections.values().sum::<usize>() + s.called_wrong + s.no_runbook
        };
        votes(b).cmp(&votes(a)).then(a.alarm.cmp(&b.alarm))
    });
    report
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
                at_ms: id,
                source: "jira".into(),
                delivery: id.to_string(),
                ticket: format!("jira:OPS-{id}"),
                author: "ana".into(),
                kind,
                runbook: runbook.map(String::from),
                lesson_key: Some("alert:kubepodcrashlooping".into()),
                signature: "KubePodCrashLooping: pod crash looping".into(),
                alertname: Some("KubePodCrashLooping".into()),
                answered: answered.map(String::from),
                answered_confident: true,
                answered_taught: false,
                index_version: "v".into(),
            },
        }
    }

    #[test]
    fn corrections_count_against_the_answer_and_for_the_alarm() {
        let rows = vec![
            row(1, FeedbackKind::Use, Some("crash.md"), Some("am.md")),
            row(2, FeedbackKind::Use, Some("crash.md"), Some("am.md")),
            row(3, FeedbackKind::Right, None, Some("crash.md")),
            row(4, FeedbackKind::Wrong, None, Some("am.md")),
        ];
        let linked = HashMap::from([("am.md".to_string(), 7), ("crash.md".to_string(), 1)]);
        let lessons = Lessons::from_rows(&rows, 1);
        let report = build(&rows, &linked, &lessons);
        assert_eq!(report.commands, 4);
        let am = &report.runbooks[0];
        assert_eq!(am.runbook, "am.md");
        assert_eq!((am.linked, am.called_wrong), (7, 1));
        assert_eq!(am.corrected_to.get("crash.md"), Some(&2));
        let crash = report
            .runbooks
            .iter()
            .find(|r| r.runbook == "crash.md")
            .unwrap();
        assert_eq!((crash.linked, crash.confirmed), (1, 1));
        let alarm = &report.alarms[0];
        assert_eq!(alarm.corrections.get("crash.md"), Some(&2));
        assert_eq!(alarm.taught.as_deref(), Some("crash.md"));
    }
}
