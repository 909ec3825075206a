//! The Jira template is Markdown; Jira reads neither Markdown nor HTML. Cloud (API v3) takes
//! an Atlassian Document Format tree, Server/Data Center (API v2) takes wiki markup. Both are
//! produced here from the same Markdown with pulldown-cmark, deterministically, so a retry
//! posts the same document.

use pulldown_cmark::{CodeBlockKind, Event, HeadingLevel, Parser, Tag, TagEnd};
use serde_json::{Map, Value, json};

/// A node being built: its ADF object and the children collected so far.
struct Open {
    node: Map<String, Value>,
    content: Vec<Value>,
}

impl Open {
    fn new(kind: &str) -> Self {
        let mut node = Map::new();
        node.insert("type".into(), kind.into());
        Open {
            node,
            content: Vec::new(),
        }
    }

    fn with_attrs(kind: &str, attrs: Value) -> Self {
        let mut open = Open::new(kind);
        open.node.insert("attrs".into(), attrs);
        open
    }

    fn kind(&self) -> &str {
        self.node["type"].as_str().unwrap_or_default()
    }

    fn finish(mut self) -> Value {
        self.node
            .insert("content".into(), Value::Array(self.content));
        Value::Object(self.node)
    }
}

/// Nodes whose children are blocks: inline content arriving there (a tight list item) is
/// wrapped in a paragraph first, as ADF requires.
fn takes_blocks(kind: &str) -> bool {
    matches!(kind, "doc" | "listItem" | "blockquote")
}

struct AdfBuilder {
    stack: Vec<Open>,
    marks: Vec<Value>,
    /// The paragraph opened implicitly for inline content in a block container.
    implicit: bool,
}

impl AdfBuilder {
    fn top(&mut self) -> &mut Open {
        self.stack.last_mut().expect("the doc node is never popped")
    }

    fn open(&mut self, node: Open) {
        self.close_implicit();
        self.stack.push(node);
    }

    fn close(&mut self) {
        self.close_implicit();
        if self.stack.len() > 1 {
            let node = self.stack.pop().expect("checked above").finish();
            self.push_child(node);
        }
    }

    fn close_implicit(&mut self) {
        if self.implicit {
            self.implicit = false;
            let node = self.stack.pop().expect("implicit paragraph").finish();
            self.push_child(node);
        }
    }

    fn push_child(&mut self, node: Value) {
        // ADF forbids empty paragraphs and headings in most renderers' eyes; drop them.
        let empty = node["content"].as_array().is_some_and(|c| c.is_empty())
            && matches!(node["type"].as_str(), Some("paragraph" | "heading"));
        if !empty {
            self.top().content.push(node);
        }
    }

    fn inline(&mut self, node: Value) {
        if takes_blocks(self.top().kind()) {
            self.stack.push(Open::new("paragraph"));
            self.implicit = true;
        }
        self.top().content.push(node);
    }

    fn text(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        if self.top().kind() == "codeBlock" {
            self.top()
                .content
                .push(json!({"type": "text", "text": text}));
            return;
        }
        let mut node = json!({"type": "text", "text": text});
        if !self.marks.is_empty() {
            node["marks"] = Value::Array(self.marks.clone());
        }
        self.inline(node);
    }
}

