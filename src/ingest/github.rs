//! GitHub `issues` and `issue_comment` webhooks. `opened` issues become tickets; a created
//! comment whose first line is a `/runlink` command becomes feedback; every other event
//! (edits, ordinary comments, runlink's own comments) is answered 200 and ignored, so runlink
//! never reacts to what it posted itself. runlink never opens issues, so an issue is enriched whatever its
//! text says (a user quoting a marker cannot switch enrichment off).

use std::collections::BTreeMap;

use actix_web::HttpRequest;
use serde::Deserialize;

use super::{Inbound, IngestError, Source, parse_json};
use crate::config::Secret;
use crate::ticket::{DeliveryId, ReplyTarget, SourceKind, Ticket, TicketId};

const SIGNATURE: &str = "X-Hub-Signature-256";
const EVENT: &str = "X-GitHub-Event";
const DELIVERY: &str = "X-GitHub-Delivery";

#[derive(Debug, Deserialize)]
struct IssuesEvent {
    action: String,
    issue: Issue,
    repository: Repository,
}

/// Everything but the action is optional until the comment turns out to be a command: an
/// ordinary comment is ignored whatever else the event carries.
#[derive(Debug, Deserialize)]
struct CommentEvent {
    action: String,
    #[serde(default)]
    issue: Option<Issue>,
    #[serde(default)]
    comment: Option<IssueComment>,
    #[serde(default)]
    repository: Option<Repository>,
}

#[derive(Debug, Deserialize)]
struct IssueComment {
    id: u64,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    user: Option<User>,
}

#[derive(Debug, Deserialize)]
struct User {
    login: String,
}

#[derive(Debug, Deserialize)]
struct Issue {
    number: u64,
    title: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    labels: Vec<Label>,
}

#[derive(Debug, Deserialize)]
struct Label {
    name: String,
}

#[derive(Debug, Deserialize)]
struct Repository {
    name: String,
    owner: Owner,
}

#[derive(Debug, Deserialize)]
struct Owner {
    login: String,
}

/// GitHub labels are plain names; `service:checkout` ones are read as key/value pairs.
fn labels(raw: &[Label]) -> BTreeMap<String, String> {
    super::tag_labels(raw.iter().map(|l| l.name.as_str()))
}

/// The ticket an `issues` event describes (any action), for tools like `runlink explain`.
pub fn parse_ticket(body: &[u8], delivery: &str) -> Result<Ticket, IngestError> {
    let event: IssuesEvent = parse_json(body)?;
    ticket_from(event, delivery)
}

fn ticket_from(event: IssuesEvent, delivery: &str) -> Result<Ticket, IngestError> {
    let delivery = DeliveryId::parse(delivery).map_err(|e| IngestError::BadHeader {
        header: DELIVERY,
        message: e.to_string(),
    })?;
    issue_ticket(event.issue, event.repository, delivery)
}

fn issue_ticket(
    issue: Issue,
    repository: Repository,
    delivery: DeliveryId,
) -> Result<Ticket, IngestError> {
    let owner = repository.owner.login;
    let repo = repository.name;
    let id = TicketId::parse(format!("github:{owner}/{repo}#{}", issue.number)).map_err(|e| {
        IngestError::InvalidField {
            field: "repository".into(),
            message: e.to_string(),
        }
    })?;
    Ok(Ticket {
        id,
        source: SourceKind::Github,
        delivery,
        title: issue.title,
        body: issue.body.unwrap_or_default(),
        labels: labels(&issue.labels),
        annotations: BTreeMap::new(),
        alertname: None,
        reply: Some(ReplyTarget::GithubIssue {
            owner,
            repo,
            number: issue.number,
        }),
        query: None,
    })
}

/// A created comment: a command, or nothing to act on.
fn comment_inbound(
    event: CommentEvent,
    delivery: DeliveryId,
    marker: &crate::render::MarkerKey,
) -> Result<Inbound, IngestError> {
    if event.action != "created" {
        return Ok(Inbound::Ignored("only created comments can carry commands"));
    }
    let text = event
        .comment
        .as_ref()
        .and_then(|c| c.body.clone())
        .unwrap_or_default();
    super::command_inbound(&text, marker, move |command| {
        let required = |field: &str| super::invalid_field(field, "is required for a command");
        let comment = event.comment.ok_or_else(|| required("comment"))?;
        let repository = event.repository.ok_or_else(|| required("repository"))?;
        let issue = event.issue.ok_or_else(|| required("issue"))?;
        let author = comment
            .user
            .map(|u| u.login)
            .ok_or_else(|| required("comment.user"))?;
        let ack = crate::feedback::Ack::GithubReaction {
            owner: repository.owner.login.clone(),
            repo: repository.name.clone(),
            comment_id: comment.id,
        };
        let ticket = issue_ticket(issue, repository, delivery.clone())?;
        Ok(crate::feedback::CommentCommand {
            source: SourceKind::Github,
            delivery,
            ticket: ticket.id.clone(),
            author,
            command,
            reply: ticket.reply.clone(),
            described: Some(Box::new(ticket)),
            ack: Some(ack),
        })
    })
}

/// `POST /webhooks/github`, verified by `X-Hub-Signature-256` when a secret is set.
#[derive(Debug)]
pub struct Github {
    pub secret: Option<Secret>,
    pub marker: crate::render::MarkerKey,
}

impl Source for Github {
    fn name(&self) -> &'static str {
        "github"
    }

    fn unauthenticated(&self) -> Option<String> {
        self.secret
            .is_none()
            .then(|| "sources.github.secret".into())
    }

    fn parse(&self, req: &HttpRequest, body: &[u8]) -> Result<Inbound, IngestError> {
        super::check_prefixed_hmac(req, SIGNATURE, self.secret.as_ref(), body)?;
        let event = super::required_header(req, EVENT)?;
        let delivery = super::required_header(req, DELIVERY)?;
        let delivery = DeliveryId::parse(delivery).map_err(|e| IngestError::BadHeader {
            header: DELIVERY,
            message: e.to_string(),
        })?;
        tracing::Span::current().record("delivery", delivery.as_str());
        if event == "ping" {
            return Ok(Inbound::Ignored("ping"));
        }
        if event == "issue_comment" {
            return comment_inbound(parse_json(body)?, delivery, &self.marker);
        }
        if event != "issues" {
            return Ok(Inbound::Ignored(
                "only `issues` and `issue_comment` events are handled",
            ));
        }
        let event: IssuesEvent = parse_json(body)?;
        if event.action != "opened" {
            return Ok(Inbound::Ignored("only `opened` issues are enriched"));
        }
        Ok(Inbound::Ticket(Box::new(ticket_from(
            event,
            delivery.as_str(),
        )?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_labels_are_split() {
        let got = labels(&[
            Label {
                name: "service:checkout".into(),
            },
            Label {
                name: "alertname=DiskFull".into(),
            },
            Label { name: "bug".into() },
        ]);
        assert_eq!(got["service"], "checkout");
        assert_eq!(got["alertname"], "DiskFull");
        assert_eq!(got["bug"], "");
    }
}
