//! Jira Cloud webhooks. `jira:issue_created` becomes a ticket answered with a comment on the
//! issue; `comment_created` whose first line is a `/runlink` command becomes feedback; every
//! other event, runlink's own comments included, is acknowledged and ignored. The description arrives as a plain string (webhooks registered in
//! the admin UI) or as an Atlassian Document Format tree (REST-registered webhooks); both are
//! read to plain text here. Signatures are `X-Hub-Signature: sha256=<hex>`; retries carry the
//! same `X-Atlassian-Webhook-Identifier`.

use std::collections::BTreeMap;

use actix_web::HttpRequest;
use serde::Deserialize;

use super::{Inbound, IngestError, Source, invalid_field, parse_json};
use crate::config::Secret;
use crate::ticket::{ReplyTarget, SourceKind, Ticket, TicketId};

const SIGNATURE: &str = "X-Hub-Signature";
const IDENTIFIER: &str = "X-Atlassian-Webhook-Identifier";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    webhook_event: String,
    #[serde(default)]
    issue: Option<Issue>,
}

/// Which event a body is, read before the rest: each event has its own shape.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventKind {
    webhook_event: String,
}

/// `comment_created`: only the issue's key is needed (runlink finds the ticket it stored).
#[derive(Debug, Deserialize)]
struct CommentEnvelope {
    comment: JiraComment,
    issue: IssueKey,
}

#[derive(Debug, Deserialize)]
struct IssueKey {
    key: String,
}

#[derive(Debug, Deserialize)]
struct JiraComment {
    #[serde(default)]
    body: Option<Description>,
    #[serde(default)]
    author: Option<Author>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Author {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    account_id: Option<String>,
}

impl Author {
    fn name(self) -> String {
        self.display_name
            .or(self.name)
            .or(self.account_id)
            .unwrap_or_else(|| "unknown".into())
    }
}

#[derive(Debug, Deserialize)]
struct Issue {
    key: String,
    fields: Fields,
}

#[derive(Debug, Deserialize)]
struct Fields {
    summary: String,
    #[serde(default)]
    description: Option<Description>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    priority: Option<Named>,
    #[serde(default)]
    project: Option<Project>,
    #[serde(default)]
    components: Vec<Named>,
    #[serde(default)]
    issuetype: Option<Named>,
}

#[derive(Debug, Deserialize)]
struct Named {
    name: String,
}

#[derive(Debug, Deserialize)]
struct Project {
    key: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Description {
    Text(String),
    Document(AdfNode),
}

/// The part of an ADF node that carries text.
#[derive(Debug, Deserialize)]
struct AdfNode {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    content: Vec<AdfNode>,
}

impl AdfNode {
    fn write_text(&self, out: &mut String) {
        if let Some(text) = &self.text {
            out.push_str(text);
        }
        if self.kind == "hardBreak" {
            out.push('\n');
        }
        for child in &self.content {
            child.write_text(out);
        }
        if matches!(
            self.kind.as_str(),
            "paragraph" | "heading" | "codeBlock" | "listItem" | "blockquote" | "rule"
        ) && !out.ends_with('\n')
        {
            out.push('\n');
        }
    }
}

impl Description {
    fn into_text(self) -> String {
        match self {
            Description::Text(text) => text,
            Description::Document(doc) => {
                let mut out = String::new();
                doc.write_text(&mut out);
                out.trim_end().to_string()
            }
        }
    }
}

fn ticket_from(issue: Issue, delivery: crate::ticket::DeliveryId) -> Result<Ticket, IngestError> {
    let target =
        ReplyTarget::parse("jira", &issue.key).map_err(|e| invalid_field("issue.key", e))?;
    let fields = issue.fields;
    let mut labels = super::tag_labels(fields.labels.iter().map(String::as_str));
    if let Some(project) = fields.project {
        labels.insert("project".into(), project.key);
    }
    if let Some(priority) = fields.priority {
        labels.insert("priority".into(), priority.name);
    }
    if let Some(kind) = fields.issuetype {
        labels.insert("issuetype".into(), kind.name);
    }
    // A component names the affected service in most Jira setups.
    if let Some(component) = fields.components.into_iter().next() {
        labels.entry("service".into()).or_insert(component.name);
    }
    Ok(Ticket {
        id: TicketId::parse(format!("jira:{}", issue.key))
            .map_err(|e| invalid_field("issue.key", e))?,
        source: SourceKind::Jira,
        delivery,
        title: fields.summary,
        body: fields
            .description
            .map(Description::into_text)
            .unwrap_or_default(),
        labels,
        annotations: BTreeMap::new(),
        alertname: None,
        reply: Some(target),
        query: None,
    })
}

/// `POST /webhooks/jira`, verified by `X-Hub-Signature` when a secret is set.
#[derive(Debug)]
pub struct Jira {
    pub secret: Option<Secret>,
    pub marker: crate::render::MarkerKey,
}

/// A created comment: a command, or nothing to act on.
fn comment_inbound(
    body: &[u8],
    delivery: Option<crate::ticket::DeliveryId>,
    marker: &crate::render::MarkerKey,
) -> Result<Inbound, IngestError> {
    let envelope: CommentEnvelope = parse_json(body)?;
    let text = envelope
        .comment
        .body
        .map(Description::into_text)
        .unwrap_or_default();
    let author = envelope
        .comment
        .author
        .map(Author::name)
        .unwrap_or_else(|| "unknown".into());
    let key = envelope.issue.key;
    super::command_inbound(&text, marker, |command| {
        let reply = ReplyTarget::parse("jira", &key).map_err(|e| invalid_field("issue.key", e))?;
        Ok(crate::feedback::CommentCommand {
            source: SourceKind::Jira,
            delivery: delivery.unwrap_or_else(|| super::body_digest(body)),
            ticket: TicketId::parse(format!("jira:{key}"))
                .map_err(|e| invalid_field("issue.key", e))?,
            author,
            command,
            described: None,
            reply: Some(reply),
            ack: None,
        })
    })
}

impl Source for Jira {
    fn name(&self) -> &'static str {
        "jira"
    }

