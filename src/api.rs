//! The read-only HTTP surface next to the webhooks: health, readiness, and `POST /v1/match`,
//! which shows what runlink would post for a ticket without storing or posting anything
//! (for newcomers trying it with curl, and for runbook authors checking a change).

use actix_web::{HttpResponse, web};
use serde::Serialize;

use crate::app::AppState;
use crate::ingest::manual::ManualTicket;
use crate::ingest::{IngestError, parse_json, read_body};
use crate::pipeline::delivery_key;
use crate::runbooks::Step;
use crate::signature::AlarmSignature;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

#[derive(Serialize)]
struct Ready {
    runbooks: usize,
    outbox: crate::outbox::OutboxCounts,
    /// Accepts durable in the ingest log and not yet in the tables: a burst being absorbed.
    ingest_backlog: u64,
    shedding: bool,
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state
        .metrics
        .ingest_backlog
        .set(state.pipeline.store.backlog() as i64);
    if let Some(stats) = state.pipeline.store.log_stats() {
        state.metrics.set_log_stats(stats);
    }
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.encode())
}

/// Ready: index loaded, store readable, and not shedding load (a load balancer should send
/// new work to another replica while this one drains).
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    // Not `counts`: a health check must not wait for a burst to be applied.
    match state.pipeline.store.counts_now().await {
        Ok(outbox) => {
            let ready = Ready {
                runbooks: state.pipeline.enricher.matcher.current().index().len(),
                outbox,
                ingest_backlog: state.pipeline.store.backlog(),
                shedding: state.shedding(),
            };
            if ready.shedding || ready.runbooks == 0 {
                HttpResponse::ServiceUnavailable()
                    .insert_header(("Retry-After", "5"))
                    .json(ready)
            } else {
                HttpResponse::Ok().json(ready)
            }
        }
        Err(error) => {
            tracing::error!(%error, "store not readable");
            HttpResponse::ServiceUnavailable()
                .insert_header(("Retry-After", "5"))
                .body("store unavailable")
        }
    }
}

#[derive(Serialize)]
struct Preview<'a> {
    signature: &'a AlarmSignature,
    confident: bool,
    matches: Vec<PreviewMatch<'a>>,
    comment: String,
}

#[derive(Serialize)]
struct PreviewMatch<'a> {
    runbook: &'a str,
    title: &'a str,
    url: String,
    score: f32,
    confidence: f32,
    confident: bool,
    why: String,
    first_steps: &'a [Step],
}

pub async fn preview_match(
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, IngestError> {
    let body = read_body(payload, state.max_body_bytes).await?;
    let ticket = parse_json::<ManualTicket>(&body)?.into_ticket(0);
    let enricher = &state.pipeline.enricher;
    let signature = AlarmSignature::of(&ticket, &enricher.normalizer);
    let decision = enricher
        .decide(signature.clone())
        .await
        .map_err(IngestError::Unavailable)?;
    let key = delivery_key(&ticket, &signature.key());
    let comment = enricher
        .renderer
        .render("github.md.j2", &ticket, &signature, &decision, &key)
        .map_err(|e| IngestError::Unavailable(e.into()))?;
    let matches = decision
        .candidates
        .iter()
        .map(|c| PreviewMatch {
            runbook: c.runbook.id.as_str(),
            title: &c.runbook.title,
            url: c.runbook.url.to_string(),
            score: c.score,
            confidence: c.confidence,
            confident: c.confident,
            why: c.reason.describe(),
            first_steps: &c.runbook.first_steps,
        })
        .collect();
    Ok(HttpResponse::Ok().json(Preview {
        signature: &signature,
        confident: decision.is_confident(),
        matches,
        comment,
    }))
}

#[derive(Serialize)]
struct Refused<'a> {
    message: String,
    code: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    findings: &'a [String],
}

/// `POST /admin/reload` with `Authorization: Bearer <server.admin_token>`: rebuild the index
/// from disk now. 200 with the new version, or 422 with the lint errors that refused it (the
/// old index keeps serving).
pub async fn admin_reload(req: actix_web::HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let Some(token) = &state.admin_token else {
        return HttpResponse::Forbidden().json(Refused {
            message: "admin endpoints are off: set server.admin_token".into(),
            code: "admin_disabled",
            kind: "auth",
            findings: &[],
        });
    };
    let given = req
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !crate::ingest::constant_time_eq(given.as_bytes(), token.expose().as_bytes()) {
        return HttpResponse::Unauthorized().json(Refused {
            message: "missing or wrong bearer token in `Authorization`".into(),
            code: "invalid_token",
            kind: "auth",
            findings: &[],
        });
    }
    match state.reloader.reload("POST /admin/reload").await {
        Ok(report) => HttpResponse::Ok().json(report),
        Err(crate::reload::ReloadError::Lint { findings }) => HttpResponse::UnprocessableEntity()
            .json(Refused {
                message: format!(
                    "reload refused: {} lint error(s); the previous index keeps serving",
                    findings.len()
                ),
                code: "reload_refused",
                kind: "invalid_request",
                findings: &findings,
            }),
        Err(error) => HttpResponse::UnprocessableEntity().json(Refused {
            message: format!("reload refused: {error}; the previous index keeps serving"),
            code: "reload_refused",
            kind: "invalid_request",
            findings: &[],
        }),
    }
}
