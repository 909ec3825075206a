//! Turns a match decision into the comment text for one destination, from a minijinja
//! template in `templates/`. Rendering happens before the comment enters the outbox, so every
//! retry posts the same bytes and the audit log holds exactly what was posted.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use minijinja::Environment;
use serde::Serialize;

use crate::matcher::{Candidate, Decision};
use crate::runbooks::Step;
use crate::signature::AlarmSignature;
use crate::ticket::Ticket;

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("template {name}: cannot read {path}: {source}")]
    Read {
        name: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("template {name}: {source:#}")]
    Template {
        name: String,
        #[source]
        source: minijinja::Error,
    },
}

/// The default template of each destination kind, all shipped in `templates/`.
#[cfg(test)]
const TEMPLATES: &[&str] = &[
    "github.md.j2",
    "jira.md.j2",
    "pagerduty.txt.j2",
    "opsgenie.txt.j2",
    "servicenow.txt.j2",
    "generic.md.j2",
];

/// The token every comment carries: how runlink recognises its own comments (loop guard) and
/// finds out whether an uncertain post did land. Markdown templates hide it in an HTML
/// comment (`marker`); plain-text destinations show it as a short reference line.
pub(crate) fn marker_token(delivery_key: &str) -> String {
    format!("{MARKER_PREFIX}{delivery_key}")
}

const MARKER_PREFIX: &str = "runlink:delivery=";

pub(crate) fn marker(delivery_key: &str) -> String {
    format!("<!-- {} -->", marker_token(delivery_key))
}

pub(crate) fn is_runlink_text(text: &str) -> bool {
    text.contains(MARKER_PREFIX)
}

#[derive(Debug)]
pub struct Renderer {
    env: Environment<'static>,
    no_match_text: String,
    /// Per template: whether a comment rendered for one ticket of a shared decision can be
    /// reused for the next by swapping the delivery key. False for a template that reads
    /// `ticket`, or whose output once failed the check in `render_shared`.
    reusable: HashMap<String, AtomicBool>,
    reused: Mutex<HashMap<ReuseKey, (Arc<Decision>, String)>>,
}

/// Template, the signature as shown, and the decision's address (kept alive by the entry,
/// so the address cannot be taken by another decision while the entry exists).
type ReuseKey = (String, String, usize);

/// Bound on reusable comments; past it they are simply forgotten.
const REUSE_MAX: usize = 1024;

/// Stands for the delivery key in a comment kept for reuse: the same length as a real key,
/// so a template that measures the marker sees the same thing.
const KEY_STANDIN: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";

#[derive(Serialize)]
struct MatchView<'a> {
    title: &'a str,
    url: String,
    why: String,
    confidence: f32,
    steps: Vec<StepView<'a>>,
}

/// A step with its number in the list: text steps are numbered 1, 2, 3 and the commands
/// that follow a step belong to it, so a list reads "1.", a code block, "2.".
#[derive(Serialize)]
struct StepView<'a> {
    #[serde(flatten)]
    step: &'a Step,
    #[serde(skip_serializing_if = "Option::is_none")]
    number: Option<usize>,
}

fn numbered(steps: &[Step]) -> Vec<StepView<'_>> {
    let mut next = 0;
    steps
        .iter()
        .map(|step| StepView {
            step,
            number: matches!(step, Step::Text { .. }).then(|| {
                next += 1;
                next
            }),
        })
        .collect()
}

impl<'a> MatchView<'a> {
    fn of(candidate: &'a Candidate, with_steps: bool) -> Self {
        MatchView {
            title: &candidate.runbook.title,
            url: candidate.runbook.url.to_string(),
            why: candidate.reason.describe(),
            confidence: candidate.confidence,
            steps: if with_steps {
                numbered(&candidate.runbook.first_steps)
            } else {
                Vec::new()
            },
        }
    }
}

/// How a template's output is read at its destination, from its name: `*.md.j2` is
/// Markdown (GitHub, Jira, generic chat tools), anything else plain text (notes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Markdown,
    Plain,
}

fn format_of(template: &str) -> Format {
    if template.ends_with(".md.j2") || template.ends_with(".md") {
        Format::Markdown
    } else {
        Format::Plain
    }
}

