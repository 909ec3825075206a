//! `/healthz` (the process answers), `/readyz` (it can take work now) and `/metrics`.

use actix_web::{HttpResponse, web};
use serde::Serialize;

use super::error::{ApiError, ErrorKind};
use super::state::Limits;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;

pub(super) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

#[derive(Serialize)]
struct Ready {
    runbooks: usize,
    /// "on" while the embedding model takes part in matching, "off" on words alone.
    semantic: &'static str,
    outbox: crate::outbox::OutboxCounts,
    /// Accepts durable in the ingest log and not yet in the tables: a burst being absorbed.
    ingest_backlog: u64,
    shedding: bool,
    /// Why the store cannot be written now (a full disk), absent while it can.
    #[serde(skip_serializing_if = "Option::is_none")]
    store_write_failure: Option<crate::outbox::WriteFailure>,
}

pub(super) async fn metrics(
    pipeline: web::Data<Pipeline>,
    metrics: web::Data<Metrics>,
) -> HttpResponse {
    metrics.ingest_backlog.set(pipeline.store.backlog() as i64);
    if let Some(stats) = pipeline.store.log_stats() {
        metrics.set_log_stats(stats);
    }
    metrics.set_write_state(&pipeline.store.write_state());
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(metrics.encode())
}

/// Ready: index loaded, store readable and writable, and not shedding load (a load balancer should send
/// new work to another replica while this one drains).
pub(super) async fn readyz(
    pipeline: web::Data<Pipeline>,
    metrics: web::Data<Metrics>,
    limits: web::Data<Limits>,
) -> Result<HttpResponse, ApiError> {
    // Not `counts`: a health check must not wait for a burst to be applied.
    let outbox = pipeline.store.counts_now().await.map_err(|error| {
        tracing::error!(%error, "store not readable");
        ApiError::new(ErrorKind::StoreUnavailable, "store unavailable")
    })?;
    let ready = Ready {
        runbooks: pipeline.runbooks(),
        semantic: if pipeline.semantic() { "on" } else { "off" },
        outbox,
        ingest_backlog: pipeline.store.backlog(),
        shedding: limits.shedding(&metrics),
        store_write_failure: pipeline.store.write_state().failure,
    };
    Ok(
        if ready.shedding || ready.runbooks == 0 || ready.store_write_failure.is_some() {
            HttpResponse::ServiceUnavailable()
                .insert_header(("Retry-After", "5"))
                .json(ready)
        } else {
            HttpResponse::Ok().json(ready)
        },
    )
}
