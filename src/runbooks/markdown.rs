//! Reads the Markdown of a runbook into what matching and rendering need: the H1, the
//! sections with their blocks, and the plain text. Steps keep their inline code as Markdown
//! (backticks) because every destination renders that well enough.

use pulldown_cmark::{CodeBlockKind, Event, HeadingLevel, Parser, Tag, TagEnd};
use serde::{Deserialize, Serialize};

/// One diagnostic step, as shown in a comment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Step {
    Text { text: String },
    Code { lang: String, code: String },
}

#[derive(Debug, Default, Clone)]
pub(super) struct Section {
    pub heading: String,
    /// 2 for `##` and so on; 0 for the text before the first sub-heading (and 1 for an H1
    /// after the first).
    pub level: u8,
    /// The heading's anchor as GitHub makes it (`slug`), unique within the document.
    pub anchor: String,
    pub blocks: Vec<Step>,
    pub text: String,
}

#[derive(Debug, Default)]
pub(super) struct Document {
    pub h1: Option<String>,
    /// Content before the first sub-heading has an empty heading.
    pub sections: Vec<Section>,
    pub text: String,
}

impl Document {
    pub(super) fn section(&self, names: &[&str]) -> Option<&Section> {
        find(&self.sections, names)
    }
}

/// The first of `sections` whose heading starts with one of `names` (lowercase).
pub(super) fn find<'a>(sections: &'a [Section], names: &[&str]) -> Option<&'a Section> {
    sections.iter().find(|s| {
        let heading = s.heading.to_lowercase();
        names.iter().any(|n| heading.starts_with(n))
    })
}

/// GitHub's anchor for a heading's text: lowercased, every character that is not a letter,
/// a digit, `-`, `_` or a space dropped, spaces made `-`.
pub(super) fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[derive(Default)]
struct Walker {
    doc: Document,
    /// How often each slug was given out: a repeated heading gets `-1`, `-2`, ...
    slugs: std::collections::HashMap<String, usize>,
    heading: Option<(HeadingLevel, String)>,
    block: Option<String>,
    code: Option<(String, String)>,
    list_depth: usize,
    /// `<details>` blocks hold background reading, not steps.
    in_details: bool,
}

impl Walker {
    fn anchor(&mut self, heading: &str) -> String {
        let base = slug(heading);
        let mut candidate = base.clone();
        loop {
            let seen = self.slugs.entry(candidate.clone()).or_insert(0);
            if *seen == 0 {
                *seen = 1;
                return candidate;
            }
            let n = self.slugs.get(&base).copied().unwrap_or(1);
            self.slugs.insert(base.clone(), n + 1);
            candidate = format!("{base}-{n}");
        }
    }

    fn current(&mut self) -> &mut Section {
        if self.doc.sections.is_empty() {
            self.doc.sections.push(Section::default());
        }
        self.doc.sections.last_mut().expect("one section exists")
    }

    fn push_text(&mut self, text: &str) {
        if let Some((_, heading)) = &mut self.heading {
            heading.push_str(text);
            return;
        }
        if let Some((_, code)) = &mut self.code {
            code.push_str(text);
            return;
        }
        if let Some(block) = &mut self.block {
            block.push_str(text);
        }
        self.doc.text.push_str(text);
        let section = self.current();
        section.text.push_str(text);
    }

    fn finish_block(&mut self) {
        if let Some(block) = self.block.take() {
            let text = block.split_whitespace().collect::<Vec<_>>().join(" ");
            self.doc.text.push('\n');
            let in_details = self.in_details;
            let section = self.current();
            section.text.push('\n');
            if !text.is_empty() && !in_details {
                section.blocks.push(Step::Text { text });
            }
        }
    }
}

