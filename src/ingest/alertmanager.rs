//! Prometheus Alertmanager webhooks (payload version 4). Each firing alert of a notification
//! becomes a ticket; resolved alerts are recorded in the audit log and not enriched. Grafana
//! alerting sends the same notification shape (version 1) and is read by the same code.
//! Alertmanager has no place to comment on, so an alert is answered where its
//! `github_issue` annotation (`owner/repo#123`) points; without one it is matched and
//! recorded only.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use actix_web::HttpRequest;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{Inbound, IngestError, Source, parse_json};
use crate::config::Secret;
use crate::memo::Memo;
use crate::ticket::{DeliveryId, ReplyTarget, SourceKind, Ticket, TicketId};

/// The annotation that names the GitHub issue an alert's enrichment goes to.
pub const REPLY_ANNOTATION: &str = "github_issue";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Notification {
    version: String,
    group_key: String,
    alerts: Vec<Alert>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Alert {
    status: AlertStatus,
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    starts_at: String,
    #[serde(default, rename = "generatorURL")]
    generator_url: Option<String>,
    fingerprint: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum AlertStatus {
    Firing,
    Resolved,
}

/// `owner/repo#123` -> a GitHub issue target.
fn parse_issue_ref(raw: &str) -> Option<ReplyTarget> {
    ReplyTarget::parse("github", raw).ok()
}

/// Every alert of a rule carries the same generator URL: it is parsed once.
static GENERATOR_EXPR: LazyLock<Memo<Option<String>>> = LazyLock::new(|| Memo::new(1024));

/// The PromQL of the rule, from the `g0.expr` parameter of the generator URL.
fn expr_from_generator(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == "g0.expr")
        .map(|(_, v)| v.into_owned())
}

/// The first firing alert of a notification as a ticket, for tools like `runlink explain`.
pub fn parse_first_firing(body: &[u8]) -> Result<Ticket, IngestError> {
    let notification: Notification = parse_json(body)?;
    let group_key = notification.group_key;
    notification
        .alerts
        .into_iter()
        .find(|a| a.status == AlertStatus::Firing)
        .ok_or_else(|| IngestError::InvalidField {
            field: "alerts".into(),
            message: "has no firing alert".into(),
        })?
        .into_ticket(&group_key, SourceKind::Alertmanager)
}

impl Alert {
    fn into_ticket(self, group_key: &str, source: SourceKind) -> Result<Ticket, IngestError> {
        let invalid = |field: &str, e: crate::ticket::InvalidId| IngestError::InvalidField {
            field: field.to_string(),
            message: e.to_string(),
        };
        let alertname = self.labels.get("alertname").cloned();
        let id = TicketId::parse(format!("{source}:{}@{}", self.fingerprint, self.starts_at))
            .map_err(|e| invalid("alerts.fingerprint", e))?;
        // The dedup key the sender's retries share: group, alert identity, firing start.
        let mut hash = Sha256::new();
        for part in [group_key, &self.fingerprint, &self.starts_at] {
            hash.update(part.as_bytes());
            hash.update([0u8]);
        }
        let delivery = DeliveryId::parse(hex::encode(&hash.finalize()[..16]))
            .map_err(|e| invalid("groupKey", e))?;
        let (title, body) = crate::ticket::annotation_text(&self.annotations, &[REPLY_ANNOTATION]);
        let title = title.or_else(|| alertname.clone()).unwrap_or_default();
        let reply = self
            .annotations
            .get(REPLY_ANNOTATION)
            .and_then(|r| parse_issue_ref(r));
        Ok(Ticket {
            id,
            source,
            delivery,
            title,
            body,
            query: self
                .generator_url
                .as_deref()
                .and_then(|url| GENERATOR_EXPR.get(url, expr_from_generator)),
            labels: self.labels,
            annotations: self.annotations,
            alertname,
            reply,
        })
    }
}

/// `POST /webhooks/alertmanager`, verified by a bearer token when one is set.
#[derive(Debug)]
pub struct Alertmanager {
    pub token: Option<Secret>,
}

impl Source for Alertmanager {
    fn name(&self) -> &'static str {
        "alertmanager"
    }

    fn unauthenticated(&self) -> Option<String> {
        self.token
            .is_none()
            .then(|| "sources.alertmanager.token".into())
    }

    fn admit(&self, req: &HttpRequest) -> Result<(), IngestError> {
        super::check_bearer(req, self.token.as_ref())
    }

    fn parse(&self, _req: &HttpRequest, body: &[u8]) -> Result<Inbound, IngestError> {
        parse_notification(body, SourceKind::Alertmanager)
    }
}

