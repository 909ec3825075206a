//! `GET /v1/probes?ticket=ID`: what became of a synthetic ticket sent by `runlink canary
//! probe`: when it was received, decided and answered in the probe sink, the decision, and
//! the comment as it would have been posted. Only probe tickets are shown: the answer says
//! nothing about real tickets.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ErrorKind};
use crate::audit::{AttemptOutcome, AuditCandidate, AuditEvent};
use crate::outbox::AuditQuery;
use crate::pipeline::Pipeline;
use crate::ticket::PROBE_DESTINATION;

#[derive(Debug, Deserialize)]
pub(super) struct ProbeQuery {
    ticket: String,
}

#[derive(Debug, Default, Serialize)]
struct ProbeResult {
    ticket: String,
    /// `pending` until the sink has the comment, then `delivered`.
    state: String,
    received_ms: Option<i64>,
    decided_ms: Option<i64>,
    delivered_ms: Option<i64>,
    runbook: Option<String>,
    confident: bool,
    candidates: Vec<AuditCandidate>,
    index_version: String,
    comment: Option<String>,
}

pub(super) async fn probe(
    query: web::Query<ProbeQuery>,
    pipeline: web::Data<Pipeline>,
) -> Result<HttpResponse, ApiError> {
    let store = &pipeline.store;
    let unavailable = |e: crate::outbox::StoreError| ApiError::unavailable(&e.into());
    let records = store
        .audit_log(AuditQuery {
            ticket: Some(query.ticket.clone()),
            since_ms: None,
            limit: Some(100),
        })
        .await
        .map_err(unavailable)?;
    let mut result = ProbeResult {
        ticket: query.ticket.clone(),
        state: "pending".into(),
        ..Default::default()
    };
    let mut key = None;
    for record in records {
        match record.event {
            AuditEvent::Received { .. } => result.received_ms = Some(record.at_ms),
            AuditEvent::Decided {
                candidates,
                confident,
                index_version,
                ..
            } => {
                result.decided_ms = Some(record.at_ms);
                result.confident = confident;
                result.runbook = candidates.first().map(|c| c.runbook.clone());
                result.candidates = candidates;
                result.index_version = index_version;
            }
            AuditEvent::Enqueued {
                delivery_key,
                destination,
            } if destination == PROBE_DESTINATION => key = Some(delivery_key),
            AuditEvent::DeliveryAttempt {
                outcome: AttemptOutcome::Delivered,
                destination,
                ..
            } if destination == PROBE_DESTINATION => result.delivered_ms = Some(record.at_ms),
            _ => {}
        }
    }
    let Some(key) = key else {
        return Err(ApiError::new(
            ErrorKind::NotFound,
            format!("no probe ticket `{}` (yet)", query.ticket),
        ));
    };
    if let Some((state, body)) = store.delivery(&key).await.map_err(unavailable)? {
        result.state = state;
        result.comment = Some(body);
    }
    Ok(HttpResponse::Ok().json(result))
}