pub(super) fn parse(markdown: &str) -> Document {
    let mut w = Walker::default();
    for event in Parser::new(markdown) {
        match event {
            Event::Start(Tag::Heading { level, .. }) => {
                w.finish_block();
                w.heading = Some((level, String::new()));
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some((level, text)) = w.heading.take() {
                    let text = text.trim().to_string();
                    let anchor = w.anchor(&text);
                    if level == HeadingLevel::H1 && w.doc.h1.is_none() {
                        w.doc.h1 = Some(text.clone());
                    } else {
                        w.doc.sections.push(Section {
                            heading: text.clone(),
                            level: level as u8,
                            anchor,
                            ..Section::default()
                        });
                    }
                    w.doc.text.push_str(&text);
                    w.doc.text.push('\n');
                }
            }
            Event::Start(Tag::Paragraph) if w.list_depth == 0 => w.block = Some(String::new()),
            Event::End(TagEnd::Paragraph) if w.list_depth == 0 => w.finish_block(),
            Event::Start(Tag::List(_)) => w.list_depth += 1,
            Event::End(TagEnd::List(_)) => w.list_depth = w.list_depth.saturating_sub(1),
            Event::Start(Tag::Item) if w.list_depth == 1 => w.block = Some(String::new()),
            Event::End(TagEnd::Item) if w.list_depth == 1 => w.finish_block(),
            Event::Start(Tag::CodeBlock(kind)) => {
                w.finish_block();
                let lang = match kind {
                    CodeBlockKind::Fenced(lang) => {
                        lang.split_whitespace().next().unwrap_or("").to_string()
                    }
                    CodeBlockKind::Indented => String::new(),
                };
                w.code = Some((lang, String::new()));
            }
            Event::End(TagEnd::CodeBlock) => {
                if let Some((lang, code)) = w.code.take() {
                    let code = code.trim_end().to_string();
                    w.doc.text.push_str(&code);
                    w.doc.text.push('\n');
                    let in_details = w.in_details;
                    let section = w.current();
                    section.text.push_str(&code);
                    section.text.push('\n');
                    if !code.trim().is_empty() && !in_details {
                        section.blocks.push(Step::Code { lang, code });
                    }
                }
            }
            Event::Text(text) => w.push_text(&text),
            Event::Code(code) => {
                if w.heading.is_some() {
                    w.push_text(&code);
                } else {
                    w.push_text(&format!("`{code}`"));
                }
            }
            Event::SoftBreak | Event::HardBreak => w.push_text(" "),
            Event::Html(html) | Event::InlineHtml(html) => {
                let lower = html.to_lowercase();
                if lower.contains("<details") {
                    w.in_details = true;
                }
                if lower.contains("</details") {
                    w.in_details = false;
                }
            }
            _ => {}
        }
    }
    w.finish_block();
    w.doc
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNBOOK: &str = "# NodeDown\n\n## Meaning\n\nThe node is gone.\n\n<details>\n<summary>More</summary>\n\nBackground only.\n\n</details>\n\n## Diagnosis\n\n- Check `kubectl get nodes`\n- Look at the [console](http://x)\n\n```shell\nkubectl describe node $NODE\n```\n\n## Mitigation\n\nReboot.\n";

    #[test]
    fn h1_and_sections_are_found() {
        let doc = parse(RUNBOOK);
        assert_eq!(doc.h1.as_deref(), Some("NodeDown"));
        let headings: Vec<_> = doc.sections.iter().map(|s| s.heading.as_str()).collect();
        assert_eq!(headings, vec!["Meaning", "Diagnosis", "Mitigation"]);
    }

    #[test]
    fn list_items_and_code_blocks_become_steps() {
        let doc = parse(RUNBOOK);
        let diagnosis = doc.section(&["diagnosis"]).unwrap();
        assert_eq!(
            diagnosis.blocks,
            vec![
                Step::Text {
                    text: "Check `kubectl get nodes`".into()
                },
                Step::Text {
                    text: "Look at the console".into()
                },
                Step::Code {
                    lang: "shell".into(),
                    code: "kubectl describe node $NODE".into()
                },
            ]
        );
    }

    #[test]
    fn details_blocks_are_not_steps_but_are_text() {
        let doc = parse(RUNBOOK);
        let meaning = doc.section(&["meaning"]).unwrap();
        assert_eq!(meaning.blocks.len(), 1);
        assert!(meaning.text.contains("Background only"));
    }

    #[test]
    fn anchors_follow_githubs_slug_rule_and_repeats_are_numbered() {
        let doc = parse(
            "# Page\n\n## Loki Request Errors\n\n### Impact\n\n## `Mimir` (v2): Errors!\n\n### Impact\n\n### Impact\n",
        );
        let anchors: Vec<_> = doc
            .sections
            .iter()
            .map(|s| (s.level, s.anchor.as_str()))
            .collect();
        assert_eq!(
            anchors,
            vec![
                (2, "loki-request-errors"),
                (3, "impact"),
                (2, "mimir-v2-errors"),
                (3, "impact-1"),
                (3, "impact-2"),
            ]
        );
    }
}