/// ServiceNow renders `[code]...[/code]` in a note as HTML.
static CODE_TAG: std::sync::LazyLock<regex::Regex> =
    std::sync::LazyLock::new(|| regex::Regex::new(r"(?i)\[(/?)code\]").unwrap());

/// Ticket text as the template sees it: whatever a sender wrote can only ever read as text
/// at the destination. In Markdown every character that could start markup (a link, an
/// image, HTML, a mention, emphasis) is escaped and backticks, which no escape survives
/// inside a code span, become quotes; in plain text ServiceNow's `[code]` tag is broken.
/// In both, a marker-shaped string loses its shape: only runlink writes markers.
fn escape_ticket_text(text: &str, format: Format) -> String {
    let text = text.replace(MARKER_PREFIX, "runlink:delivery =");
    match format {
        Format::Markdown => {
            let mut out = String::with_capacity(text.len() + text.len() / 4);
            for c in text.chars() {
                match c {
                    '`' => out.push('\''),
                    '\\' | '*' | '_' | '{' | '}' | '[' | ']' | '(' | ')' | '#' | '+' | '-'
                    | '.' | '!' | '|' | '<' | '>' | '@' | '~' | '&' | ':' | '=' => {
                        out.push('\\');
                        out.push(c);
                    }
                    c => out.push(c),
                }
            }
            out
        }
        Format::Plain => CODE_TAG.replace_all(&text, "[ ${1}code]").into_owned(),
    }
}

/// At most this much of the ticket's own text goes into a comment: a comment that has to be
/// cut to fit its destination loses ticket text first, never the runbook links or steps.
const TICKET_TEXT_MAX: usize = 300;

fn bounded(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().count() <= TICKET_TEXT_MAX {
        return text.into();
    }
    let mut cut: String = text.chars().take(TICKET_TEXT_MAX - 1).collect();
    cut.push('…');
    cut.into()
}

#[derive(Serialize)]
struct TicketView<'a> {
    id: &'a str,
    title: &'a str,
}

#[derive(Serialize)]
struct CommentContext<'a> {
    ticket: TicketView<'a>,
    signature: String,
    matches: Vec<MatchView<'a>>,
    closest: Vec<MatchView<'a>>,
    no_match_text: &'a str,
    marker: String,
    marker_text: String,
}

