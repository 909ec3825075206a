//! `runlink suggest`: lessons that enough operators agree on, written as front-matter
//! changes for the authors to review. An alarm repeatedly taught to a runbook becomes one
//! of its `alarms` (a `match` rule for a ticket known by its title only); an alarm a
//! runbook was repeatedly called wrong for becomes one of its `not_alarms`. Files are edited
//! as text, line by line, so everything else in them (comments, key order) stays as written.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::{FeedbackKind, FeedbackRow};
use crate::runbooks::Runbook;

/// One change to the corpus, with the votes behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Proposal {
    /// Answer this alarm name explicitly.
    AddAlarm {
        runbook: String,
        alarm: String,
        votes: usize,
    },
    /// Answer tickets with this (normalized) title explicitly.
    AddRule {
        runbook: String,
        pattern: String,
        votes: usize,
    },
    /// Never answer this alarm name but by an explicit rule.
    NotAlarm {
        runbook: String,
        alarm: String,
        votes: usize,
    },
}

/// A file before and after the proposals touching it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    /// Relative to the corpus directory.
    pub path: PathBuf,
    pub before: String,
    pub after: String,
}

#[derive(Debug, Clone, Default)]
pub struct Suggestion {
    pub proposals: Vec<Proposal>,
    pub files: Vec<FileChange>,
    /// Lessons with enough votes that cannot be written as a rule, and why.
    pub skipped: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SuggestError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Suggestion {
    /// The changes as one unified diff (`a/` and `b/` paths relative to the corpus).
    pub fn diff(&self) -> String {
        let mut out = String::new();
        for file in &self.files {
            let path = file.path.to_string_lossy();
            let diff = similar::TextDiff::from_lines(&file.before, &file.after);
            out.push_str(
                &diff
                    .unified_diff()
                    .context_radius(3)
                    .header(&format!("a/{path}"), &format!("b/{path}"))
                    .to_string(),
            );
        }
        out
    }

    /// Writes the changed files under `dir`.
    pub fn apply(&self, dir: &Path) -> Result<(), SuggestError> {
        for file in &self.files {
            let path = dir.join(&file.path);
            std::fs::write(&path, &file.after)
                .map_err(|source| SuggestError::Write { path, source })?;
        }
        Ok(())
    }
}

/// Votes for one (alarm, runbook) pair.
type Votes = HashMap<(String, String), usize>;

/// What `rows` add up to for the corpus in `dir` (whose runbooks are `runbooks`): a change
/// per pair with at least `min_votes` votes.
pub fn suggest(
    rows: &[FeedbackRow],
    dir: &Path,
    runbooks: &[Arc<Runbook>],
    min_votes: usize,
) -> Result<Suggestion, SuggestError> {
    let min_votes = min_votes.max(1);
    // Alarm names as operators' tickets spelled them, by lesson key.
    let mut spelled: HashMap<String, String> = HashMap::new();
    let mut titles: HashMap<String, String> = HashMap::new();
    let mut taught: Votes = HashMap::new();
    let mut wrong: Votes = HashMap::new();
    for row in rows.iter().filter(|r| r.forgotten_ms.is_none()) {
        let f = &row.feedback;
        let Some(key) = &f.lesson_key else { continue };
        if let Some(name) = &f.alertname {
            spelled.entry(key.clone()).or_insert_with(|| name.clone());
        } else if let Some(title) = key.strip_prefix("title:") {
            titles
                .entry(key.clone())
                .or_insert_with(|| title.to_string());
        }
        // Only a linked answer (a confident one) can be wrong: a runbook listed as an
        // unverified candidate was never asserted.
        let answered = f.answered.as_ref().filter(|_| f.answered_confident);
        match (f.kind, &f.runbook, answered) {
            (FeedbackKind::Use, Some(to), answered) => {
                *taught.entry((key.clone(), to.clone())).or_default() += 1;
                // Corrected away from an answer: a vote against that answer too.
                if let Some(from) = answered.filter(|a| *a != to) {
                    *wrong.entry((key.clone(), from.clone())).or_default() += 1;
                }
            }
            (FeedbackKind::Wrong, _, Some(answered)) => {
                *wrong.entry((key.clone(), answered.clone())).or_default() += 1;
            }
            _ => {}
        }
    }

    let by_id: HashMap<&str, &Arc<Runbook>> = runbooks.iter().map(|r| (r.id.as_str(), r)).collect();
    let claimed = |alarm: &str| -> Vec<&str> {
        runbooks
            .iter()
            .filter(|r| r.alarms.iter().any(|a| a.eq_ignore_ascii_case(alarm)))
            .map(|r| r.id.as_str())
            .collect()
    };
    let mut suggestion = Suggestion::default();
    let sorted = |votes: &Votes| {
        let mut v: Vec<((String, String), usize)> = votes
            .iter()
            .filter(|(_, n)| **n >= min_votes)
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        v.sort();
        v
    };
    let taught = sorted(&taught);
    let wrong = sorted(&wrong);
    for ((key, runbook), votes) in &taught {
        let Some(rb) = by_id.get(runbook.as_str()) else {
            suggestion.skipped.push(format!(
                "{key}: taught `{runbook}`, which is no longer in the corpus"
            ));
            continue;
        };
        if let Some(alarm) = spelled.get(key) {
            let owners = claimed(alarm);
            if owners.contains(&runbook.as_str()) {
                continue;
            }
            if let Some(owner) = owners.first() {
                suggestion.skipped.push(format!(
                    "{alarm}: taught `{runbook}` ({votes} votes), but `{owner}` lists it in `alarms`: change that runbook by hand"
                ));
                continue;
            }
            suggestion.proposals.push(Proposal::AddAlarm {
                runbook: runbook.clone(),
                alarm: alarm.clone(),
                votes: *votes,
            });
        } else if let Some(title) = titles.get(key) {
            if rb.id.anchor().is_some() {
                suggestion.skipped.push(format!(
                    "{key}: taught `{runbook}` ({votes} votes); a section takes no `match` rule: add an alarm name by hand"
                ));
                continue;
            }
            let pattern = regex::escape(title);
            if rb.match_rules.iter().any(|r| r.pattern == pattern) {
                continue;
            }
            suggestion.proposals.push(Proposal::AddRule {
                runbook: runbook.clone(),
                pattern,
                votes: *votes,
            });
        }
    }
    for ((key, runbook), votes) in &wrong {
        let Some(alarm) = spelled.get(key) else {
            continue;
        };
        let Some(rb) = by_id.get(runbook.as_str()) else {
            continue;
        };
        if rb.alarms.iter().any(|a| a.eq_ignore_ascii_case(alarm)) {
            suggestion.skipped.push(format!(
                "{alarm}: `{runbook}` was called wrong {votes} times, but it lists the alarm in `alarms`: review it by hand"
            ));
            continue;
        }
        let adds = suggestion.proposals.iter().any(|p| {
            matches!(p, Proposal::AddAlarm { runbook: r, alarm: a, .. } if r == runbook && a == alarm)
        });
        if adds || rb.not_alarms.iter().any(|a| a.eq_ignore_ascii_case(alarm)) {
            continue;
        }
        suggestion.proposals.push(Proposal::NotAlarm {
            runbook: runbook.clone(),
            alarm: alarm.clone(),
            votes: *votes,
        });
    }

    // One file can hold several runbooks (sections): its edits are made together.
    let mut per_file: BTreeMap<PathBuf, Vec<(&Arc<Runbook>, &Proposal)>> = BTreeMap::new();
    for proposal in &suggestion.proposals {
        let id = match proposal {
            Proposal::AddAlarm { runbook, .. }
            | Proposal::AddRule { runbook, .. }
            | Proposal::NotAlarm { runbook, .. } => runbook,
        };
        if let Some(rb) = by_id.get(id.as_str()) {
            // The id without its anchor is the file's path under the corpus.
            let file = rb.id.as_str().split('#').next().unwrap_or_default();
            per_file
                .entry(PathBuf::from(file))
                .or_default()
                .push((rb, proposal));
        }
    }
    for (path, edits) in per_file {
        let full = dir.join(&path);
        let before = std::fs::read_to_string(&full)
            .map_err(|source| SuggestError::Read { path: full, source })?;
        let mut doc = FrontMatterText::split(&before);
        for (rb, proposal) in edits {
            let anchor = rb.id.anchor();
            match (proposal, anchor) {
                (Proposal::AddAlarm { alarm, .. }, None) => {
                    // Without the key, the runbook's alarms are its file name and H1: they
                    // stay when the key is written.
                    doc.add_to_list("alarms", alarm, &rb.alarms)
                }
                (Proposal::AddAlarm { alarm, .. }, Some(anchor)) => {
                    doc.add_to_map_list("section_alarms", anchor, alarm)
                }
                (Proposal::AddRule { pattern, .. }, _) => doc.add_to_list("match", pattern, &[]),
                (Proposal::NotAlarm { alarm, .. }, None) => {
                    doc.add_to_list("not_alarms", alarm, &[])
                }
                (Proposal::NotAlarm { alarm, .. }, Some(anchor)) => {
                    doc.add_to_map_list("section_not_alarms", anchor, alarm)
                }
            }
        }
        let after = doc.join();
        if after != before {
            suggestion.files.push(FileChange {
                path,
                before,
                after,
            });
        }
    }
    Ok(suggestion)
}

/// A document as its front-matter lines and the rest, for edits that leave every other
/// line as it was.
struct FrontMatterText {
    lines: Vec<String>,
    rest: String,
}

impl FrontMatterText {
    fn split(source: &str) -> Self {
        if let Some(body) = source.strip_prefix("---\n") {
            let mut offset = 0;
            for line in body.split_inclusive('\n') {
                if line.trim_end() == "---" {
                    return FrontMatterText {
                        lines: body[..offset].lines().map(String::from).collect(),
                        rest: body[offset + line.len()..].to_string(),
                    };
                }
                offset += line.len();
            }
        }
        FrontMatterText {
            lines: Vec::new(),
            rest: source.to_string(),
        }
    }