/// Markdown to an ADF `doc` (version 1).
pub fn to_adf(markdown: &str) -> Value {
    let mut b = AdfBuilder {
        stack: vec![Open::new("doc")],
        marks: Vec::new(),
        implicit: false,
    };
    for event in Parser::new(markdown) {
        match event {
            Event::Start(tag) => match tag {
                Tag::Paragraph => b.open(Open::new("paragraph")),
                Tag::Heading { level, .. } => {
                    let level = heading_number(level);
                    b.open(Open::with_attrs("heading", json!({"level": level})))
                }
                Tag::BlockQuote(_) => b.open(Open::new("blockquote")),
                Tag::CodeBlock(kind) => {
                    let language = match kind {
                        CodeBlockKind::Fenced(lang) if !lang.is_empty() => lang.to_string(),
                        _ => String::new(),
                    };
                    let node = if language.is_empty() {
                        Open::new("codeBlock")
                    } else {
                        Open::with_attrs("codeBlock", json!({"language": language}))
                    };
                    b.open(node)
                }
                Tag::List(None) => b.open(Open::new("bulletList")),
                Tag::List(Some(start)) => {
                    b.open(Open::with_attrs("orderedList", json!({"order": start})))
                }
                Tag::Item => b.open(Open::new("listItem")),
                Tag::Emphasis => b.marks.push(json!({"type": "em"})),
                Tag::Strong => b.marks.push(json!({"type": "strong"})),
                Tag::Strikethrough => b.marks.push(json!({"type": "strike"})),
                Tag::Link { dest_url, .. } => b
                    .marks
                    .push(json!({"type": "link", "attrs": {"href": dest_url.to_string()}})),
                _ => {}
            },
            Event::End(tag) => match tag {
                TagEnd::Paragraph
                | TagEnd::Heading(_)
                | TagEnd::BlockQuote(_)
                | TagEnd::CodeBlock
                | TagEnd::List(_)
                | TagEnd::Item => {
                    if tag == TagEnd::CodeBlock {
                        trim_code_newline(b.top());
                    }
                    b.close()
                }
                TagEnd::Emphasis | TagEnd::Strong | TagEnd::Strikethrough | TagEnd::Link => {
                    b.marks.pop();
                }
                _ => {}
            },
            Event::Text(text) => b.text(&text),
            Event::Code(code) => {
                // ADF lets `code` combine with `link` only.
                let saved = std::mem::take(&mut b.marks);
                b.marks = saved
                    .iter()
                    .filter(|m| m["type"] == "link")
                    .cloned()
                    .chain([json!({"type": "code"})])
                    .collect();
                b.text(&code);
                b.marks = saved;
            }
            Event::SoftBreak => b.text(" "),
            Event::HardBreak => b.inline(json!({"type": "hardBreak"})),
            Event::Rule => {
                b.close_implicit();
                b.top().content.push(json!({"type": "rule"}));
            }
            // Hidden HTML (the delivery marker) has no ADF form; Jira gets it as a property.
            _ => {}
        }
    }
    b.close_implicit();
    while b.stack.len() > 1 {
        b.close();
    }
    let doc = b.stack.pop().expect("doc").finish();
    let mut doc = doc;
    doc["version"] = json!(1);
    doc
}

fn trim_code_newline(open: &mut Open) {
    if let Some(Value::String(text)) = open.content.last_mut().and_then(|n| n.get_mut("text")) {
        while text.ends_with('\n') {
            text.pop();
        }
    }
    open.content
        .retain(|n| n["text"].as_str().is_none_or(|t| !t.is_empty()));
}

fn heading_number(level: HeadingLevel) -> u8 {
    match level {
        HeadingLevel::H1 => 1,
        HeadingLevel::H2 => 2,
        HeadingLevel::H3 => 3,
        HeadingLevel::H4 => 4,
        HeadingLevel::H5 => 5,
        HeadingLevel::H6 => 6,
    }
}

/// Checks the parts of the ADF schema a document from `to_adf` can touch: node types, which
/// children each may hold, non-empty text, and marks. A comment Jira would reject with 400 is
/// caught before it is sent.
pub fn validate_adf(doc: &Value) -> Result<(), String> {
    if doc["type"] != "doc" || doc["version"] != 1 {
        return Err("root must be {type: doc, version: 1}".into());
    }
    validate_children(doc, "doc")
}

fn allowed_children(kind: &str) -> &'static [&'static str] {
    const BLOCKS: &[&str] = &[
        "paragraph",
        "heading",
        "bulletList",
        "orderedList",
        "codeBlock",
        "blockquote",
        "rule",
    ];
    match kind {
        "doc" => BLOCKS,
        "paragraph" | "heading" => &["text", "hardBreak"],
        "bulletList" | "orderedList" => &["listItem"],
        "listItem" => &["paragraph", "bulletList", "orderedList", "codeBlock"],
        "blockquote" => &["paragraph", "bulletList", "orderedList", "codeBlock"],
        "codeBlock" => &["text"],
        _ => &[],
    }
}

