//! GitHub `issues` webhooks. Only `opened` issues become tickets; every other event (comments,
//! edits, runlink's own comments) is answered 200 and ignored, so runlink never reacts to
//! what it posted itself.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::{IngestError, ignored_response, parse_json, read_body};
use crate::app::AppState;
use crate::render::is_runlink_text;
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
    let owner = event.repository.owner.login;
    let repo = event.repository.name;
    let id =
        TicketId::parse(format!("github:{owner}/{repo}#{}", event.issue.number)).map_err(|e| {
            IngestError::InvalidField {
                field: "repository".into(),
                message: e.to_string(),
            }
        })?;
    Ok(Ticket {
        id,
        source: SourceKind::Github,
        delivery,
        title: event.issue.title,
        body: event.issue.body.unwrap_or_default(),
        labels: labels(&event.issue.labels),
        annotations: BTreeMap::new(),
        alertname: None,
        reply: Some(ReplyTarget::GithubIssue {
            owner,
            repo,
            number: event.issue.number,
        }),
        query: None,
    })
}

#[tracing::instrument(skip_all, fields(source = "github", delivery = tracing::field::Empty, ticket = tracing::field::Empty))]
pub async fn webhook(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, IngestError> {
    super::guarded("github", &state, handle(req, payload, &state)).await
}

async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<(HttpResponse, &'static str), IngestError> {
    let body = read_body(payload, state.max_body_bytes).await?;
    super::check_prefixed_hmac(&req, SIGNATURE, state.sources.github_secret.as_ref(), &body)?;
    let event = super::required_header(&req, EVENT)?;
    let delivery = super::required_header(&req, DELIVERY)?;
    let delivery = DeliveryId::parse(delivery).map_err(|e| IngestError::BadHeader {
        header: DELIVERY,
        message: e.to_string(),
    })?;
    tracing::Span::current().record("delivery", delivery.as_str());
    if event == "ping" {
        return Ok((ignored_response("ping"), "ignored"));
    }
    if event != "issues" {
        return Ok((
            ignored_response("only `issues` events are handled"),
            "ignored",
        ));
    }
    let event: IssuesEvent = parse_json(&body)?;
    if event.action != "opened" {
        return Ok((
            ignored_response("only `opened` issues are enriched"),
            "ignored",
        ));
    }
    if event.issue.body.as_deref().is_some_and(is_runlink_text) {
        return Ok((ignored_response("issue was written by runlink"), "ignored"));
    }
    let ticket = ticket_from(event, delivery.as_str())?;
    super::accept_one(state, ticket).await
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
