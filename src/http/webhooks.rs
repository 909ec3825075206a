//! `POST /webhooks/...`: one handler for every source. It sheds load before reading
//! anything, lets the source check what the headers prove, reads the body (bounded), has the
//! source parse it, stores the tickets and answers: 2xx only once a ticket is durable, 4xx
//! for "do not retry", 503 + `Retry-After` for "try again later".

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use futures::StreamExt;
use serde::Serialize;
use tracing::Instrument;

use super::error::{ApiError, ErrorKind};
use super::state::Limits;
use crate::audit::AuditEvent;
use crate::feedback::{CommentCommand, Taught, Teacher};
use crate::ingest::{GenericSources, Inbound, Source};
use crate::metrics::Metrics;
use crate::outbox::AcceptOutcome;
use crate::pipeline::Pipeline;
use crate::ticket::Ticket;

/// Reads the body, refusing it as soon as it passes its size limit or its deadline, so an
/// oversized, endless or trickling body costs at most the limit in memory and the deadline
/// in time.
pub(super) async fn read_body(
    payload: web::Payload,
    limits: &Limits,
) -> Result<web::Bytes, ApiError> {
    let deadline = limits.body_timeout;
    tokio::time::timeout(deadline, read_bounded(payload, limits.max_body_bytes))
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                ErrorKind::BodyTimeout,
                format!(
                    "request body did not arrive within {} ms",
                    deadline.as_millis()
                ),
            ))
        })
}

async fn read_bounded(mut payload: web::Payload, limit: usize) -> Result<web::Bytes, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                ErrorKind::UnreadableBody,
                format!("cannot read request body: {e}"),
            )
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// `POST /webhooks/<source>` for the built-in sources.
pub(super) async fn webhook<S: Source + 'static>(
    req: HttpRequest,
    payload: web::Payload,
    source: web::Data<S>,
    pipeline: web::Data<Pipeline>,
    teacher: web::Data<Teacher>,
    metrics: web::Data<Metrics>,
    limits: web::Data<Limits>,
) -> Result<HttpResponse, ApiError> {
    let span = tracing::info_span!(
        "webhook",
        source = source.name(),
        delivery = tracing::field::Empty,
        ticket = tracing::field::Empty
    );
    let parts = Parts {
        pipeline: &pipeline,
        teacher: &teacher,
        metrics: &metrics,
        limits: &limits,
    };
    receive(&**source, req, payload, parts)
        .instrument(span)
        .await
}

/// `POST /webhooks/generic/{name}`.
pub(super) async fn generic_webhook(
    req: HttpRequest,
    name: web::Path<String>,
    payload: web::Payload,
    sources: web::Data<GenericSources>,
    (pipeline, teacher): (web::Data<Pipeline>, web::Data<Teacher>),
    metrics: web::Data<Metrics>,
    limits: web::Data<Limits>,
) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    let Some(source) = sources.get(&name) else {
        return Err(ApiError::new(
            ErrorKind::UnknownSource,
            format!("no source named `generic/{name}` is configured"),
        ));
    };
    let span = tracing::info_span!(
        "webhook",
        source = "generic",
        name = %name,
        delivery = tracing::field::Empty,
        ticket = tracing::field::Empty
    );
    let parts = Parts {
        pipeline: &pipeline,
        teacher: &teacher,
        metrics: &metrics,
        limits: &limits,
    };
    receive(source, req, payload, parts).instrument(span).await
}

/// What a webhook may touch.
#[derive(Clone, Copy)]
struct Parts<'a> {
    pipeline: &'a Pipeline,
    teacher: &'a Teacher,
    metrics: &'a Metrics,
    limits: &'a Limits,
}

/// What every source shares: the backpressure check before anything is read, and metrics
/// for the outcome and latency.
async fn receive(
    source: &dyn Source,
    req: HttpRequest,
    payload: web::Payload,
    parts: Parts<'_>,
) -> Result<HttpResponse, ApiError> {
    let Parts {
        metrics, limits, ..
    } = parts;
    let started = std::time::Instant::now();
    let result = if limits.shedding(metrics) {
        Err(ApiError::overloaded(metrics.pending()))
    } else {
        handle(source, req, payload, parts).await
    };
    let outcome = match &result {
        Ok((_, word)) => word,
        Err(e) if e.kind == ErrorKind::Overloaded => "shed",
        Err(e) => e.kind.code(),
    };
    metrics.webhook(source.name(), outcome);
    metrics
        .ingest_seconds
        .get_or_create(&crate::metrics::Source {
            source: source.name().to_string(),
        })
        .observe(started.elapsed().as_secs_f64());
    result.map(|(response, _)| response)
}

async fn handle(
    source: &dyn Source,
    req: HttpRequest,
    payload: web::Payload,
    parts: Parts<'_>,
) -> Result<(HttpResponse, &'static str), ApiError> {
    let pipeline = parts.pipeline;
    source.admit(&req)?;
    if let Some(key) = source.unauthenticated() {
        warn_open_once(key);
    }
    let body = read_body(payload, parts.limits).await?;
    match source.parse(&req, &body)? {
        Inbound::Ticket(ticket) => accept_one(pipeline, ticket.without_controls()).await,
        Inbound::Alerts { firing, resolved } => {
            let firing = firing.into_iter().map(Ticket::without_controls).collect();
            accept_alerts(pipeline, source.name(), firing, resolved).await
        }
        Inbound::Command(command) => feedback(parts.teacher, *command).await,
        Inbound::BadCommand(reason) => Ok((
            HttpResponse::Ok().json(Ack {
                status: "bad_command",
                ticket: None,
                reason: Some(&reason),
            }),
            "bad_command",
        )),
        Inbound::Ignored(reason) => Ok((ignored_response(reason), "ignored")),
    }
}