    fn join(&self) -> String {
        if self.lines.is_empty() {
            return self.rest.clone();
        }
        format!("---\n{}\n---\n{}", self.lines.join("\n"), self.rest)
    }

    fn top_key(&self, key: &str) -> Option<usize> {
        let prefix = format!("{key}:");
        self.lines.iter().position(|l| l.starts_with(&prefix))
    }

    /// Adds `value` to the list under `key` (flow `[a, b]`, block `- a`, or a lone scalar);
    /// a missing key is written with `initial` and the value.
    fn add_to_list(&mut self, key: &str, value: &str, initial: &[String]) {
        match self.top_key(key) {
            None => {
                let mut items: Vec<String> = initial.iter().map(|v| quote(v)).collect();
                if !initial.iter().any(|v| v == value) {
                    items.push(quote(value));
                }
                self.lines.push(format!("{key}: [{}]", items.join(", ")));
            }
            Some(at) => self.add_at(at, "", value),
        }
    }

    /// Adds `value` to the list under `key.entry` (a map of lists, by section anchor).
    fn add_to_map_list(&mut self, key: &str, entry: &str, value: &str) {
        let Some(at) = self.top_key(key) else {
            self.lines.push(format!("{key}:"));
            self.lines
                .push(format!("  {}: [{}]", quote(entry), quote(value)));
            return;
        };
        let mut j = at + 1;
        while j < self.lines.len() && self.lines[j].starts_with([' ', '\t']) {
            let trimmed = self.lines[j].trim_start();
            if trimmed.starts_with(&format!("{entry}:"))
                || trimmed.starts_with(&format!("{}:", quote(entry)))
            {
                let indent = self.lines[j].len() - trimmed.len();
                self.add_at(j, &" ".repeat(indent), value);
                return;
            }
            j += 1;
        }
        self.lines
            .insert(at + 1, format!("  {}: [{}]", quote(entry), quote(value)));
    }

