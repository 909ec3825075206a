//! Any JSON webhook: `POST /webhooks/generic/{name}`. Where the ticket's fields are is
//! configured per name as JSON Pointers (`sources.generic.<name>.title = "/ticket/title"`),
//! so an in-house tracker or a chat tool needs no code. This is the edge where untyped JSON
//! becomes a `Ticket`; nothing past it sees the raw document.

use std::collections::BTreeMap;

use actix_web::HttpRequest;
use serde_json::Value;

use super::{Inbound, IngestError, Source, invalid_field, parse_json};
use crate::config::GenericSource;
use crate::ticket::{DeliveryId, ReplyTarget, SourceKind, Ticket, TicketId};

/// A scalar at `pointer` as text; objects and arrays are not text.
fn text_at(doc: &Value, pointer: &str) -> Result<Option<String>, IngestError> {
    match doc.pointer(pointer) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(_) => Err(invalid_field(
            pointer,
            "must be a string or a number, not an object or array",
        )),
    }
}

fn required_text(doc: &Value, pointer: &str) -> Result<String, IngestError> {
    text_at(doc, pointer)?
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| invalid_field(pointer, "is required"))
}

fn labels_at(doc: &Value, pointer: &str) -> Result<BTreeMap<String, String>, IngestError> {
    match doc.pointer(pointer) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => Ok(map
            .iter()
            .filter_map(|(k, v)| match v {
                Value::String(s) => Some((k.clone(), s.clone())),
                Value::Number(n) => Some((k.clone(), n.to_string())),
                Value::Bool(b) => Some((k.clone(), b.to_string())),
                _ => None,
            })
            .collect()),
        Some(Value::Array(items)) => Ok(super::tag_labels(items.iter().filter_map(Value::as_str))),
        Some(_) => Err(invalid_field(
            pointer,
            "must be an object or an array of tags",
        )),
    }
}

pub fn ticket_from(
    name: &str,
    config: &GenericSource,
    doc: &Value,
    body: &[u8],
) -> Result<Ticket, IngestError> {
    let id = required_text(doc, &config.id)?;
    let title = required_text(doc, &config.title)?;
    let text = match &config.body {
        Some(pointer) => text_at(doc, pointer)?.unwrap_or_default(),
        None => String::new(),
    };
    let labels = match &config.labels {
        Some(pointer) => labels_at(doc, pointer)?,
        None => BTreeMap::new(),
    };
    let delivery = match &config.delivery {
        Some(pointer) => DeliveryId::parse(required_text(doc, pointer)?)
            .map_err(|e| invalid_field(pointer.as_str(), e))?,
        None => super::body_digest(body),
    };
    let reply = match &config.reply {
        Some((destination, pointer)) => {
            let raw = required_text(doc, pointer)?;
            Some(
                ReplyTarget::parse(destination, &raw)
                    .map_err(|e| invalid_field(pointer.as_str(), e))?,
            )
        }
        None => None,
    };
    Ok(Ticket {
        id: TicketId::parse(format!("generic.{name}:{id}"))
            .map_err(|e| invalid_field(config.id.as_str(), e))?,
        source: SourceKind::Generic,
        delivery,
        title,
        body: text,
        alertname: labels.get("alertname").cloned(),
        labels,
        annotations: BTreeMap::new(),
        reply,
        query: None,
    })
}

/// `POST /webhooks/generic/{name}`: one per `sources.generic.<name>`.
#[derive(Debug)]
pub struct Generic {
    pub name: String,
    pub config: GenericSource,
    /// Tells runlink's own comments, echoed back by the tracker, from tickets that merely
    /// quote a marker.
    pub marker: crate::render::MarkerKey,
}

