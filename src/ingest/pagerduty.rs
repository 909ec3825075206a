//! PagerDuty v3 webhooks. `incident.triggered` becomes a ticket answered with an incident
//! note; `incident.annotated` whose note starts with a `/runlink` command becomes feedback;
//! every other event is acknowledged and ignored, runlink's own notes included. Signatures are `X-PagerDuty-Signature: v1=<hex>`, one
//! per active secret, so during a rotation either configured secret verifies. Retries carry
//! the same `X-Webhook-Id`.

use std::collections::BTreeMap;

use actix_web::HttpRequest;
use serde::Deserialize;

use super::{Inbound, IngestError, Source, invalid_field, parse_json};
use crate::config::Secret;
use crate::ticket::{ReplyTarget, SourceKind, Ticket, TicketId};

const SIGNATURE: &str = "X-PagerDuty-Signature";
const WEBHOOK_ID: &str = "X-Webhook-Id";

#[derive(Debug, Deserialize)]
struct Envelope {
    event: Event,
}

#[derive(Debug, Deserialize)]
struct Event {
    id: String,
    event_type: String,
    data: EventData,
    /// Who caused the event (the note's author on `incident.annotated`).
    #[serde(default)]
    agent: Option<Reference>,
}

/// Only incidents are read in full; other events' data is never looked at.
#[derive(Debug, Deserialize)]
struct EventData {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    service: Option<Reference>,
    #[serde(default)]
    urgency: Option<String>,
    #[serde(default)]
    priority: Option<Reference>,
    #[serde(default)]
    incident_key: Option<String>,
    /// Set on `incident.annotated`: the note's text, and the incident it is on.
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    incident: Option<IncidentReference>,
}

#[derive(Debug, Deserialize)]
struct IncidentReference {
    id: String,
}

#[derive(Debug, Deserialize)]
struct Reference {
    #[serde(default)]
    summary: Option<String>,
}

fn verify(req: &HttpRequest, secrets: &[Secret], body: &[u8]) -> Result<(), IngestError> {
    if secrets.is_empty() {
        return Ok(());
    }
    let header = super::header(req, SIGNATURE)?.ok_or(IngestError::MissingSignature(SIGNATURE))?;
    let valid = header
        .split(',')
        .filter_map(|part| part.trim().strip_prefix("v1="))
        .any(|hex| {
            secrets
                .iter()
                .any(|s| super::verify_hmac_sha256(s.expose().as_bytes(), body, hex))
        });
    if valid {
        Ok(())
    } else {
        Err(IngestError::BadSignature(SIGNATURE))
    }
}

fn ticket_from(event: Event, delivery: crate::ticket::DeliveryId) -> Result<Ticket, IngestError> {
    let data = event.data;
    let id = data
        .id
        .filter(|id| !id.trim().is_empty())
        .ok_or_else(|| invalid_field("event.data.id", "is required for incident events"))?;
    let title = data
        .title
        .ok_or_else(|| invalid_field("event.data.title", "is required for incident events"))?;
    let target =
        ReplyTarget::parse("pagerduty", &id).map_err(|e| invalid_field("event.data.id", e))?;
    let mut labels = BTreeMap::new();
    if let Some(service) = data.service.and_then(|s| s.summary) {
        labels.insert("service".to_string(), service);
    }
    if let Some(urgency) = data.urgency {
        labels.insert("urgency".into(), urgency);
    }
    if let Some(priority) = data.priority.and_then(|p| p.summary) {
        labels.insert("priority".into(), priority);
    }
    let mut annotations = BTreeMap::new();
    if let Some(key) = data.incident_key {
        annotations.insert("incident_key".to_string(), key);
    }
    Ok(Ticket {
        id: TicketId::parse(format!("pagerduty:{id}"))
            .map_err(|e| invalid_field("event.data.id", e))?,
        source: SourceKind::Pagerduty,
        delivery,
        title,
        body: String::new(),
        labels,
        annotations,
        alertname: None,
        reply: Some(target),
        query: None,
    })
}

/// `POST /webhooks/pagerduty`; any of the configured secrets verifies a signature (the old
/// and the new during a rotation).
#[derive(Debug)]
pub struct Pagerduty {
    pub secrets: Vec<Secret>,
    pub marker: crate::render::MarkerKey,
}

impl Source for Pagerduty {
    fn name(&self) -> &'static str {
        "pagerduty"
    }

    fn unauthenticated(&self) -> Option<String> {
        self.secrets
            .is_empty()
            .then(|| "sources.pagerduty.secrets".into())
    }

    fn parse(&self, req: &HttpRequest, body: &[u8]) -> Result<Inbound, IngestError> {
        verify(req, &self.secrets, body)?;
        let envelope: Envelope = parse_json(body)?;
        let event = envelope.event;
        match event.event_type.as_str() {
            "incident.triggered" => {}
            "incident.annotated" => {
                let note = event.data.content.clone().unwrap_or_default();
                let delivery = match super::delivery_header(req, WEBHOOK_ID)? {
                    Some(id) => id,
                    None => crate::ticket::DeliveryId::parse(&event.id)
                        .map_err(|e| invalid_field("event.id", e))?,
                };
                return super::command_inbound(&note, &self.marker, |command| {
                    let incident = event
                        .data
                        .incident
                        .map(|i| i.id)
                        .filter(|id| !id.trim().is_empty())
                        .ok_or_else(|| {
                            invalid_field("event.data.incident.id", "is required for notes")
                        })?;
                    let reply = ReplyTarget::parse("pagerduty", &incident)
                        .map_err(|e| invalid_field("event.data.incident.id", e))?;
                    Ok(crate::feedback::CommentCommand {
                        source: SourceKind::Pagerduty,
                        delivery,
                        ticket: TicketId::parse(format!("pagerduty:{incident}"))
                            .map_err(|e| invalid_field("event.data.incident.id", e))?,
                        author: event
                            .agent
                            .and_then(|a| a.summary)
                            .unwrap_or_else(|| "unknown".into()),
                        command,
                        described: None,
                        reply: Some(reply),
                        ack: None,
                    })
                });
            }
            _ => {
                return Ok(Inbound::Ignored(
                    "only `incident.triggered` events are enriched",
                ));
            }
        }
        // The header is the documented dedup key; the event id is the same for a retry and
        // serves when a proxy strips the header.
        let delivery = match super::delivery_header(req, WEBHOOK_ID)? {
            Some(id) => id,
            None => crate::ticket::DeliveryId::parse(&event.id)
                .map_err(|e| invalid_field("event.id", e))?,
        };
        Ok(Inbound::Ticket(Box::new(ticket_from(event, delivery)?)))
    }
}