/// What a command is answered with.
#[derive(Serialize)]
struct FeedbackAck<'a> {
    status: &'static str,
    ticket: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    closest: Vec<String>,
}

/// Records an operator's command; 2xx once it is durable (or was recorded before).
async fn feedback(
    teacher: &Teacher,
    command: CommentCommand,
) -> Result<(HttpResponse, &'static str), ApiError> {
    let span = tracing::Span::current();
    span.record("ticket", command.ticket.as_str());
    span.record("delivery", command.delivery.as_str());
    let ticket = command.ticket.to_string();
    let taught = teacher
        .receive(command)
        .await
        .map_err(|crate::feedback::TeachError::Store(e)| ApiError::unavailable(&e.into()))?;
    let mut ack = FeedbackAck {
        status: "recorded",
        ticket: &ticket,
        kind: None,
        id: None,
        closest: Vec::new(),
    };
    let status = match taught {
        Taught::Recorded { id, kind } => {
            ack.kind = Some(kind.as_str());
            ack.id = Some(id);
            StatusCode::ACCEPTED
        }
        Taught::Duplicate => {
            ack.status = "duplicate";
            StatusCode::OK
        }
        Taught::UnknownRunbook { closest, .. } => {
            ack.status = "unknown_runbook";
            ack.closest = closest;
            StatusCode::OK
        }
    };
    let word = ack.status;
    Ok((HttpResponse::build(status).json(ack), word))
}

/// The first webhook a source without a secret takes is worth a warning; every one after
/// it would only be noise.
fn warn_open_once(key: String) {
    static WARNED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
    if !warned.contains(&key) {
        tracing::warn!(
            set = %key,
            "a webhook arrived on a source that accepts unauthenticated requests"
        );
        warned.push(key);
    }
}

#[derive(Serialize)]
struct Ack<'a> {
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ticket: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// What a notification of several alerts is answered with.
#[derive(Serialize)]
struct AlertsAck {
    status: &'static str,
    accepted: usize,
    duplicates: usize,
    resolved: usize,
}

/// The outcome word used in responses and metrics.
fn outcome_word(outcome: AcceptOutcome) -> &'static str {
    match outcome {
        AcceptOutcome::Stored => "accepted",
        AcceptOutcome::DuplicateDelivery => "duplicate",
        AcceptOutcome::AlreadyEnriched => "already_enriched",
        AcceptOutcome::CapReached => "cap_reached",
    }
}

fn record_span(ticket: &Ticket) {
    let span = tracing::Span::current();
    span.record("ticket", ticket.id.as_str());
    span.record("delivery", ticket.delivery.as_str());
}

/// Hands one ticket to the pipeline and answers its sender.
async fn accept_one(
    pipeline: &Pipeline,
    ticket: Ticket,
) -> Result<(HttpResponse, &'static str), ApiError> {
    record_span(&ticket);
    let ticket_id = ticket.id.to_string();
    let outcome = pipeline
        .accept(ticket)
        .await
        .map_err(|e| ApiError::unavailable(&e))?;
    let status = if outcome == AcceptOutcome::Stored {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let word = outcome_word(outcome);
    let response = HttpResponse::build(status).json(Ack {
        status: word,
        ticket: Some(&ticket_id),
        reason: None,
    });
    Ok((response, word))
}

/// Records the resolved alerts and stores the firing ones, concurrently: they share group
/// commits instead of one fsync each.
async fn accept_alerts(
    pipeline: &Pipeline,
    source: &str,
    firing: Vec<Ticket>,
    resolved: Vec<Ticket>,
) -> Result<(HttpResponse, &'static str), ApiError> {
    let mut ack = AlertsAck {
        status: "accepted",
        accepted: 0,
        duplicates: 0,
        resolved: resolved.len(),
    };
    for ticket in &resolved {
        let event = AuditEvent::Resolved {
            source: source.to_string(),
            alertname: ticket.alertname.clone().unwrap_or_default(),
        };
        pipeline
            .store
            .record(Some(&ticket.id), event)
            .await
            .map_err(|e| ApiError::unavailable(&e.into()))?;
    }
    let outcomes =
        futures::future::join_all(firing.into_iter().map(|ticket| pipeline.accept(ticket))).await;
    for outcome in outcomes {
        match outcome.map_err(|e| ApiError::unavailable(&e))? {
            AcceptOutcome::Stored => ack.accepted += 1,
            _ => ack.duplicates += 1,
        }
    }
    let (status, word) = if ack.accepted > 0 {
        (StatusCode::ACCEPTED, "accepted")
    } else if ack.duplicates > 0 {
        ack.status = "duplicate";
        (StatusCode::OK, "duplicate")
    } else {
        ack.status = "recorded";
        (StatusCode::OK, "ignored")
    };
    Ok((HttpResponse::build(status).json(ack), word))
}

/// A 2xx for events runlink does not act on, so the sender does not retry them.
fn ignored_response(reason: &str) -> HttpResponse {
    HttpResponse::Ok().json(Ack {
        status: "ignored",
        ticket: None,
        reason: Some(reason),
    })
}
