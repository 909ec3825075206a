//! Checks a runbook corpus the way a code linter checks code: a match rule is as dangerous as
//! a code change, so mistakes are found before they ship. Every finding names the file, the
//! line where it can, and the front-matter key.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

use super::front_matter::KNOWN_KEYS;
use super::{Corpus, Runbook, Step};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, ": {level}: ")?;
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Front-matter keys Hugo sites use; kept without a warning.
const HUGO_KEYS: &[&str] = &[
    "weight",
    "date",
    "draft",
    "description",
    "aliases",
    "slug",
    "toc",
    "linktitle",
    "lastmod",
];

static DESTRUCTIVE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\brm\s+-[a-z]*r[a-z]*f|\brm\s+-[a-z]*f[a-z]*r|\bkubectl\s+delete\b|\bdrop\s+(table|database|schema)\b|\btruncate\s+table\b|\bterminate-instances\b|\bdelete-db-instance\b|\bmkfs\b|\bdd\s+if=|\bpg_terminate_backend\b|\bflushall\b|--force\b")
        .unwrap()
});
static SECOND_PERSON: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)second person|two-person|four[- ]eyes|another engineer|pair with|peer[- ]review|second pair of eyes|have someone (check|verify|confirm)")
        .unwrap()
});
/// "... at line 3 column 1" in YAML errors; the front matter starts on the file's line 2.
static ERROR_LINE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"line (\d+)").unwrap());
static LINK: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\]\(([^)\s]+)\)").unwrap());

/// The known key closest to a misspelled one, if it is close enough to be a typo.
pub fn did_you_mean(key: &str) -> Option<&'static str> {
    crate::did_you_mean::closest(key, KNOWN_KEYS.iter().copied())
}

/// The 1-based line of a front-matter key, found in the file's text.
fn key_line(source: &str, key: &str) -> Option<usize> {
    let prefix = format!("{key}:");
    source
        .lines()
        .position(|l| l.trim_start().starts_with(&prefix))
        .map(|i| i + 1)
}

fn line_of(source: &str, needle: &str) -> Option<usize> {
    source
        .lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
}

fn step_text(step: &Step) -> &str {
    match step {
        Step::Text { text } => text,
        Step::Code { code, .. } => code,
    }
}

