//! Opsgenie outgoing webhooks (the Webhook integration). Action `Create` becomes a ticket
//! answered with an alert note; every other action, `AddNote` from runlink's own notes
//! included, is acknowledged and ignored. Opsgenie signs nothing: the integration sends a
//! configured custom header, checked here against `sources.opsgenie.token`.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::{IngestError, ignored_response, invalid_field, parse_json, read_body};
use crate::app::AppState;
use crate::ticket::{DeliveryId, ReplyTarget, SourceKind, Ticket, TicketId};

#[derive(Debug, Deserialize)]
struct Envelope {
    action: String,
    alert: Alert,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Alert {
    alert_id: String,
    message: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    details: BTreeMap<String, String>,
    #[serde(default)]
    entity: Option<String>,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    alias: Option<String>,
}

fn verify(req: &HttpRequest, state: &AppState) -> Result<(), IngestError> {
    let config = &state.sources.opsgenie;
    let Some(token) = &config.token else {
        return Ok(());
    };
    let given =
        super::header(req, config.header)?.ok_or(IngestError::MissingSignature(config.header))?;
    if super::constant_time_eq(given.trim().as_bytes(), token.expose().as_bytes()) {
        Ok(())
    } else {
        Err(IngestError::BadSignature(config.header))
    }
}

fn ticket_from(alert: Alert) -> Result<Ticket, IngestError> {
    let target = ReplyTarget::parse("opsgenie", &alert.alert_id)
        .map_err(|e| invalid_field("alert.alertId", e))?;
    let mut labels = super::tag_labels(alert.tags.iter().map(String::as_str));
    labels.extend(alert.details);
    for (key, value) in [
        ("entity", alert.entity),
        ("priority", alert.priority),
        ("team", alert.team),
    ] {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            labels.entry(key.to_string()).or_insert(value);
        }
    }
    let mut annotations = BTreeMap::new();
    if let Some(alias) = alert.alias {
        annotations.insert("alias".to_string(), alias);
    }
    Ok(Ticket {
        id: TicketId::parse(format!("opsgenie:{}", alert.alert_id))
            .map_err(|e| invalid_field("alert.alertId", e))?,
        source: SourceKind::Opsgenie,
        // An alert is created once; Opsgenie's retries of that event share its id.
        delivery: DeliveryId::parse(format!("create:{}", alert.alert_id))
            .map_err(|e| invalid_field("alert.alertId", e))?,
        title: alert.message,
        body: alert.description.unwrap_or_default(),
        labels,
        annotations,
        alertname: None,
        reply: Some(target),
        query: None,
    })
}

#[tracing::instrument(skip_all, fields(source = "opsgenie", ticket = tracing::field::Empty))]
pub async fn webhook(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, IngestError> {
    super::guarded("opsgenie", &state, handle(req, payload, &state)).await
}

async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<(HttpResponse, &'static str), IngestError> {
    verify(&req, state)?;
    let body = read_body(payload, state.max_body_bytes).await?;
    let envelope: Envelope = parse_json(&body)?;
    if envelope.action != "Create" {
        return Ok((
            ignored_response("only `Create` actions are enriched"),
            "ignored",
        ));
    }
    let ticket = ticket_from(envelope.alert)?;
    super::accept_one(state, ticket).await
}
