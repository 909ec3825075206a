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

mod escape;
mod marker;
#[cfg(test)]
mod tests;

pub use marker::MarkerKey;
pub(crate) use marker::{MARKER_PREFIX, lookup_token};

use escape::{bounded, escape_ticket_text, format_of};

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

#[derive(Debug)]
pub struct Renderer {
    env: Environment<'static>,
    no_match_text: String,
    /// Per template: whether a comment rendered for one ticket of a shared decision can be
    /// reused for the next by swapping the delivery key. False for a template that reads
    /// `ticket`, or whose output once failed the check in `render_shared`.
    reusable: HashMap<String, AtomicBool>,
    reused: Mutex<HashMap<ReuseKey, (Arc<Decision>, String)>>,
    marker: MarkerKey,
}

/// Template, the signature as shown, and the decision's address (kept alive by the entry,
/// so the address cannot be taken by another decision while the entry exists).
type ReuseKey = (String, String, usize);

/// Of a ticket's title, this much goes into a folded alert's line.
const SUMMARY_TITLE_MAX: usize = 120;

/// Bound on reusable comments; past it they are simply forgotten.
const REUSE_MAX: usize = 1024;

/// Stands for the delivery key and its tag in a comment kept for reuse: the same length as
/// a real one, so a template that measures the marker sees the same thing.
const SIGNED_STANDIN: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0.a5b4c3d2e1f00f1e";

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

/// The templates that ship in `templates/`, compiled in.
fn bundled(name: &str) -> Option<&'static str> {
    Some(match name {
        "github.md.j2" => include_str!("../../templates/github.md.j2"),
        "generic.md.j2" => include_str!("../../templates/generic.md.j2"),
        "jira.md.j2" => include_str!("../../templates/jira.md.j2"),
        "opsgenie.txt.j2" => include_str!("../../templates/opsgenie.txt.j2"),
        "pagerduty.txt.j2" => include_str!("../../templates/pagerduty.txt.j2"),
        "servicenow.txt.j2" => include_str!("../../templates/servicenow.txt.j2"),
        _ => return None,
    })
}

impl Renderer {
    /// Loads the named templates from `dir`; each must exist and compile, so a broken
    /// override fails the start-up rather than the first incident.
    pub fn load<S: AsRef<str>>(
        dir: &Path,
        no_match_text: &str,
        names: &[S],
        marker: MarkerKey,
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
            let source = match std::fs::read_to_string(&path) {
                Ok(source) => source,
                // A templates directory overrides the files it has; the others are the
                // bundled ones.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => bundled(name)
                    .map(str::to_string)
                    .ok_or_else(|| RenderError::Read {
                        name: name.to_string(),
                        path: path.display().to_string(),
                        source: error,
                    })?,
                Err(source) => {
                    return Err(RenderError::Read {
                        name: name.to_string(),
                        path: path.display().to_string(),
                        source,
                    });
                }
            };
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
            marker,
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
                return Ok(kept.replace(SIGNED_STANDIN, &self.marker.signed(delivery_key)));
            }
        }
        let signed = self.marker.signed(delivery_key);
        let fresh = self.render_signed(template, ticket, signature, decision, &signed)?;
        let kept = self.render_signed(template, ticket, signature, decision, SIGNED_STANDIN)?;
        if kept.replace(SIGNED_STANDIN, &signed) != fresh {
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

    /// One line for a comment that lists alerts folded into it (the reply target had its
    /// comments): the ticket's title and its best confident runbook, in the template's
    /// format, escaped like the comment itself.
    pub fn summary(&self, template: &str, ticket: &Ticket, decision: &Decision) -> String {
        let format = format_of(template);
        let title: String = ticket.title.chars().take(SUMMARY_TITLE_MAX).collect();
        let title = escape_ticket_text(&title, format);
        match (decision.confident().next(), format) {
            (Some(best), escape::Format::Markdown) => {
                format!("{title} → [{}]({})", best.runbook.title, best.runbook.url)
            }
            (Some(best), escape::Format::Plain) => {
                format!("{title} → {} {}", best.runbook.title, best.runbook.url)
            }
            (None, _) => format!("{title}: no confident runbook"),
        }
    }

    pub fn render(
        &self,
        template: &str,
        ticket: &Ticket,
        signature: &AlarmSignature,
        decision: &Decision,
        delivery_key: &str,
    ) -> Result<String, RenderError> {
        let signed = self.marker.signed(delivery_key);
        self.render_signed(template, ticket, signature, decision, &signed)
    }

    /// `render` with the marker's key and tag given (`MarkerKey::signed`, or a stand-in).
    fn render_signed(
        &self,
        template: &str,
        ticket: &Ticket,
        signature: &AlarmSignature,
        decision: &Decision,
        signed: &str,
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
            marker: format!("<!-- {MARKER_PREFIX}{signed} -->"),
            marker_text: format!("{MARKER_PREFIX}{signed}"),
        }))
        .map_err(|source| RenderError::Template {
            name: template.to_string(),
            source,
        })
    }
}
