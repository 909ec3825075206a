//! What a ticket supplies, made safe for the destination's format and bounded in length,
//! before any template sees it.

use super::MARKER_PREFIX;

/// How a template's output is read at its destination, from its name: `*.md.j2` is
/// Markdown (GitHub, Jira, generic chat tools), anything else plain text (notes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Markdown,
    Plain,
}

pub(super) fn format_of(template: &str) -> Format {
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
pub(super) fn escape_ticket_text(text: &str, format: Format) -> String {
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

pub(super) fn bounded(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().count() <= TICKET_TEXT_MAX {
        return text.into();
    }
    let mut cut: String = text.chars().take(TICKET_TEXT_MAX - 1).collect();
    cut.push('…');
    cut.into()
}
