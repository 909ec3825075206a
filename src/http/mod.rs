//! The HTTP surface: every path runlink answers, registered in one place (`configure`),
//! with one error shape (`error`). Handlers extract only the handles they use (`state`).

mod admin;
mod error;
mod health;
mod preview;
mod probes;
mod state;
mod webhooks;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, web};
use tracing::Instrument;

use crate::ingest::{alertmanager, github, grafana, jira, opsgenie, pagerduty, servicenow};
use error::{ApiError, ErrorKind};
pub(crate) use state::{AdminToken, AppState, Limits, Services};

/// Registers every path and the handles their handlers extract.
pub(crate) fn configure(state: &AppState) -> impl Fn(&mut web::ServiceConfig) + Clone + use<> {
    let state = state.clone();
    move |cfg: &mut web::ServiceConfig| {
        if let Some(console) = &state.console {
            crate::console::configure(cfg, console.clone());
        }
        cfg.app_data(state.pipeline.clone())
            .app_data(state.metrics.clone())
            .app_data(state.limits.clone())
            .app_data(state.reloader.clone())
            .app_data(state.admin.clone())
            .app_data(state.github.clone())
            .app_data(state.alertmanager.clone())
            .app_data(state.grafana.clone())
            .app_data(state.pagerduty.clone())
            .app_data(state.jira.clone())
            .app_data(state.opsgenie.clone())
            .app_data(state.servicenow.clone())
            .app_data(state.generic.clone())
            .app_data(state.teacher.clone())
            .app_data(state.canary.clone())
            .route("/healthz", web::get().to(health::healthz))
            .route("/readyz", web::get().to(health::readyz))
            .route("/metrics", web::get().to(health::metrics))
            .route("/admin/reload", web::post().to(admin::reload))
            .route("/admin/canary", web::get().to(admin::canary_status))
            .route(
                "/admin/canary/promote",
                web::post().to(admin::canary_promote),
            )
            .route("/admin/canary/abort", web::post().to(admin::canary_abort))
            .route("/v1/match", web::post().to(preview::preview_match))
            .route("/v1/probes", web::get().to(probes::probe))
            .route(
                "/webhooks/github",
                web::post().to(webhooks::webhook::<github::Github>),
            )
            .route(
                "/webhooks/alertmanager",
                web::post().to(webhooks::webhook::<alertmanager::Alertmanager>),
            )
            .route(
                "/webhooks/grafana",
                web::post().to(webhooks::webhook::<grafana::Grafana>),
            )
            .route(
                "/webhooks/pagerduty",
                web::post().to(webhooks::webhook::<pagerduty::Pagerduty>),
            )
            .route(
                "/webhooks/jira",
                web::post().to(webhooks::webhook::<jira::Jira>),
            )
            .route(
                "/webhooks/opsgenie",
                web::post().to(webhooks::webhook::<opsgenie::Opsgenie>),
            )
            .route(
                "/webhooks/servicenow",
                web::post().to(webhooks::webhook::<servicenow::Servicenow>),
            )
            .route(
                "/webhooks/generic/{name}",
                web::post().to(webhooks::generic_webhook),
            )
            .default_service(web::to(not_found));
    }
}

/// Answers `Expect: 100-continue` before any body is sent: a declared length over the limit
/// is refused 413 there and then, so the client never uploads it (a `100 Continue` would
/// invite the upload the handler then refuses).
pub(crate) fn expect_continue(
    max_body_bytes: usize,
) -> impl actix_service::ServiceFactory<
    actix_http::Request,
    Config = (),
    Response = actix_http::Request,
    Error = actix_http::Response<actix_web::body::BoxBody>,
    InitError = (),
> + Clone {
    use actix_http::HttpMessage as _;
    use actix_web::ResponseError as _;
    actix_service::fn_service(move |req: actix_http::Request| async move {
        let declared = req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        match declared {
            Some(length) if length > max_body_bytes as u64 => {
                tracing::info!(
                    path = %req.path(),
                    length,
                    "Expect: 100-continue refused: declared body over server.max_body_bytes"
                );
                let refused = ApiError::too_large(max_body_bytes).error_response();
                Err(refused.map_into_boxed_body().into())
            }
            _ => Ok(req),
        }
    })
}

/// Unknown paths, and known paths asked with another method, in the same error shape.
async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::new(
        ErrorKind::NotFound,
        format!("no route for {} {}", req.method(), req.path()),
    ))
}

/// Each request gets a span with an id (echoed as `X-Request-Id`), so every log line of one
/// webhook can be found, from the sender's retry to the ticket it became.
pub(crate) async fn request_span(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    // From the thread-local generator: one `getrandom` system call per request is a cost
    // a burst of webhooks notices.
    let id = uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .to_string();
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.path());
    let mut response = next.call(req).instrument(span).await?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-request-id"), value);
    }
    Ok(response)
}