fn validate_children(node: &Value, kind: &str) -> Result<(), String> {
    let Some(content) = node.get("content") else {
        return match kind {
            "rule" | "hardBreak" | "text" => Ok(()),
            _ => Err(format!("{kind} has no content array")),
        };
    };
    let content = content
        .as_array()
        .ok_or_else(|| format!("{kind}.content is not an array"))?;
    if matches!(kind, "bulletList" | "orderedList" | "listItem") && content.is_empty() {
        return Err(format!("{kind} is empty"));
    }
    for child in content {
        let child_kind = child["type"]
            .as_str()
            .ok_or_else(|| format!("a child of {kind} has no type"))?;
        if !allowed_children(kind).contains(&child_kind) {
            return Err(format!("{child_kind} is not allowed in {kind}"));
        }
        match child_kind {
            "text" => validate_text(child, kind)?,
            "heading" => {
                let level = child["attrs"]["level"].as_u64().unwrap_or(0);
                if !(1..=6).contains(&level) {
                    return Err(format!("heading level {level}"));
                }
                validate_children(child, child_kind)?;
            }
            _ => validate_children(child, child_kind)?,
        }
    }
    Ok(())
}

fn validate_text(node: &Value, parent: &str) -> Result<(), String> {
    if node["text"].as_str().is_none_or(str::is_empty) {
        return Err(format!("empty text node in {parent}"));
    }
    let Some(marks) = node.get("marks") else {
        return Ok(());
    };
    if parent == "codeBlock" {
        return Err("text in a codeBlock takes no marks".into());
    }
    let marks = marks.as_array().ok_or("marks is not an array")?;
    let kinds: Vec<&str> = marks.iter().filter_map(|m| m["type"].as_str()).collect();
    for (mark, kind) in marks.iter().zip(&kinds) {
        match *kind {
            "strong" | "em" | "strike" => {}
            "code" if kinds.iter().all(|k| matches!(*k, "code" | "link")) => {}
            "code" => return Err("code combines only with link".into()),
            "link" => {
                let href = mark["attrs"]["href"].as_str().unwrap_or_default();
                if href.is_empty() {
                    return Err("link without href".into());
                }
            }
            other => return Err(format!("unknown mark {other}")),
        }
    }
    Ok(())
}

/// Markdown to Jira wiki markup (Server/Data Center).
pub fn to_wiki(markdown: &str) -> String {
    let mut out = String::new();
    let mut lists: Vec<char> = Vec::new();
    let mut link: Option<String> = None;
    let mut link_text = String::new();
    let mut in_code = false;
    for event in Parser::new(markdown) {
        let sink = |out: &mut String, link_text: &mut String, link: &Option<String>, s: &str| {
            if link.is_some() {
                link_text.push_str(s);
            } else {
                out.push_str(s);
            }
        };
        match event {
            Event::Start(tag) => match tag {
                Tag::Heading { level, .. } => {
                    out.push_str(&format!("h{}. ", heading_number(level)))
                }
                Tag::CodeBlock(kind) => {
                    in_code = true;
                    match kind {
                        CodeBlockKind::Fenced(lang) if !lang.is_empty() => {
                            out.push_str(&format!("{{code:{lang}}}\n"))
                        }
                        _ => out.push_str("{code}\n"),
                    }
                }
                Tag::List(start) => {
                    lists.push(if start.is_some() { '#' } else { '*' });
                }
                Tag::Item => {
                    let bullets: String = lists.iter().collect();
                    out.push_str(&bullets);
                    out.push(' ');
                }
                Tag::Emphasis => sink(&mut out, &mut link_text, &link, "_"),
                Tag::Strong => sink(&mut out, &mut link_text, &link, "*"),
                Tag::Link { dest_url, .. } => {
                    link = Some(dest_url.to_string());
                    link_text.clear();
                }
                Tag::BlockQuote(_) => out.push_str("bq. "),
                _ => {}
            },
            Event::End(tag) => match tag {
                TagEnd::Paragraph | TagEnd::Heading(_) => {
                    out.push('\n');
                    if lists.is_empty() {
                        out.push('\n');
                    }
                }
                TagEnd::CodeBlock => {
                    in_code = false;
                    if !out.ends_with('\n') {
                        out.push('\n');
                    }
                    out.push_str("{code}\n\n");
                }
                TagEnd::List(_) => {
                    lists.pop();
                    if lists.is_empty() {
                        out.push('\n');
                    }
                }
                TagEnd::Item if !out.ends_with('\n') => out.push('\n'),
                TagEnd::Emphasis => sink(&mut out, &mut link_text, &link, "_"),
                TagEnd::Strong => sink(&mut out, &mut link_text, &link, "*"),
                TagEnd::Link => {
                    if let Some(url) = link.take() {
                        out.push_str(&format!(
                            "[{}|{url}]",
                            link_text.replace(['[', ']', '|'], "")
                        ));
                    }
                }
                _ => {}
            },
            Event::Text(text) if in_code => out.push_str(&text),
            Event::Text(text) => sink(&mut out, &mut link_text, &link, &escape_wiki(&text)),
            Event::Code(code) => {
                let code = format!("{{{{{}}}}}", code.replace('}', "\\}"));
                sink(&mut out, &mut link_text, &link, &code)
            }
            Event::SoftBreak => sink(&mut out, &mut link_text, &link, " "),
            Event::HardBreak => out.push_str("\\\\\n"),
            Event::Rule => out.push_str("----\n"),
            _ => {}
        }
    }
    out.trim_end().to_string()
}