impl Renderer {
    /// Loads the named templates from `dir`; each must exist and compile, so a broken
    /// override fails the start-up rather than the first incident.
    pub fn load<S: AsRef<str>>(
        dir: &Path,
        no_match_text: &str,
        names: &[S],
    ) -> Result<Self, RenderError> {
        let mut env = Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .build()
                .expect("default delimiters are valid"),
        );
        for name in names {
            let name = name.as_ref();
            let path = dir.join(name);
            let source = std::fs::read_to_string(&path).map_err(|source| RenderError::Read {
                name: name.to_string(),
                path: path.display().to_string(),
                source,
            })?;
            env.add_template_owned(name.to_string(), source)
                .map_err(|source| RenderError::Template {
                    name: name.to_string(),
                    source,
                })?;
        }
        let reusable = names
            .iter()
            .map(|name| {
                let name = name.as_ref();
                let reads_ticket = env
                    .get_template(name)
                    .is_ok_and(|t| t.undeclared_variables(false).contains("ticket"));
                (name.to_string(), AtomicBool::new(!reads_ticket))
            })
            .collect();
        Ok(Renderer {
            env,
            no_match_text: no_match_text.to_string(),
            reusable,
            reused: Mutex::new(HashMap::new()),
        })
    }

    /// `render`, reusing the comment rendered for an earlier ticket of the same shared
    /// decision: in a storm thousands of tickets get the same runbooks, and rendering was a
    /// fifth of what acknowledging one cost. A decision nobody else holds (coalescing off)
    /// is rendered as usual. A kept comment differs from a fresh one only in its delivery
    /// key; that is checked against a real rendering when it is kept, and a template that
    /// fails the check is rendered afresh from then on.
    pub fn render_shared(
        &self,
        template: &str,
        ticket: &Ticket,
        signature: &AlarmSignature,
        decision: &Arc<Decision>,
        delivery_key: &str,
    ) -> Result<String, RenderError> {
        let reusable = self
            .reusable
            .get(template)
            .is_some_and(|r| r.load(Ordering::Relaxed));
        if !reusable || Arc::strong_count(decision) < 2 {
            return self.render(template, ticket, signature, decision, delivery_key);
        }
        let key = (
            template.to_string(),
            signature.to_string(),
            Arc::as_ptr(decision) as usize,
        );
        {
            let reused = self.reused.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, kept)) = reused.get(&key) {
                return Ok(kept.replace(KEY_STANDIN, delivery_key));
            }
        }
        let fresh = self.render(template, ticket, signature, decision, delivery_key)?;
        let kept = self.render(template, ticket, signature, decision, KEY_STANDIN)?;
        if kept.replace(KEY_STANDIN, delivery_key) != fresh {
            tracing::debug!(
                template,
                "comment depends on more than its marker; not reused"
            );
            if let Some(r) = self.reusable.get(template) {
                r.store(false, Ordering::Relaxed);
            }
            return Ok(fresh);
        }
        let mut reused = self.reused.lock().unwrap_or_else(|p| p.into_inner());
        if reused.len() >= REUSE_MAX {
            reused.clear();
        }
        reused.insert(key, (decision.clone(), kept));
        Ok(fresh)
    }

    pub fn render(
        &self,
        template: &str,
        ticket: &Ticket,
        signature: &AlarmSignature,
        decision: &Decision,
        delivery_key: &str,
    ) -> Result<String, RenderError> {
        let matches: Vec<MatchView<'_>> = decision
            .confident()
            .map(|c| MatchView::of(c, true))
            .collect();
        // With no confident answer, the nearest candidates are still shown, flagged as such:
        // an operator may recognise the right one where the matcher could not.
        let closest: Vec<MatchView<'_>> = if matches.is_empty() {
            decision
                .candidates
                .iter()
                .map(|c| MatchView::of(c, false))
                .collect()
        } else {
            Vec::new()
        };
        let tmpl = self
            .env
            .get_template(template)
            .map_err(|source| RenderError::Template {
                name: template.to_string(),
                source,
            })?;
        let format = format_of(template);
        tmpl.render(minijinja::value::Serde(CommentContext {
            ticket: TicketView {
                id: &escape_ticket_text(ticket.id.as_str(), format),
                title: &escape_ticket_text(&bounded(&ticket.title), format),
            },
            signature: escape_ticket_text(&bounded(&signature.to_string()), format),
            matches,
            closest,
            no_match_text: &self.no_match_text,
            marker: marker(delivery_key),
            marker_text: marker_token(delivery_key),
        }))
        .map_err(|source| RenderError::Template {
            name: template.to_string(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::{Matcher, MatcherSettings};
    use crate::runbooks::Runbook;
    use crate::search::RunbookIndex;
    use crate::signature::Normalizer;
    use std::sync::Arc;

    fn setup() -> (Renderer, Matcher) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let renderer = Renderer::load(&dir, "Nothing found.", TEMPLATES).unwrap();
        let base = url::Url::parse("https://rb.example/").unwrap();
        let rb = Runbook::parse(
            Path::new("disk.md"),
            "---\ntitle: Disk full\nalarms: [DiskFull]\n---\n# Disk\n\n## Diagnosis\n\n- Run `df -h`\n\n```sh\ndu -xh / | sort -h\n```\n\n- Then check growth.\n",
            &base,
        )
        .unwrap();
        let index = Arc::new(RunbookIndex::build(vec![rb]).unwrap());
        let matcher = Matcher::new(
            index,
            MatcherSettings {
                top_k: 3,
                min_confidence: 0.5,
            },
        );
        (renderer, matcher)
    }

    fn ticket(title: &str) -> Ticket {
        crate::ingest::manual::ManualTicket {
            title: title.into(),
            ..Default::default()
        }
        .into_ticket(0)
    }

    fn render(title: &str) -> String {
        let (renderer, matcher) = setup();
        let t = ticket(title);
        let sig = AlarmSignature::of(&t, &Normalizer::default());
        let decision = matcher.decide(&sig, 3).unwrap();
        renderer
            .render("github.md.j2", &t, &sig, &decision, "k123")
            .unwrap()
    }

    #[test]
    fn confident_match_shows_link_steps_and_marker() {
        let out = render("[FIRING:1] DiskFull");
        assert!(
            out.contains("**[Disk full](https://rb.example/disk)**"),
            "{out}"
        );
        assert!(
            out.contains("\n\nFirst steps:\n\n1. Run `df -h`\n"),
            "{out}"
        );
        assert!(out.contains("```sh\ndu -xh / | sort -h\n```"), "{out}");
        assert!(
            out.ends_with("<!-- runlink:delivery=k123 -->\n")
                || out.ends_with("<!-- runlink:delivery=k123 -->"),
            "{out}"
        );
        assert!(is_runlink_text(&out));
    }

    #[test]
    fn no_confident_match_says_so_and_lists_no_steps() {
        let out = render("Payment invoices are duplicated");
        assert!(out.contains("No runbook found\n\nNothing found."), "{out}");
        assert!(!out.contains("First steps"), "{out}");
        assert!(out.contains("<!-- runlink:delivery=k123 -->"), "{out}");
    }

    #[test]
    fn ticket_text_cannot_become_markup_mentions_links_or_markers() {
        use pulldown_cmark::{Event, Parser, Tag};
        let (renderer, matcher) = setup();
        let hostile = "Disk full `x` @acme/oncall [click](javascript:alert(1)) \
                       <img src=x onerror=alert(1)> <!-- runlink:delivery=deadbeef --> \
                       [code]<b>x</b>[/code]";
        let t = ticket(hostile);
        let sig = AlarmSignature::of(&t, &Normalizer::default());
        let decision = matcher.decide(&sig, 3).unwrap();
        for name in ["github.md.j2", "generic.md.j2", "jira.md.j2"] {
            let out = renderer.render(name, &t, &sig, &decision, "k123").unwrap();
            let mut html = Vec::new();
            for event in Parser::new(&out) {
                match event {
                    Event::Start(Tag::Link { dest_url, .. }) => {
                        assert!(
                            dest_url.starts_with("https://rb.example/"),
                            "{name}: {dest_url}"
                        )
                    }
                    Event::Start(Tag::Image { .. }) => panic!("{name}: an image: {out}"),
                    Event::Html(h) | Event::InlineHtml(h) => html.push(h.to_string()),
                    _ => {}
                }
            }
            let expected: Vec<String> = if name == "jira.md.j2" {
                Vec::new()
            } else {
                vec!["<!-- runlink:delivery=k123 -->".to_string()]
            };
            // The template's own tags are its own; nothing else may be HTML.
            let html: Vec<String> = html
                .iter()
                .map(|h| h.trim().to_string())
                .filter(|h| h != "<sub>" && h != "</sub>")
                .collect();
            assert_eq!(html, expected, "{name}: {out}");
            assert!(!out.contains("deadbeef -->"), "{name}: {out}");
            assert!(
                out.match_indices('@')
                    .all(|(i, _)| out[..i].ends_with('\\')),
                "{name}: an unescaped mention: {out}"
            );
        }
        let out = renderer
            .render("servicenow.txt.j2", &t, &sig, &decision, "k123")
            .unwrap();
        assert!(!out.to_lowercase().contains("[code]"), "{out}");
        assert!(!out.contains("runlink:delivery=deadbeef"), "{out}");
        assert!(out.contains("runlink:delivery=k123"), "{out}");
    }

    #[test]
    fn steps_are_numbered_without_the_commands_between_them() {
        let steps = vec![
            Step::Text {
                text: "Check the node:".into(),
            },
            Step::Code {
                lang: "sh".into(),
                code: "kubectl get nodes".into(),
            },
            Step::Text {
                text: "Then the kubelet.".into(),
            },
        ];
        let numbers: Vec<Option<usize>> = numbered(&steps).iter().map(|s| s.number).collect();
        assert_eq!(numbers, vec![Some(1), None, Some(2)]);
        let json = serde_json::to_value(numbered(&steps)).unwrap();
        assert_eq!(json[2]["number"], 2);
        assert_eq!(json[2]["kind"], "text");
        assert_eq!(json[1]["code"], "kubectl get nodes");
    }

    #[test]
    fn every_default_template_carries_the_marker_link_and_steps() {
        let (renderer, matcher) = setup();
        let t = ticket("[FIRING:1] DiskFull");
        let sig = AlarmSignature::of(&t, &Normalizer::default());
        let decision = matcher.decide(&sig, 3).unwrap();
        for name in TEMPLATES {
            let out = renderer.render(name, &t, &sig, &decision, "k123").unwrap();
            assert!(out.contains("https://rb.example/disk"), "{name}: {out}");
            assert!(out.contains("df -h"), "{name}: {out}");
            assert!(out.contains("du -xh / | sort -h"), "{name}: {out}");
            // The command belongs to the first step: the next one is the second.
            assert!(out.contains("2. Then check growth."), "{name}: {out}");
            assert!(!out.contains("3. "), "{name}: {out}");
            // Jira carries the marker as a comment property instead.
            if *name != "jira.md.j2" {
                assert!(out.contains(&marker_token("k123")), "{name}: {out}");
            }
        }
    }

    /// A renderer over one custom template, in a directory of its own.
    fn custom(source: &str) -> (tempfile::TempDir, Renderer) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("custom.j2"), source).unwrap();
        let renderer = Renderer::load(dir.path(), "Nothing found.", &["custom.j2"]).unwrap();
        (dir, renderer)
    }

    /// Renders both tickets with one shared decision (as the coalescer hands it out) and
    /// checks each against a rendering of its own.
    fn shared_and_fresh(renderer: &Renderer, template: &str, titles: [&str; 2]) -> Vec<String> {
        let (_, matcher) = setup();
        let first = ticket(titles[0]);
        let sig = AlarmSignature::of(&first, &Normalizer::default());
        let decision = Arc::new(matcher.decide(&sig, 3).unwrap());
        let _coalescer_holds_it = decision.clone();
        let mut outs = Vec::new();
        for (i, title) in titles.iter().enumerate() {
            let t = ticket(title);
            let key = format!("{i:032x}");
            let shared = renderer
                .render_shared(template, &t, &sig, &decision, &key)
                .unwrap();
            let fresh = renderer
                .render(template, &t, &sig, &decision, &key)
                .unwrap();
            assert_eq!(shared, fresh, "ticket {i}");
            outs.push(shared);
        }
        outs
    }

    #[test]
    fn a_shared_decision_renders_once_and_each_ticket_gets_its_own_marker() {
        let (renderer, _) = setup();
        let outs = shared_and_fresh(
            &renderer,
            "github.md.j2",
            ["[FIRING:1] DiskFull", "[FIRING:1] DiskFull"],
        );
        assert!(
            outs[0].contains(&marker(&format!("{:032x}", 0))),
            "{}",
            outs[0]
        );
        assert!(
            outs[1].contains(&marker(&format!("{:032x}", 1))),
            "{}",
            outs[1]
        );
        assert_eq!(renderer.reused.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_template_that_reads_the_ticket_is_rendered_for_each() {
        let (_dir, renderer) = custom("{{ ticket.title }} {{ marker }}");
        let outs = shared_and_fresh(
            &renderer,
            "custom.j2",
            ["[FIRING:1] DiskFull on a", "[FIRING:1] DiskFull on b"],
        );
        assert!(
            outs[1].starts_with("[FIRING:1] DiskFull on b"),
            "{}",
            outs[1]
        );
        assert!(renderer.reused.lock().unwrap().is_empty());
    }

    #[test]
    fn a_template_that_changes_the_marker_fails_the_check_and_is_not_reused() {
        let (_dir, renderer) = custom("{{ marker_text|upper }}");
        let outs = shared_and_fresh(
            &renderer,
            "custom.j2",
            ["[FIRING:1] DiskFull", "[FIRING:1] DiskFull"],
        );
        assert_eq!(outs[1], marker_token(&format!("{:032x}", 1)).to_uppercase());
        assert!(renderer.reused.lock().unwrap().is_empty());
        assert!(!renderer.reusable["custom.j2"].load(Ordering::Relaxed));
    }
}