    fn unauthenticated(&self) -> Option<String> {
        self.secret.is_none().then(|| "sources.jira.secret".into())
    }

    fn parse(&self, req: &HttpRequest, body: &[u8]) -> Result<Inbound, IngestError> {
        super::check_prefixed_hmac(req, SIGNATURE, self.secret.as_ref(), body)?;
        let kind: EventKind = parse_json(body)?;
        if kind.webhook_event == "comment_created" {
            let delivery = super::delivery_header(req, IDENTIFIER)?;
            return comment_inbound(body, delivery, &self.marker);
        }
        let envelope: Envelope = parse_json(body)?;
        if envelope.webhook_event != "jira:issue_created" {
            return Ok(Inbound::Ignored(
                "only `jira:issue_created` events are enriched",
            ));
        }
        let issue = envelope
            .issue
            .ok_or_else(|| invalid_field("issue", "is required for jira:issue_created"))?;
        let delivery = super::delivery_header(req, IDENTIFIER)?.unwrap_or_else(|| {
            // Without the header, the issue itself is the identity: it is created once.
            crate::ticket::DeliveryId::parse(format!("jira-created:{}", issue.key))
                .unwrap_or_else(|_| super::body_digest(body))
        });
        let ticket = ticket_from(issue, delivery)?;
        Ok(Inbound::Ticket(Box::new(ticket)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adf_descriptions_become_plain_text() {
        let json = r#"{"type":"doc","version":1,"content":[
            {"type":"paragraph","content":[{"type":"text","text":"Disk on "},{"type":"text","text":"logs-1","marks":[{"type":"code"}]},{"type":"text","text":" is full"}]},
            {"type":"bulletList","content":[{"type":"listItem","content":[{"type":"paragraph","content":[{"type":"text","text":"since 10:00"}]}]}]}]}"#;
        let description: Description = serde_json::from_str(json).unwrap();
        assert_eq!(
            description.into_text(),
            "Disk on logs-1 is full\nsince 10:00"
        );
        let plain: Description = serde_json::from_str(r#""just text""#).unwrap();
        assert_eq!(plain.into_text(), "just text");
    }
}