/// Characters that would start markup in the middle of plain text.
fn escape_wiki(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '{' | '}' | '[' | ']' | '|') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "## Runbook for this alarm\n\n**[Disk full](https://rb.example/disk)**\n\nFirst steps:\n\n1. Run `df -h` on the host\n2. Check *growth*\n\n```sh\ndu -xh / | sort -h\n```\n\n- [Other](https://rb.example/other)\n\n<!-- hidden -->\n";

    #[test]
    fn markdown_becomes_a_valid_adf_document() {
        let doc = to_adf(SAMPLE);
        validate_adf(&doc).unwrap();
        let content = doc["content"].as_array().unwrap();
        let kinds: Vec<&str> = content
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "heading",
                "paragraph",
                "paragraph",
                "orderedList",
                "codeBlock",
                "bulletList"
            ]
        );
        let link = &content[1]["content"][0];
        assert_eq!(link["text"], "Disk full");
        assert_eq!(link["marks"][0]["type"], "strong");
        assert_eq!(link["marks"][1]["attrs"]["href"], "https://rb.example/disk");
        let item = &content[3]["content"][0];
        assert_eq!(item["type"], "listItem");
        assert_eq!(item["content"][0]["type"], "paragraph");
        assert_eq!(item["content"][0]["content"][1]["marks"][0]["type"], "code");
        assert_eq!(content[4]["attrs"]["language"], "sh");
        assert_eq!(content[4]["content"][0]["text"], "du -xh / | sort -h");
        assert!(!doc.to_string().contains("hidden"));
    }

    #[test]
    fn the_validator_rejects_what_jira_would() {
        let bad = json!({"type": "doc", "version": 1, "content": [{"type": "text", "text": "x"}]});
        assert!(validate_adf(&bad).is_err());
        let empty_text = json!({"type": "doc", "version": 1, "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": ""}]}]});
        assert!(validate_adf(&empty_text).is_err());
        let code_strong = json!({"type": "doc", "version": 1, "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": "x",
              "marks": [{"type": "code"}, {"type": "strong"}]}]}]});
        assert!(validate_adf(&code_strong).is_err());
    }

    #[test]
    fn markdown_becomes_wiki_markup() {
        let wiki = to_wiki(SAMPLE);
        assert!(wiki.starts_with("h2. Runbook for this alarm\n"), "{wiki}");
        assert!(
            wiki.contains("*[Disk full|https://rb.example/disk]*"),
            "{wiki}"
        );
        assert!(
            wiki.contains("# Run {{df -h}} on the host\n# Check _growth_\n"),
            "{wiki}"
        );
        assert!(
            wiki.contains("{code:sh}\ndu -xh / | sort -h\n{code}"),
            "{wiki}"
        );
        assert!(
            wiki.contains("* [Other|https://rb.example/other]"),
            "{wiki}"
        );
        assert!(!wiki.contains("hidden"), "{wiki}");
    }
}
