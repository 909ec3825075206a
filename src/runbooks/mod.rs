//! The runbook corpus: Markdown files under one directory, each turned into a `Runbook` with
//! its names, match rules, link and first diagnostic steps. Loading is forgiving per file: one
//! broken runbook is reported by path and the rest still load, because an index that refuses
//! to start over one typo helps nobody during an incident.

mod front_matter;
pub mod lint;
mod markdown;
mod sections;

use std::fmt;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Serialize;
use url::Url;

pub use markdown::Step;

/// A runbook's path relative to the corpus root, with `/` separators: stable across machines
/// and the key the `match` contract reports.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RunbookId(String);

impl RunbookId {
    pub fn from_relative(path: &Path) -> Self {
        let parts: Vec<String> = path
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        RunbookId(parts.join("/"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The section's anchor, for a runbook that is a section of a page.
    pub fn anchor(&self) -> Option<&str> {
        self.0.split_once('#').map(|(_, anchor)| anchor)
    }
}

impl fmt::Display for RunbookId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone)]
pub struct MatchRule {
    pub pattern: String,
    pub regex: Regex,
}

#[derive(Debug, Clone)]
pub struct Runbook {
    pub id: RunbookId,
    pub path: PathBuf,
    pub title: String,
    /// Alert names this runbook answers exactly: front matter `alarms`, else its H1 and stem.
    pub alarms: Vec<String>,
    /// Alert names it must never answer but by an explicit rule: front matter `not_alarms`.
    pub not_alarms: Vec<String>,
    pub match_rules: Vec<MatchRule>,
    pub services: Vec<String>,
    pub tags: Vec<String>,
    pub url: Url,
    pub first_steps: Vec<Step>,
    /// The section that says what the alert means; weighted higher than the rest.
    pub meaning: String,
    pub headings: Vec<String>,
    pub body: String,
    /// Front-matter keys runlink does not know (Hugo's, or typos); `runlink lint` reports them.
    pub extra_keys: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunbookError {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    FrontMatter(#[from] front_matter::FrontMatterError),
    #[error("front matter: match rule `{pattern}` does not compile: {source}")]
    Regex {
        pattern: String,
        #[source]
        source: regex::Error,
    },
    #[error("front matter: url `{url}`: {source}")]
    Url {
        url: String,
        #[source]
        source: url::ParseError,
    },
}

/// A runbook that could not be loaded, and why.
#[derive(Debug)]
pub struct LoadError {
    pub path: PathBuf,
    pub error: RunbookError,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "runbook {}: {}", self.path.display(), self.error)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("runbooks directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Default)]
pub struct Corpus {
    pub runbooks: Vec<Runbook>,
    pub errors: Vec<LoadError>,
}

/// How many steps a comment shows per runbook: enough to start, short enough to read.
pub const MAX_FIRST_STEPS: usize = 3;

/// The first `MAX_FIRST_STEPS` steps of a section. A step is a paragraph or list item with
/// the commands right after it ("Check the node:" and its `kubectl` line), or a command on
/// its own: a step is never cut from the command it introduces.
fn first_steps(blocks: &[Step]) -> Vec<Step> {
    let mut steps = 0;
    let mut out = Vec::new();
    for block in blocks {
        // A command continues the step before it; text, or a command that opens the
        // section, starts a new one.
        let starts_step = matches!(block, Step::Text { .. }) || out.is_empty();
        if starts_step && steps == MAX_FIRST_STEPS {
            break;
        }
        if out.len() == 3 * MAX_FIRST_STEPS {
            break;
        }
        steps += usize::from(starts_step);
        out.push(block.clone());
    }
    out
}

/// Files in a runbook repository that are not runbooks.
fn is_runbook_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if !name.to_ascii_lowercase().ends_with(".md") || name.starts_with('.') {
        return false;
    }
    let upper = name.to_ascii_uppercase();
    let skipped = [
        "README",
        "LICENSE",
        "LICENSING",
        "SOURCE",
        "CHANGELOG",
        "CONTRIBUTING",
        "CODEOWNERS",
    ];
    !(name.starts_with('_') || skipped.iter().any(|s| upper.starts_with(s)))
}

impl Corpus {
    pub fn load(dir: &Path, base_url: &Url) -> Result<Corpus, CorpusError> {
        let mut files = Vec::new();
        collect_files(dir, &mut files).map_err(|source| CorpusError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        files.sort();
        let mut corpus = Corpus::default();
        for path in files {
            let relative = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
            match std::fs::read_to_string(&path)
                .map_err(RunbookError::from)
                .and_then(|source| Runbook::parse_file(&relative, &source, base_url))
            {
                Ok(runbooks) => {
                    for mut runbook in runbooks {
                        runbook.path = path.clone();
                        corpus.runbooks.push(runbook);
                    }
                }
                Err(error) => corpus.errors.push(LoadError { path, error }),
            }
        }
        Ok(corpus)
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let file_type = entry.file_type()?;
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if file_type.is_dir() && !hidden {
            collect_files(&path, out)?;
        } else if file_type.is_file() && is_runbook_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// Sections whose blocks are a runbook's first diagnostic steps.
const STEP_SECTIONS: &[&str] = &[
    "first steps",
    "triage",
    "diagnosis",
    "diagnose",
    "investigation",
    "how to investigate",
    "troubleshooting",
    "quick checks",
    "steps",
];

/// Sections that say what an alert means.
const MEANING_SECTIONS: &[&str] = &["meaning", "description", "overview", "summary", "symptoms"];

/// Where a runbook file is read: its front matter's `url`, else the corpus base URL plus
/// its path without the extension.
fn page_url(front_url: Option<&str>, id: &RunbookId, base_url: &Url) -> Result<Url, RunbookError> {
    match front_url {
        Some(url) => Url::parse(url).map_err(|source| RunbookError::Url {
            url: url.to_string(),
            source,
        }),
        None => {
            let path = id.as_str();
            let without_ext = path
                .strip_suffix(".md")
                .or_else(|| path.strip_suffix(".MD"))
                .unwrap_or(path);
            base_url
                .join(without_ext)
                .map_err(|source| RunbookError::Url {
                    url: without_ext.to_string(),
                    source,
                })
        }
    }
}

impl Runbook {
    /// The runbooks of one file: the file itself, or one per section for a page of
    /// runbooks (see `sections`). `relative` is its path under the corpus root.
    pub fn parse_file(
        relative: &Path,
        source: &str,
        base_url: &Url,
    ) -> Result<Vec<Runbook>, RunbookError> {
        let (front, markdown_src, _) = front_matter::split(source)?;
        let doc = markdown::parse(markdown_src);
        let Some(level) = sections::level(front.sections, &doc) else {
            return Ok(vec![Self::from_document(relative, front, &doc, base_url)?]);
        };
        let page = RunbookId::from_relative(relative);
        let url = page_url(front.url.as_deref(), &page, base_url)?;
        Ok((0..doc.sections.len())
            .filter(|i| doc.sections[*i].level == level)
            .map(|i| Self::from_section(relative, &page, &front, &doc, i, &url))
            .collect())
    }

    /// One section of a page and its subsections, as a runbook linked at its anchor.
    fn from_section(
        relative: &Path,
        page: &RunbookId,
        front: &front_matter::FrontMatter,
        doc: &markdown::Document,
        index: usize,
        page_url: &Url,
    ) -> Runbook {
        let span = sections::span(doc, index);
        let head = &span[0];
        let subsections = &span[1..];
        let mut url = page_url.clone();
        url.set_fragment(Some(&head.anchor));
        let steps_from = markdown::find(subsections, STEP_SECTIONS)
            .filter(|s| !s.blocks.is_empty())
            .map(|s| s.blocks.as_slice())
            .or(Some(head.blocks.as_slice()).filter(|b| !b.is_empty()))
            .or_else(|| {
                subsections
                    .iter()
                    .map(|s| s.blocks.as_slice())
                    .find(|b| !b.is_empty())
            })
            .unwrap_or_default();
        let meaning = if head.text.trim().is_empty() {
            markdown::find(subsections, MEANING_SECTIONS)
                .map(|s| s.text.clone())
                .unwrap_or_default()
        } else {
            head.text.clone()
        };
        let mut body = String::new();
        for s in span {
            body.push_str(&s.heading);
            body.push('\n');
            body.push_str(&s.text);
            body.push('\n');
        }
        Runbook {
            id: RunbookId(format!("{page}#{}", head.anchor)),
            path: relative.to_path_buf(),
            title: head.heading.clone(),
            alarms: sections::alarm_of(&head.heading)
                .into_iter()
                .chain(
                    front
                        .section_alarms
                        .get(&head.anchor)
                        .into_iter()
                        .flatten()
                        .cloned(),
                )
                .collect(),
            not_alarms: front
                .not_alarms
                .iter()
                .chain(
                    front
                        .section_not_alarms
                        .get(&head.anchor)
                        .into_iter()
                        .flatten(),
                )
                .cloned()
                .collect(),
            match_rules: Vec::new(),
            services: front.services.clone(),
            tags: front.tags.clone(),
            url,
            first_steps: first_steps(steps_from),
            meaning,
            headings: subsections.iter().map(|s| s.heading.clone()).collect(),
            body,
            extra_keys: front.other.keys().cloned().collect(),
        }
    }

    /// Parses a file as one runbook, whatever its sections. `relative` is its path under
    /// the corpus root.
    pub fn parse(relative: &Path, source: &str, base_url: &Url) -> Result<Runbook, RunbookError> {
        let (front, markdown_src, _) = front_matter::split(source)?;
        let doc = markdown::parse(markdown_src);
        Self::from_document(relative, front, &doc, base_url)
    }

    fn from_document(
        relative: &Path,
        front: front_matter::FrontMatter,
        doc: &markdown::Document,
        base_url: &Url,
    ) -> Result<Runbook, RunbookError> {
        let id = RunbookId::from_relative(relative);
        let stem = relative
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();

        let alarms = if front.alarms.is_empty() {
            let mut names = vec![stem.clone()];
            if let Some(h1) = doc
                .h1
                .as_deref()
                .filter(|h| is_identifier(h) && !h.eq_ignore_ascii_case(&stem))
            {
                names.push(h1.to_string());
            }
            names
        } else {
            front.alarms.clone()
        };

        let match_rules = front
            .match_rules
            .iter()
            .map(|pattern| {
                // Rules are case-insensitive unless they say otherwise: tickets are typed by
                // people and by machines with different habits.
                let anchored = if pattern.starts_with("(?") {
                    pattern.clone()
                } else {
                    format!("(?i){pattern}")
                };
                Regex::new(&anchored)
                    .map(|regex| MatchRule {
                        pattern: pattern.clone(),
                        regex,
                    })
                    .map_err(|source| RunbookError::Regex {
                        pattern: pattern.clone(),
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let url = page_url(front.url.as_deref(), &id, base_url)?;

        let first_steps = if front.first_steps.is_empty() {
            doc.section(STEP_SECTIONS)
                .map(|s| first_steps(&s.blocks))
                .unwrap_or_default()
        } else {
            front
                .first_steps
                .iter()
                .map(|text| Step::Text { text: text.clone() })
                .collect()
        };

        let meaning = doc
            .section(MEANING_SECTIONS)
            .map(|s| s.text.clone())
            .unwrap_or_default();

        let title = front
            .title
            .clone()
            .or_else(|| doc.h1.clone())
            .unwrap_or_else(|| stem.clone());

        Ok(Runbook {
            id,
            path: relative.to_path_buf(),
            title,
            alarms,
            not_alarms: front.not_alarms,
            match_rules,
            services: front.services,
            tags: front.tags,
            url,
            first_steps,
            meaning,
            headings: doc.sections.iter().map(|s| s.heading.clone()).collect(),
            body: doc.text.clone(),
            extra_keys: front.other.keys().cloned().collect(),
        })
    }

    /// The name of the runbook as an alert would carry it (the first alarm).
    pub fn primary_alarm(&self) -> &str {
        self.alarms
            .first()
            .map(String::as_str)
            .unwrap_or(&self.title)
    }
}

fn is_identifier(text: &str) -> bool {
    !text.is_empty()
        && !text.contains(char::is_whitespace)
        && text
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ':' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://runbooks.example.com/").unwrap()
    }

    proptest::proptest! {
        /// Any file, front matter or not, is read into a runbook or refused with a reason;
        /// never a panic.
        #[test]
        fn any_markdown_is_read_or_refused(
            front in proptest::option::of("[a-z_]{1,10}: .{0,40}"),
            body in "(#{0,3} .{0,60}\n|```[a-z]*\n.{0,40}\n```\n|- .{0,40}\n|.{0,80}\n){0,12}",
        ) {
            let source = match &front {
                Some(front) => format!("---\n{front}\n---\n{body}"),
                None => body.clone(),
            };
            match Runbook::parse(Path::new("fuzz.md"), &source, &base()) {
                Ok(runbook) => proptest::prop_assert!(runbook.first_steps.len() <= 3 * MAX_FIRST_STEPS),
                Err(error) => proptest::prop_assert!(!error.to_string().is_empty()),
            }
        }
    }

    #[test]
    fn a_step_that_introduces_a_command_keeps_it() {
        let text = |t: &str| Step::Text { text: t.into() };
        let code = |c: &str| Step::Code {
            lang: "sh".into(),
            code: c.into(),
        };
        let blocks = vec![
            text("Look at the events."),
            text("Then the logs."),
            text("Check the status of that node:"),
            code("kubectl describe node <node>"),
            text("A fourth step."),
        ];
        let steps = first_steps(&blocks);
        assert_eq!(steps, blocks[..4].to_vec());
        // A section of commands alone is capped too.
        let many: Vec<Step> = (0..20).map(|i| code(&format!("cmd {i}"))).collect();
        assert_eq!(first_steps(&many).len(), 3 * MAX_FIRST_STEPS);
    }

    #[test]
    fn wild_runbook_gets_names_from_stem_and_h1_and_steps_from_diagnosis() {
        let src = "---\ntitle: Node Down\nweight: 20\n---\n# KubeNodeDown\n\n## Meaning\n\nA node is gone.\n\n## Diagnosis\n\nCheck the node.\n\n```shell\nkubectl get nodes\n```\n\nThen the kubelet.\n\nThen more.\n";
        let rb = Runbook::parse(Path::new("kubernetes/NodeDown.md"), src, &base()).unwrap();
        assert_eq!(rb.id.as_str(), "kubernetes/NodeDown.md");
        assert_eq!(rb.title, "Node Down");
        assert_eq!(rb.alarms, vec!["NodeDown", "KubeNodeDown"]);
        assert_eq!(
            rb.url.as_str(),
            "https://runbooks.example.com/kubernetes/NodeDown"
        );
        // Three steps; the command belongs to the step that introduces it.
        assert_eq!(rb.first_steps.len(), MAX_FIRST_STEPS + 1);
        assert!(
            matches!(&rb.first_steps[1], Step::Code { code, .. } if code.contains("kubectl get nodes"))
        );
        assert!(rb.meaning.contains("A node is gone"));
    }

    #[test]
    fn runlink_front_matter_wins() {
        let src = "---\ntitle: Disk full\nalarms: [DiskFull, HostOutOfDiskSpace]\nurl: https://wiki.example.com/disk\nfirst_steps:\n  - Run `df -h`\n---\n# Disk\n";
        let rb = Runbook::parse(Path::new("disk.md"), src, &base()).unwrap();
        assert_eq!(rb.alarms, vec!["DiskFull", "HostOutOfDiskSpace"]);
        assert_eq!(rb.url.as_str(), "https://wiki.example.com/disk");
        assert_eq!(
            rb.first_steps,
            vec![Step::Text {
                text: "Run `df -h`".into()
            }]
        );
    }

    #[test]
    fn bad_match_rule_is_an_error_naming_the_pattern() {
        let src = "---\nmatch: ['disk(']\n---\n# X\n";
        let err = Runbook::parse(Path::new("x.md"), src, &base()).unwrap_err();
        assert!(err.to_string().contains("disk("), "{err}");
    }

    #[test]
    fn corpus_skips_non_runbooks_and_reports_broken_ones() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("README.md", "# readme");
        write("LICENSE", "license");
        write("team/_index.md", "# index");
        write("team/Good.md", "# Good\n");
        write("team/Broken.md", "---\nalarms: [\n---\n");
        let corpus = Corpus::load(dir.path(), &base()).unwrap();
        let ids: Vec<_> = corpus.runbooks.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, vec!["team/Good.md"]);
        assert_eq!(corpus.errors.len(), 1);
        assert!(corpus.errors[0].to_string().contains("Broken.md"));
    }
}
