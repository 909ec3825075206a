//! Opsgenie outgoing webhooks (the Webhook integration). Action `Create` becomes a ticket
//! answered with an alert note; `AddNote` whose note starts with a `/runlink` command becomes
//! feedback; every other action, `AddNote` from runlink's own notes included, is acknowledged
//! and ignored. Opsgenie signs nothing: the integration sends a
//! configured custom header, checked here against `sources.opsgenie.token`.

use std::collections::BTreeMap;

use actix_web::HttpRequest;
use serde::Deserialize;

use super::{Inbound, IngestError, Source, invalid_field, parse_json};
use crate::config::OpsgenieSource;
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
    /// Set on `AddNote`: the note and who wrote it.
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    username: Option<String>,
}

fn verify(req: &HttpRequest, config: &OpsgenieSource) -> Result<(), IngestError> {
    let Some(token) = &config.token else {
        return Ok(());
    };
    let given =
        super::header(req, config.header)?.ok_or(IngestError::MissingSignature(config.header))?;
    if super::constant_time_eq(given.trim().as_bytes(), token.expose().as_bytes()) {
        Ok(())
    } else {
        Err(IngestError::BadCredentials(config.header))
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

/// `POST /webhooks/opsgenie`, verified by the configured custom header.
#[derive(Debug)]
pub struct Opsgenie {
    pub config: OpsgenieSource,
    pub marker: crate::render::MarkerKey,
}

impl Source for Opsgenie {
    fn name(&self) -> &'static str {
        "opsgenie"
    }

    fn unauthenticated(&self) -> Option<String> {
        self.config
            .token
            .is_none()
            .then(|| "sources.opsgenie.token".into())
    }

    fn admit(&self, req: &HttpRequest) -> Result<(), IngestError> {
        verify(req, &self.config)
    }

    fn parse(&self, _req: &HttpRequest, body: &[u8]) -> Result<Inbound, IngestError> {
        let envelope: Envelope = parse_json(body)?;
        if envelope.action == "AddNote" {
            let note = envelope.alert.note.clone().unwrap_or_default();
            return super::command_inbound(&note, &self.marker, |command| {
                let author = envelope
                    .alert
                    .username
                    .clone()
                    .unwrap_or_else(|| "unknown".into());
                let ticket = ticket_from(envelope.alert)?;
                Ok(crate::feedback::CommentCommand {
                    source: SourceKind::Opsgenie,
                    // Opsgenie sends no id per note event; a retry repeats the same body.
                    delivery: super::body_digest(body),
                    ticket: ticket.id.clone(),
                    author,
                    command,
                    reply: ticket.reply.clone(),
                    described: Some(Box::new(ticket)),
                    ack: None,
                })
            });
        }
        if envelope.action != "Create" {
            return Ok(Inbound::Ignored("only `Create` actions are enriched"));
        }
        Ok(Inbound::Ticket(Box::new(ticket_from(envelope.alert)?)))
    }
}
