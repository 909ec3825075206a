//! ServiceNow outbound REST messages, sent by a Business Rule when an incident is inserted.
//! The body is what the rule builds: `sys_id`, `number`, `short_description`, `description`,
//! `cmdb_ci` (a name, or a reference object `{value, display_value}`), optionally `table`
//! and `operation`. Authentication is bearer or basic, as the REST message is set up.
//! Only inserts are enriched: runlink's own work note fires the rule again as an update. An
//! update whose `work_notes` (the note just added, with `sys_updated_by` its author) starts
//! with a `/runlink` command becomes feedback.

use std::collections::BTreeMap;

use actix_web::HttpRequest;
use base64::Engine;
use serde::Deserialize;

use super::{Inbound, IngestError, Source, invalid_field, parse_json};
use crate::config::ServicenowAuth;
use crate::ticket::{DeliveryId, ReplyTarget, SourceKind, Ticket, TicketId};

#[derive(Debug, Deserialize)]
struct Record {
    sys_id: String,
    number: String,
    short_description: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    cmdb_ci: Option<Reference>,
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    operation: Option<String>,
    #[serde(default)]
    priority: Option<Reference>,
    #[serde(default)]
    assignment_group: Option<Reference>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    work_notes: Option<String>,
    #[serde(default)]
    sys_updated_by: Option<String>,
}

/// A reference field, sent either as its display name or as ServiceNow's object form.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Reference {
    Name(String),
    Object {
        #[serde(default)]
        display_value: Option<String>,
        #[serde(default)]
        value: Option<String>,
    },
}

impl Reference {
    fn name(self) -> Option<String> {
        match self {
            Reference::Name(name) => Some(name),
            Reference::Object {
                display_value,
                value,
            } => display_value.or(value),
        }
        .filter(|n| !n.trim().is_empty())
    }
}

fn verify(req: &HttpRequest, auth: &ServicenowAuth) -> Result<(), IngestError> {
    match auth {
        ServicenowAuth::None => Ok(()),
        ServicenowAuth::Bearer(token) => super::check_bearer(req, Some(token)),
        ServicenowAuth::Basic { username, password } => {
            let header = super::header(req, "Authorization")?
                .ok_or(IngestError::MissingSignature("Authorization"))?;
            let given = header
                .strip_prefix("Basic ")
                .and_then(|b| {
                    base64::engine::general_purpose::STANDARD
                        .decode(b.trim())
                        .ok()
                })
                .ok_or(IngestError::BadCredentials("Authorization"))?;
            let expected = format!("{username}:{}", password.expose());
            if super::constant_time_eq(&given, expected.as_bytes()) {
                Ok(())
            } else {
                Err(IngestError::BadCredentials("Authorization"))
            }
        }
    }
}

fn ticket_from(record: Record) -> Result<Ticket, IngestError> {
    let table = record
        .table
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| crate::ticket::SERVICENOW_DEFAULT_TABLE.to_string());
    let target = ReplyTarget::parse("servicenow", &format!("{table}/{}", record.sys_id))
        .map_err(|e| invalid_field("sys_id", e))?;
    let mut labels = BTreeMap::new();
    if let Some(ci) = record.cmdb_ci.and_then(Reference::name) {
        labels.insert("service".to_string(), ci);
    }
    if let Some(priority) = record.priority.and_then(Reference::name) {
        labels.insert("priority".into(), priority);
    }
    if let Some(group) = record.assignment_group.and_then(Reference::name) {
        labels.insert("team".into(), group);
    }
    if let Some(category) = record.category.filter(|c| !c.is_empty()) {
        labels.insert("category".into(), category);
    }
    let mut annotations = BTreeMap::new();
    annotations.insert("number".to_string(), record.number);
    Ok(Ticket {
        id: TicketId::parse(format!("servicenow:{table}/{}", record.sys_id))
            .map_err(|e| invalid_field("sys_id", e))?,
        source: SourceKind::Servicenow,
        // A record is inserted once: its sys_id is the delivery.
        delivery: DeliveryId::parse(format!("insert:{}", record.sys_id))
            .map_err(|e| invalid_field("sys_id", e))?,
        title: record.short_description,
        body: record.description.unwrap_or_default(),
        labels,
        annotations,
        alertname: None,
        reply: Some(target),
        query: None,
    })
}

/// `POST /webhooks/servicenow`, verified by bearer or basic auth as configured.
#[derive(Debug)]
pub struct Servicenow {
    pub auth: ServicenowAuth,
    pub marker: crate::render::MarkerKey,
}

impl Source for Servicenow {
    fn name(&self) -> &'static str {
        "servicenow"
    }

    fn unauthenticated(&self) -> Option<String> {
        matches!(self.auth, ServicenowAuth::None)
            .then(|| "sources.servicenow.token (or username and password)".into())
    }

    fn admit(&self, req: &HttpRequest) -> Result<(), IngestError> {
        verify(req, &self.auth)
    }

    fn parse(&self, _req: &HttpRequest, body: &[u8]) -> Result<Inbound, IngestError> {
        let record: Record = parse_json(body)?;
        if record.sys_id.trim().is_empty() {
            return Err(invalid_field("sys_id", "is empty"));
        }
        if record
            .operation
            .as_deref()
            .is_some_and(|op| !op.eq_ignore_ascii_case("insert"))
        {
            let note = record.work_notes.clone().unwrap_or_default();
            let author = record
                .sys_updated_by
                .clone()
                .unwrap_or_else(|| "unknown".into());
            if note.trim().is_empty() {
                return Ok(Inbound::Ignored("only inserted records are enriched"));
            }
            return super::command_inbound(&note, &self.marker, |command| {
                let ticket = ticket_from(record)?;
                Ok(crate::feedback::CommentCommand {
                    source: SourceKind::Servicenow,
                    // The same note sent again is the same event.
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
        Ok(Inbound::Ticket(Box::new(ticket_from(record)?)))
    }
}
