//! What the handlers share. Each handle is registered as its own `web::Data`, so a handler
//! names in its signature exactly what it may touch (a health check cannot reach the
//! reloader, a webhook cannot reach the admin token).

use std::sync::Arc;

use actix_web::web;

use crate::config::Secret;
use crate::ingest::{SourceSet, alertmanager, github, grafana, jira, opsgenie};
use crate::ingest::{pagerduty, servicenow};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::reload::Reloader;

/// Request limits and the load-shedding threshold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_body_bytes: usize,
    /// The whole body must arrive within this.
    pub body_timeout: std::time::Duration,
    /// Above this many pending deliveries, new webhooks are shed with 503.
    pub high_water: u64,
}

impl Limits {
    pub(crate) fn shedding(&self, metrics: &Metrics) -> bool {
        metrics.pending() >= self.high_water as i64
    }
}

/// `server.admin_token`; admin endpoints are off without it.
#[derive(Debug)]
pub(crate) struct AdminToken(pub Option<Secret>);

/// Everything `configure` registers.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(super) pipeline: web::Data<Pipeline>,
    pub(super) metrics: web::Data<Metrics>,
    pub(super) limits: web::Data<Limits>,
    pub(super) reloader: web::Data<Reloader>,
    pub(super) admin: web::Data<AdminToken>,
    pub(super) github: web::Data<github::Github>,
    pub(super) alertmanager: web::Data<alertmanager::Alertmanager>,
    pub(super) grafana: web::Data<grafana::Grafana>,
    pub(super) pagerduty: web::Data<pagerduty::Pagerduty>,
    pub(super) jira: web::Data<jira::Jira>,
    pub(super) opsgenie: web::Data<opsgenie::Opsgenie>,
    pub(super) servicenow: web::Data<servicenow::Servicenow>,
    pub(super) generic: web::Data<crate::ingest::GenericSources>,
    pub(super) teacher: web::Data<crate::feedback::Teacher>,
    pub(super) canary: web::Data<crate::canary::Canary>,
    /// The web console, when it is on.
    pub(super) console: Option<web::Data<crate::console::Console>>,
}

/// The services behind the admin and feedback endpoints.
pub(crate) struct Services {
    pub reloader: Arc<Reloader>,
    pub teacher: Arc<crate::feedback::Teacher>,
    pub canary: Arc<crate::canary::Canary>,
    pub console: Option<Arc<crate::console::Console>>,
}

impl AppState {
    pub(crate) fn new(
        pipeline: Pipeline,
        metrics: Arc<Metrics>,
        limits: Limits,
        admin: AdminToken,
        sources: SourceSet,
        services: Services,
    ) -> Self {
        let Services {
            reloader,
            teacher,
            canary,
            console,
        } = services;
        AppState {
            pipeline: web::Data::new(pipeline),
            metrics: web::Data::from(metrics),
            limits: web::Data::new(limits),
            reloader: web::Data::from(reloader),
            admin: web::Data::new(admin),
            github: web::Data::new(sources.github),
            alertmanager: web::Data::new(sources.alertmanager),
            grafana: web::Data::new(sources.grafana),
            pagerduty: web::Data::new(sources.pagerduty),
            jira: web::Data::new(sources.jira),
            opsgenie: web::Data::new(sources.opsgenie),
            servicenow: web::Data::new(sources.servicenow),
            generic: web::Data::new(sources.generic),
            teacher: web::Data::from(teacher),
            canary: web::Data::from(canary),
            console: console.map(web::Data::from),
        }
    }
}