    /// Adds `value` to the list that starts on line `at` (indented by `indent`).
    fn add_at(&mut self, at: usize, indent: &str, value: &str) {
        let line = self.lines[at].clone();
        let (head, after) = line.split_once(':').unwrap_or((&line, ""));
        let after = after.trim();
        if let Some(inner) = after.strip_prefix('[').and_then(|a| a.strip_suffix(']')) {
            let mut items: Vec<String> = inner
                .split(',')
                .map(|i| i.trim().to_string())
                .filter(|i| !i.is_empty())
                .collect();
            if !items.iter().any(|i| unquote(i) == value) {
                items.push(quote(value));
            }
            self.lines[at] = format!("{head}: [{}]", items.join(", "));
        } else if after.is_empty() {
            // A block list: the new item goes after the last one, indented like it.
            let mut last = at;
            let mut item_indent = format!("{indent}  ");
            let mut j = at + 1;
            while j < self.lines.len() {
                let l = &self.lines[j];
                let trimmed = l.trim_start();
                let depth = l.len() - trimmed.len();
                if trimmed.starts_with("- ") && depth >= indent.len() {
                    if unquote(trimmed[2..].trim()) == value {
                        return;
                    }
                    last = j;
                    item_indent = l[..depth].to_string();
                } else if !trimmed.is_empty() {
                    break;
                }
                j += 1;
            }
            self.lines
                .insert(last + 1, format!("{item_indent}- {}", quote(value)));
        } else if unquote(after) != value {
            self.lines[at] = format!("{head}: [{after}, {}]", quote(value));
        }
    }
}

/// A YAML scalar as written: plain when it is safe, single-quoted otherwise.
fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/'));
    if plain {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

fn unquote(item: &str) -> String {
    let item = item.trim();
    if let Some(inner) = item.strip_prefix('\'').and_then(|i| i.strip_suffix('\'')) {
        inner.replace("''", "'")
    } else if let Some(inner) = item.strip_prefix('"').and_then(|i| i.strip_suffix('"')) {
        inner.to_string()
    } else {
        item.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edited(source: &str, f: impl FnOnce(&mut FrontMatterText)) -> String {
        let mut doc = FrontMatterText::split(source);
        f(&mut doc);
        doc.join()
    }

    #[test]
    fn lists_grow_in_the_form_they_are_written_in() {
        let flow = "---\ntitle: Disk\nalarms: [DiskFull]\n---\n# Disk\n";
        assert_eq!(
            edited(flow, |d| d.add_to_list("alarms", "HostDiskFull", &[])),
            "---\ntitle: Disk\nalarms: [DiskFull, HostDiskFull]\n---\n# Disk\n"
        );
        let block = "---\nalarms:\n  - DiskFull\n# kept\ntags: [x]\n---\nbody\n";
        assert_eq!(
            edited(block, |d| d.add_to_list("alarms", "HostDiskFull", &[])),
            "---\nalarms:\n  - DiskFull\n  - HostDiskFull\n# kept\ntags: [x]\n---\nbody\n"
        );
        let scalar = "---\nmatch: disk\n---\n";
        assert_eq!(
            edited(scalar, |d| d.add_to_list("match", "disk full (on|at)", &[])),
            "---\nmatch: [disk, 'disk full (on|at)']\n---\n"
        );
        // Already there: nothing changes.
        assert_eq!(
            edited(flow, |d| d.add_to_list("alarms", "DiskFull", &[])),
            flow
        );
    }

    #[test]
    fn a_missing_key_keeps_the_implicit_alarms_and_a_bare_file_gets_front_matter() {
        let bare = "# KubeNodeNotReady\n\nText.\n";
        assert_eq!(
            edited(bare, |d| d.add_to_list(
                "alarms",
                "NodeDown",
                &["KubeNodeNotReady".to_string()]
            )),
            "---\nalarms: [KubeNodeNotReady, NodeDown]\n---\n# KubeNodeNotReady\n\nText.\n"
        );
    }

    #[test]
    fn section_maps_get_an_entry_per_anchor() {
        let page = "---\nsections: 2\nsection_alarms:\n  other: [X]\n---\n# Page\n";
        assert_eq!(
            edited(page, |d| {
                d.add_to_map_list("section_alarms", "disk-full", "DiskFull");
                d.add_to_map_list("section_alarms", "other", "Y");
                d.add_to_map_list("section_not_alarms", "disk-full", "Z");
            }),
            "---\nsections: 2\nsection_alarms:\n  disk-full: [DiskFull]\n  other: [X, Y]\nsection_not_alarms:\n  disk-full: [Z]\n---\n# Page\n"
        );
    }

    #[test]
    fn odd_values_are_quoted_so_the_yaml_stays_valid() {
        let text = edited("---\n---\n", |d| {
            d.add_to_list("match", "it's \\[x\\]: y", &[]);
        });
        let yaml = text.trim_start_matches("---\n").trim_end_matches("---\n");
        let value: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(value["match"][0].as_str(), Some("it's \\[x\\]: y"));
    }
}