pub fn lint(corpus: &Corpus) -> Vec<Finding> {
    let mut findings = Vec::new();
    for error in &corpus.errors {
        let message = error.error.to_string();
        let line = ERROR_LINE
            .captures(&message)
            .and_then(|c| c[1].parse::<usize>().ok())
            .map(|l| l + 1);
        findings.push(Finding {
            path: error.path.clone(),
            line,
            key: None,
            severity: Severity::Error,
            message,
        });
    }

    let sources: HashMap<&Path, String> = corpus
        .runbooks
        .iter()
        .map(|r| {
            (
                r.path.as_path(),
                std::fs::read_to_string(&r.path).unwrap_or_default(),
            )
        })
        .collect();
    let source = |r: &Runbook| {
        sources
            .get(r.path.as_path())
            .map(String::as_str)
            .unwrap_or("")
    };

    let mut claims: HashMap<String, Vec<&Runbook>> = HashMap::new();
    let mut titles: HashMap<String, Vec<&Runbook>> = HashMap::new();
    let anchors: std::collections::HashSet<&str> =
        corpus.runbooks.iter().map(|r| r.id.as_str()).collect();
    let mut files_seen = std::collections::HashSet::new();
    for runbook in &corpus.runbooks {
        let src = source(runbook);
        // The sections of one page share its front matter and links: checked once.
        let first_of_file = files_seen.insert(runbook.path.as_path());
        let mut push = |line, key: Option<&str>, severity, message: String| {
            findings.push(Finding {
                path: runbook.path.clone(),
                line,
                key: key.map(str::to_string),
                severity,
                message,
            })
        };
        if let Some(anchor) = runbook.id.anchor() {
            let heading_line = line_of(src, &runbook.title);
            if runbook.body.trim() == runbook.title.trim() {
                push(
                    heading_line,
                    None,
                    Severity::Warning,
                    format!(
                        "section `#{anchor}` is empty: it answers its alert with nothing to read"
                    ),
                );
            }
            let repeated = anchor
                .rsplit_once('-')
                .filter(|(_, n)| n.parse::<u32>().is_ok())
                .map(|(base, _)| {
                    format!(
                        "{}#{base}",
                        runbook.id.as_str().split('#').next().unwrap_or("")
                    )
                })
                .filter(|first| anchors.contains(first.as_str()));
            if let Some(first) = repeated {
                push(
                    heading_line,
                    None,
                    Severity::Warning,
                    format!(
                        "heading `{}` is repeated: this section is `#{anchor}`, and links to `{first}` reach the first one",
                        runbook.title
                    ),
                );
            }
        }
        for key in runbook.extra_keys.iter().filter(|_| first_of_file) {
            if KNOWN_KEYS.contains(&key.as_str())
                || HUGO_KEYS.contains(&key.to_lowercase().as_str())
            {
                continue;
            }
            let hint = did_you_mean(key)
                .map(|k| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            push(
                key_line(src, key),
                Some(key),
                Severity::Warning,
                format!("unknown front matter key{hint}"),
            );
        }
        if runbook.first_steps.is_empty() {
            push(
                None,
                Some("first_steps"),
                Severity::Warning,
                "no first diagnostic steps: add `first_steps` or a Diagnosis / First steps / Triage section".into(),
            );
        }
        let steps: Vec<&str> = runbook.first_steps.iter().map(step_text).collect();
        let verified = steps.iter().any(|s| SECOND_PERSON.is_match(s))
            || SECOND_PERSON.is_match(&runbook.body);
        for step in &steps {
            if let Some(m) = DESTRUCTIVE.find(step)
                && !verified
            {
                push(
                    line_of(src, m.as_str()),
                    Some("first_steps"),
                    Severity::Error,
                    format!(
                        "first step runs a destructive command (`{}`) without asking a second person to verify it",
                        m.as_str()
                    ),
                );
            }
        }
        for cap in LINK.captures_iter(src).filter(|_| first_of_file) {
            let target = &cap[1];
            if target.contains("://") || target.starts_with('#') || target.starts_with("mailto:") {
                continue;
            }
            let file = target.split('#').next().unwrap_or(target);
            if file.is_empty() {
                continue;
            }
            let dir = runbook.path.parent().unwrap_or(Path::new("."));
            if !dir.join(file).exists() {
                push(
                    line_of(src, target),
                    None,
                    Severity::Warning,
                    format!("relative link to `{file}`, which does not exist"),
                );
            }
        }
        // Refusing an alarm it also claims: the claim wins, so the refusal is a mistake.
        if let Some(both) = runbook
            .not_alarms
            .iter()
            .find(|n| runbook.alarms.iter().any(|a| a.eq_ignore_ascii_case(n)))
        {
            push(
                key_line(src, "not_alarms"),
                Some("not_alarms"),
                Severity::Error,
                format!("alarm `{both}` is in both `alarms` and `not_alarms`"),
            );
        }
        let mut own: Vec<String> = runbook.alarms.iter().map(|a| a.to_lowercase()).collect();
        own.sort();
        own.dedup();
        for alarm in own {
            claims.entry(alarm).or_default().push(runbook);
        }
        titles
            .entry(runbook.title.to_lowercase())
            .or_default()
            .push(runbook);
    }

    let mut claimed: Vec<_> = claims.into_iter().filter(|(_, r)| r.len() > 1).collect();
    claimed.sort_by(|a, b| a.0.cmp(&b.0));
    for (alarm, runbooks) in claimed {
        let others: Vec<String> = runbooks.iter().map(|r| r.id.to_string()).collect();
        for runbook in &runbooks {
            findings.push(Finding {
                path: runbook.path.clone(),
                line: key_line(source(runbook), "alarms"),
                key: Some("alarms".into()),
                severity: Severity::Error,
                message: format!(
                    "alarm `{alarm}` is claimed by several runbooks: {}",
                    others.join(", ")
                ),
            });
        }
    }
    let mut duplicated: Vec<_> = titles.into_iter().filter(|(_, r)| r.len() > 1).collect();
    duplicated.sort_by(|a, b| a.0.cmp(&b.0));
    for (title, runbooks) in duplicated {
        for runbook in runbooks.iter().skip(1) {
            findings.push(Finding {
                path: runbook.path.clone(),
                line: key_line(source(runbook), "title"),
                key: Some("title".into()),
                severity: Severity::Warning,
                message: format!("title `{title}` is also used by {}", runbooks[0].id),
            });
        }
    }

    // A rule that matches another runbook's own alarm names would hijack its tickets.
    for runbook in &corpus.runbooks {
        for rule in &runbook.match_rules {
            for other in &corpus.runbooks {
                if other.id == runbook.id {
                    continue;
                }
                if let Some(alarm) = other.alarms.iter().find(|a| {
                    rule.regex.is_match(a)
                        || rule.regex.is_match(&crate::signature::split_identifier(a))
                }) {
                    findings.push(Finding {
                        path: runbook.path.clone(),
                        line: line_of(source(runbook), &rule.pattern),
                        key: Some("match".into()),
                        severity: Severity::Warning,
                        message: format!(
                            "rule `{}` also matches `{alarm}` of {}: it may shadow that runbook",
                            rule.pattern, other.id
                        ),
                    });
                    break;
                }
            }
        }
    }
    findings.sort_by(|a, b| (&a.path, a.line).cmp(&(&b.path, b.line)));
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(files: &[(&str, &str)]) -> (tempfile::TempDir, Corpus) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let corpus =
            Corpus::load(dir.path(), &url::Url::parse("https://x.example/").unwrap()).unwrap();
        (dir, corpus)
    }

    fn messages(findings: &[Finding]) -> Vec<String> {
        findings.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn a_clean_runbook_has_no_findings() {
        let (_d, c) = corpus(&[(
            "disk.md",
            "---\nalarms: [DiskFull]\n---\n# Disk\n\n## Diagnosis\n\n- Run `df -h`\n",
        )]);
        assert!(lint(&c).is_empty(), "{:?}", messages(&lint(&c)));
    }

    #[test]
    fn planted_errors_are_all_found_with_file_line_and_key() {
        let (_d, c) = corpus(&[
            (
                "a.md",
                "---\ntitle: Disk\nalrms: [X]\nalarms: [DiskFull]\nmatch: ['disk']\n---\n# A\n\nSee [notes](missing.md).\n\n## Diagnosis\n\n- `rm -rf /var/log/*`\n",
            ),
            (
                "b.md",
                "---\ntitle: Disk\nalarms: [DiskFull, DiskFilling]\n---\n# B\n",
            ),
            ("c.md", "---\nmatch: ['(']\n---\n# C\n"),
        ]);
        let found = messages(&lint(&c));
        let has = |needle: &str| found.iter().any(|m| m.contains(needle));
        assert!(
            has("a.md:3: warning: key `alrms`: unknown front matter key (did you mean `alarms`?)"),
            "{found:#?}"
        );
        assert!(
            has("error: key `alarms`: alarm `diskfull` is claimed by several runbooks"),
            "{found:#?}"
        );
        assert!(has("relative link to `missing.md`"), "{found:#?}");
        assert!(has("destructive command (`rm -rf`)"), "{found:#?}");
        assert!(
            has("b.md:2: warning: key `title`: title `disk` is also used by a.md"),
            "{found:#?}"
        );
        assert!(
            has("b.md: warning: key `first_steps`: no first diagnostic steps"),
            "{found:#?}"
        );
        assert!(
            has("c.md: error: front matter: match rule `(` does not compile"),
            "{found:#?}"
        );
        assert!(
            has("rule `disk` also matches `DiskFull` of b.md"),
            "{found:#?}"
        );
    }

    #[test]
    fn destructive_steps_with_a_second_person_are_accepted() {
        let (_d, c) = corpus(&[(
            "x.md",
            "---\nfirst_steps:\n  - Ask a second person to check the pod name, then `kubectl delete pod <pod>`\n---\n# X\n",
        )]);
        assert!(lint(&c).is_empty(), "{:?}", messages(&lint(&c)));
    }

    #[test]
    fn not_alarms_is_known_and_may_not_contradict_alarms() {
        let (_d, c) = corpus(&[
            (
                "ok.md",
                "---
not_alarms: [KubePodNotReady]
first_steps: [Check the pod]
---
# KubePodCrashLooping
",
            ),
            (
                "bad.md",
                "---
alarms: [DiskFull]
not_alarms: [diskfull]
first_steps: [Run df]
---
# Disk
",
            ),
        ]);
        let found = messages(&lint(&c));
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].ends_with(
                "bad.md:3: error: key `not_alarms`: alarm `diskfull` is in both `alarms` and `not_alarms`"
            ),
            "{found:#?}"
        );
    }

    #[test]
    fn hints_only_for_near_misses() {
        assert_eq!(did_you_mean("alrms"), Some("alarms"));
        assert_eq!(did_you_mean("first_step"), Some("first_steps"));
        assert_eq!(did_you_mean("owner"), None);
    }

    #[test]
    fn sections_are_linted_once_per_page_and_repeats_and_empties_reported() {
        let page = "---\nsectons: true\n---\n# Page\n\n## DiskFull\n\nCheck `df -h`.\n\n## DiskSlow\n\n## DiskFull\n\nAgain.\n\n## NodeDown\n\nLook.\n";
        let (_dir, corpus) = corpus(&[("page.md", page)]);
        let ids: Vec<_> = corpus.runbooks.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "page.md#diskfull",
                "page.md#diskslow",
                "page.md#diskfull-1",
                "page.md#nodedown"
            ]
        );
        let all = messages(&lint(&corpus));
        assert_eq!(
            all.iter()
                .filter(|m| m.contains("unknown front matter key"))
                .count(),
            1,
            "{all:#?}"
        );
        assert!(
            all.iter()
                .any(|m| m.contains("section `#diskslow` is empty")),
            "{all:#?}"
        );
        assert!(
            all.iter()
                .any(|m| m.contains("`#diskfull-1`") && m.contains("page.md#diskfull")),
            "{all:#?}"
        );
        assert!(
            all.iter()
                .any(|m| m.contains("alarm `diskfull` is claimed by several runbooks")),
            "{all:#?}"
        );
    }
}