/// Every alert of an Alertmanager-shaped notification (`source` says whose shape, and which
/// payload version it must carry). Every alert is parsed before any is stored, so a
/// malformed one refuses the whole notification and the sender's retry carries it again.
pub(crate) fn parse_notification(body: &[u8], source: SourceKind) -> Result<Inbound, IngestError> {
    let notification: Notification = parse_json(body)?;
    let expected = match source {
        SourceKind::Grafana => "1",
        _ => "4",
    };
    if notification.version != expected {
        return Err(IngestError::InvalidField {
            field: "version".into(),
            message: format!(
                "unsupported version `{}` (expected {expected})",
                notification.version
            ),
        });
    }
    let mut firing = Vec::new();
    let mut resolved = Vec::new();
    for (i, alert) in notification.alerts.into_iter().enumerate() {
        if alert.fingerprint.trim().is_empty() {
            return Err(IngestError::InvalidField {
                field: format!("alerts[{i}].fingerprint"),
                message: "is empty".into(),
            });
        }
        let status = alert.status;
        let ticket = alert.into_ticket(&notification.group_key, source)?;
        match status {
            AlertStatus::Firing => firing.push(ticket),
            AlertStatus::Resolved => resolved.push(ticket),
        }
    }
    Ok(Inbound::Alerts { firing, resolved })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_references_are_parsed_strictly() {
        assert_eq!(
            parse_issue_ref("acme/ops#12"),
            Some(ReplyTarget::GithubIssue {
                owner: "acme".into(),
                repo: "ops".into(),
                number: 12
            })
        );
        assert_eq!(parse_issue_ref("acme/ops"), None);
        assert_eq!(parse_issue_ref("acme#12"), None);
        assert_eq!(parse_issue_ref("ac me/ops#1"), None);
    }

    #[test]
    fn the_rule_expression_comes_from_the_generator_url() {
        assert_eq!(
            expr_from_generator("http://prom:9090/graph?g0.expr=up+%3D%3D+0&g0.tab=1").as_deref(),
            Some("up == 0")
        );
        assert_eq!(expr_from_generator("not a url"), None);
    }

    /// The first alert of a notification, as a ticket.
    fn first_ticket(body: &str) -> Ticket {
        let n: Notification = parse_json(body.as_bytes()).unwrap();
        let group = n.group_key.clone();
        n.alerts
            .into_iter()
            .next()
            .unwrap()
            .into_ticket(&group, SourceKind::Alertmanager)
            .unwrap()
    }

    #[test]
    fn a_captured_notification_becomes_tickets() {
        let ticket = first_ticket(include_str!(
            "../../tests/fixtures/alertmanager-firing.json"
        ));
        assert_eq!(ticket.alertname.as_deref(), Some("HighErrorRate"));
        assert_eq!(ticket.title, "Error rate above 5%");
        assert!(
            ticket
                .id
                .as_str()
                .starts_with("alertmanager:40a5816a039039f7@")
        );
        assert_eq!(ticket.delivery.as_str().len(), 32);
    }

    #[test]
    fn a_message_annotation_is_the_text_when_there_is_no_summary() {
        let body = include_str!("../../tests/fixtures/alertmanager-firing.json");
        let mut value: serde_json::Value = serde_json::from_str(body).unwrap();
        value["alerts"][0]["annotations"] = serde_json::json!({
            "message": "Mimir cluster prod has 1 unhealthy ingester(s).",
            "impact": "Writes may be rejected for some tenants",
            "runbook_url": "https://runbooks.example.com/mimir#x",
            "github_issue": "acme/ops#3",
        });
        let ticket = first_ticket(&value.to_string());
        assert_eq!(
            ticket.title,
            "Mimir cluster prod has 1 unhealthy ingester(s)."
        );
        assert_eq!(ticket.body, "Writes may be rejected for some tenants");
    }
}