impl Source for Generic {
    fn name(&self) -> &'static str {
        "generic"
    }

    fn unauthenticated(&self) -> Option<String> {
        self.config
            .token
            .is_none()
            .then(|| format!("sources.generic.{}.token", self.name))
    }

    /// Many in-house tools can only call a URL: besides `Authorization: Bearer`, the token
    /// is taken as the password of Basic auth (the URL's `user:token@`) or as `?token=`.
    /// Each is compared in constant time; the query never reaches a log line or a metric
    /// (only the path is logged).
    fn admit(&self, req: &HttpRequest) -> Result<(), IngestError> {
        let Some(token) = &self.config.token else {
            return Ok(());
        };
        let expected = token.expose().as_bytes();
        if let Some(authorization) = super::header(req, "Authorization")? {
            if let Some(bearer) = authorization.strip_prefix("Bearer ") {
                return verdict(
                    super::constant_time_eq(bearer.trim().as_bytes(), expected),
                    "Authorization",
                );
            }
            if let Some(basic) = authorization.strip_prefix("Basic ") {
                use base64::Engine;
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(basic.trim())
                    .unwrap_or_default();
                let password = decoded
                    .iter()
                    .position(|b| *b == b':')
                    .map(|at| &decoded[at + 1..])
                    .unwrap_or_default();
                return verdict(super::constant_time_eq(password, expected), "Authorization");
            }
            return Err(IngestError::BadCredentials("Authorization"));
        }
        let query = url::form_urlencoded::parse(req.query_string().as_bytes())
            .find(|(name, _)| name == "token")
            .map(|(_, value)| value.into_owned());
        match query {
            Some(given) => verdict(super::constant_time_eq(given.as_bytes(), expected), "token"),
            None => Err(IngestError::MissingCredentials(
                "send `Authorization: Bearer <token>`, Basic auth with the token as password (`https://user:<token>@host/...`), or `?token=<token>`",
            )),
        }
    }

    fn parse(&self, _req: &HttpRequest, body: &[u8]) -> Result<Inbound, IngestError> {
        let doc: Value = parse_json(body)?;
        if let Some(pointer) = &self.config.comment
            && let Some(text) = text_at(&doc, pointer)?.filter(|t| !t.trim().is_empty())
        {
            return self.comment(&doc, body, &text);
        }
        let ticket = ticket_from(&self.name, &self.config, &doc, body)?;
        if self.marker.is_own(&ticket.body) || self.marker.is_own(&ticket.title) {
            return Ok(Inbound::Ignored("ticket was written by runlink"));
        }
        Ok(Inbound::Ticket(Box::new(ticket)))
    }
}

impl Generic {
    /// A comment event: a command, or nothing to act on.
    fn comment(&self, doc: &Value, body: &[u8], text: &str) -> Result<Inbound, IngestError> {
        super::command_inbound(text, &self.marker, |command| {
            let id = required_text(doc, &self.config.id)?;
            let author = match &self.config.comment_author {
                Some(pointer) => text_at(doc, pointer)?,
                None => None,
            };
            // The event may describe the ticket too; without a title it does not.
            let described = ticket_from(&self.name, &self.config, doc, body).ok();
            let delivery = match &self.config.delivery {
                Some(pointer) => DeliveryId::parse(required_text(doc, pointer)?)
                    .map_err(|e| invalid_field(pointer.as_str(), e))?,
                None => super::body_digest(body),
            };
            Ok(crate::feedback::CommentCommand {
                source: SourceKind::Generic,
                delivery,
                ticket: TicketId::parse(format!("generic.{}:{id}", self.name))
                    .map_err(|e| invalid_field(self.config.id.as_str(), e))?,
                author: author.unwrap_or_else(|| "unknown".into()),
                command,
                reply: described.as_ref().and_then(|t| t.reply.clone()),
                described: described.map(Box::new),
                ack: None,
            })
        })
    }
}

fn verdict(matches: bool, place: &'static str) -> Result<(), IngestError> {
    if matches {
        Ok(())
    } else {
        Err(IngestError::BadCredentials(place))
    }
}
