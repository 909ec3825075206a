//! Admin endpoints, each with `Authorization: Bearer <server.admin_token>`.
//! `POST /admin/reload`: rebuild the index from disk now; 200 with the new version, or 422
//! with the lint errors that refused it (the old index keeps serving). With
//! `runbooks.canary` on, a changed corpus goes into shadow instead of live:
//! `GET /admin/canary` shows it, `POST /admin/canary/promote` and `/abort` decide it.

use actix_web::{HttpRequest, HttpResponse, web};

use super::error::{ApiError, ErrorKind};
use super::state::AdminToken;
use crate::canary::{Canary, CanaryError, CanaryStatus};
use crate::reload::{ReloadError, Reloader};

fn authorize(req: &HttpRequest, token: &AdminToken) -> Result<(), ApiError> {
    let Some(token) = &token.0 else {
        return Err(ApiError::new(
            ErrorKind::AdminDisabled,
            "admin endpoints are off: set server.admin_token",
        ));
    };
    let given = req
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if crate::ingest::constant_time_eq(given.as_bytes(), token.expose().as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorKind::InvalidToken,
            "missing or wrong bearer token in `Authorization`",
        ))
    }
}

pub(super) async fn reload(
    req: HttpRequest,
    token: web::Data<AdminToken>,
    reloader: web::Data<Reloader>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &token)?;
    match reloader.reload("POST /admin/reload").await {
        Ok(report) => Ok(HttpResponse::Ok().json(report)),
        Err(ReloadError::Lint { findings }) => Err(ApiError::new(
            ErrorKind::ReloadRefused,
            format!(
                "reload refused: {} lint error(s); the previous index keeps serving",
                findings.len()
            ),
        )
        .with_findings(findings)),
        Err(error) => Err(ApiError::new(
            ErrorKind::ReloadRefused,
            format!("reload refused: {error}; the previous index keeps serving"),
        )),
    }
}

pub(super) async fn canary_status(
    req: HttpRequest,
    token: web::Data<AdminToken>,
    canary: web::Data<Canary>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &token)?;
    Ok(HttpResponse::Ok().json(canary.status()))
}

pub(super) async fn canary_promote(
    req: HttpRequest,
    token: web::Data<AdminToken>,
    canary: web::Data<Canary>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &token)?;
    canary_answer(canary.promote("POST /admin/canary/promote").await)
}

pub(super) async fn canary_abort(
    req: HttpRequest,
    token: web::Data<AdminToken>,
    canary: web::Data<Canary>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &token)?;
    canary_answer(canary.abort("POST /admin/canary/abort").await)
}

fn canary_answer(result: Result<CanaryStatus, CanaryError>) -> Result<HttpResponse, ApiError> {
    match result {
        Ok(status) => Ok(HttpResponse::Ok().json(status)),
        Err(CanaryError::NothingInShadow) => Err(ApiError::new(
            ErrorKind::NothingInShadow,
            "no candidate runbook index is in shadow",
        )),
        Err(CanaryError::Store(error)) => Err(ApiError::unavailable(&error.into())),
    }
}
