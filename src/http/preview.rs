//! `POST /v1/match`: what runlink would post for a ticket, without storing or posting
//! anything (for newcomers trying it with curl, and for runbook authors checking a change).

use actix_web::{HttpResponse, web};
use serde::Serialize;

use super::error::ApiError;
use super::state::Limits;
use super::webhooks::read_body;
use crate::ingest::manual::ManualTicket;
use crate::ingest::parse_json;
use crate::pipeline::{Pipeline, delivery_key};
use crate::runbooks::Step;
use crate::signature::AlarmSignature;

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

pub(super) async fn preview_match(
    payload: web::Payload,
    pipeline: web::Data<Pipeline>,
    limits: web::Data<Limits>,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, &limits).await?;
    let ticket = parse_json::<ManualTicket>(&body)?
        .into_ticket(0)
        .without_controls();
    let enricher = &pipeline.enricher;
    let signature = AlarmSignature::of(&ticket, &enricher.normalizer);
    let decision = enricher
        .decide(signature.clone())
        .await
        .map_err(|e| ApiError::unavailable(&e))?;
    let key = delivery_key(&ticket, &signature.key());
    let comment = enricher
        .renderer
        .render("github.md.j2", &ticket, &signature, &decision, &key)
        .map_err(|e| ApiError::unavailable(&e.into()))?;
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
