//! `Application::build(config)` wires everything, once: corpus, index, matcher, templates,
//! store, destinations, the delivery worker and the HTTP server. Tests start this very same
//! application on port 0, so what they exercise is what ships.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, web};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::api;
use std::collections::HashMap;

use crate::config::{Config, DestinationsConfig, Secret, Sources, StoreUrl};
use crate::deliver::generic::{GenericDestination, GenericTemplateError};
use crate::deliver::github::GithubDestination;
use crate::deliver::jira::JiraDestination;
use crate::deliver::opsgenie::OpsgenieDestination;
use crate::deliver::pagerduty::PagerdutyDestination;
use crate::deliver::retry::RetryPolicy;
use crate::deliver::servicenow::ServicenowDestination;
use crate::deliver::{self, Destination, Destinations};
use crate::matcher::{Matcher, MatcherSettings};
use crate::metrics::Metrics;
use crate::outbox::postgres::PostgresStore;
use crate::outbox::sqlite::SqliteStore;
use crate::outbox::{Comment, Enrich, EnrichError, Enriched, Store};
use crate::pipeline::{Coalescer, Enricher, MatcherHandle, Pipeline};
use crate::reload::{self, Reloader};
use crate::render::Renderer;
use crate::runbooks::{Corpus, CorpusError};
use crate::search::{RunbookIndex, SearchError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("config key `runbooks.dir`: {0}")]
    Corpus(#[from] CorpusError),
    #[error(transparent)]
    Search(#[from] SearchError),
    #[error("config key `templates.dir`: {0}")]
    Render(#[from] crate::render::RenderError),
    #[error("config key `store.url`: {0}")]
    Store(#[from] crate::outbox::StoreError),
    #[error("config key `server.listen`: cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("http client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("config key {0}")]
    GenericTemplate(#[from] GenericTemplateError),
}

/// What request handlers share.
#[derive(Debug)]
pub struct AppState {
    pub pipeline: Pipeline,
    pub sources: Sources,
    pub max_body_bytes: usize,
    pub metrics: Arc<Metrics>,
    /// Above this many pending deliveries, new webhooks are shed with 503.
    pub high_water: u64,
    pub reloader: Arc<Reloader>,
    pub admin_token: Option<Secret>,
}

impl AppState {
    pub fn shedding(&self) -> bool {
        self.metrics.pending() >= self.high_water as i64
    }
}

pub struct Application {
    port: u16,
    server: Server,
    worker: Option<JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
}

/// Loads the corpus and builds the matcher; shared by the server and the CLI so both match
/// exactly the same way.
pub fn build_matcher(
    dir: &std::path::Path,
    base_url: &url::Url,
    settings: MatcherSettings,
) -> Result<(Matcher, Vec<crate::runbooks::LoadError>), AppError> {
    let corpus = Corpus::load(dir, base_url)?;
    let index = RunbookIndex::build(corpus.runbooks)?;
    Ok((Matcher::new(Arc::new(index), settings), corpus.errors))
}

/// Opens the configured store and brings its schema up to date. Without an `Enrich` the
/// store takes only matched accepts, and cannot apply an ingest log that holds unmatched
/// ones (`open_store_for` can).
pub async fn open_store(url: &StoreUrl) -> Result<Arc<dyn Store>, AppError> {
    open_store_with(url, None).await
}

pub async fn open_store_with(
    url: &StoreUrl,
    enrich: Option<Arc<dyn Enrich>>,
) -> Result<Arc<dyn Store>, AppError> {
    match url {
        StoreUrl::Sqlite(path) => Ok(Arc::new(SqliteStore::open_with(path, enrich)?)),
        StoreUrl::Postgres(url) => Ok(Arc::new(PostgresStore::open(url.expose()).await?)),
    }
}

/// The store as the operator tools open it: an ingest log left by a server that stopped
/// holds tickets acknowledged before they were matched, and applying them needs the
/// server's runbooks and templates. Those are loaded only if such a ticket is there.
pub async fn open_store_for(config: &Config) -> Result<Arc<dyn Store>, AppError> {
    let lazy = Arc::new(LazyEnricher {
        config: config.clone(),
        built: std::sync::OnceLock::new(),
    });
    open_store_with(&config.store, Some(lazy)).await
}

#[derive(Debug)]
struct LazyEnricher {
    config: Config,
    built: std::sync::OnceLock<Result<Enricher, String>>,
}

impl LazyEnricher {
    fn built(&self) -> Result<&Enricher, EnrichError> {
        let built = self.built.get_or_init(|| {
            let client = deliver::http_client(self.config.outbox.request_timeout)
                .map_err(|e| e.to_string())?;
            let (_, templates) = build_destinations(
                &self.config.destinations,
                &client,
                &retry_policy(&self.config),
            )
            .map_err(|e| e.to_string())?;
            build_enricher(&self.config, templates, Arc::new(Metrics::new()))
                .map_err(|e| e.to_string())
        });
        built.as_ref().map_err(|error| EnrichError(error.clone()))
    }
}

impl Enrich for LazyEnricher {
    fn ready(&self) -> Result<(), EnrichError> {
        self.built().map(|_| ())
    }

    fn enrich(
        &self,
        ticket: &crate::ticket::Ticket,
        delivery: Option<Comment<'_>>,
    ) -> Result<Enriched, EnrichError> {
        self.built()?.enrich(ticket, delivery)
    }
}

/// The signature, matcher and templates `serve` matches and renders with; `templates` names
/// the template of each configured destination.
pub fn build_enricher(
    config: &Config,
    templates: HashMap<String, String>,
    metrics: Arc<Metrics>,
) -> Result<Enricher, AppError> {
    let (matcher, load_errors) = build_matcher(
        &config.runbooks_dir,
        &config.runbooks_base_url,
        MatcherSettings {
            top_k: config.matcher.top_k,
            min_confidence: config.matcher.min_confidence,
        },
    )?;
    for error in &load_errors {
        tracing::warn!(%error, "runbook skipped");
    }
    tracing::info!(
        runbooks = matcher.index().len(),
        skipped = load_errors.len(),
        dir = %config.runbooks_dir.display(),
        "runbook index built"
    );
    let mut template_names: Vec<&String> = templates.values().collect();
    template_names.sort();
    template_names.dedup();
    let renderer = Renderer::load(
        &config.templates_dir,
        &config.matcher.no_match_text,
        &template_names,
    )?;
    Ok(Enricher {
        matcher: Arc::new(MatcherHandle::new(matcher)),
        renderer: Arc::new(renderer),
        normalizer: config.matcher.normalize.clone(),
        destinations: templates,
        top_k: config.matcher.top_k,
        metrics,
        coalescer: Coalescer::new(config.matcher.coalesce),
    })
}

fn retry_policy(config: &Config) -> RetryPolicy {
    RetryPolicy {
        base: config.outbox.backoff_base,
        cap: config.outbox.backoff_cap,
        max_attempts: config.outbox.max_attempts,
    }
}

/// One `Destination` per enabled `destinations.<name>`, and the template each renders with.
pub fn build_destinations(
    config: &DestinationsConfig,
    client: &reqwest::Client,
    policy: &RetryPolicy,
) -> Result<(Destinations, HashMap<String, String>), AppError> {
    let mut built: Vec<(Arc<dyn Destination>, &str)> = Vec::new();
    if let Some(github) = &config.github {
        if github.token.is_none() {
            tracing::warn!("destinations.github.token is not set: GitHub will refuse comments");
        }
        built.push((
            Arc::new(GithubDestination::new(
                github,
                client.clone(),
                policy.clone(),
            )),
            &github.common.template,
        ));
    }
    if let Some(jira) = &config.jira {
        built.push((
            Arc::new(JiraDestination::new(jira, client.clone(), policy.clone())),
            &jira.common.template,
        ));
    }
    if let Some(pagerduty) = &config.pagerduty {
        built.push((
            Arc::new(PagerdutyDestination::new(
                pagerduty,
                client.clone(),
                policy.clone(),
            )),
            &pagerduty.common.template,
        ));
    }
    if let Some(opsgenie) = &config.opsgenie {
        built.push((
            Arc::new(OpsgenieDestination::new(
                opsgenie,
                client.clone(),
                policy.clone(),
            )),
            &opsgenie.common.template,
        ));
    }
    if let Some(servicenow) = &config.servicenow {
        built.push((
            Arc::new(ServicenowDestination::new(
                servicenow,
                client.clone(),
                policy.clone(),
            )),
            &servicenow.common.template,
        ));
    }
    for generic in &config.generic {
        built.push((
            Arc::new(GenericDestination::new(
                generic,
                client.clone(),
                policy.clone(),
            )?),
            &generic.common.template,
        ));
    }
    let mut destinations = Destinations::new();
    let mut templates = HashMap::new();
    for (destination, template) in built {
        templates.insert(destination.name().to_string(), template.to_string());
        destinations.insert(destination.name().to_string(), destination);
    }
    Ok((destinations, templates))
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, AppError> {
        let client = deliver::http_client(config.outbox.request_timeout)?;
        let (destinations, templates) =
            build_destinations(&config.destinations, &client, &retry_policy(&config))?;
        let metrics = Arc::new(Metrics::new());
        tracing::info!(destinations = ?templates.keys().collect::<Vec<_>>(), "destinations enabled");
        let enricher = Arc::new(build_enricher(&config, templates, metrics.clone())?);
        let store = open_store_with(&config.store, Some(enricher.clone())).await?;
        let open = config.sources.unauthenticated();
        if !open.is_empty() {
            tracing::warn!(
                sources = %open.join(", "),
                "no secret or token configured: these sources accept unauthenticated webhooks"
            );
        }

        metrics.set_pending(store.counts().await?.pending as i64);
        let reloader = Arc::new(Reloader {
            dir: config.runbooks_dir.clone(),
            base_url: config.runbooks_base_url.clone(),
            settings: MatcherSettings {
                top_k: config.matcher.top_k,
                min_confidence: config.matcher.min_confidence,
            },
            matcher: enricher.matcher.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            running: tokio::sync::Mutex::new(()),
        });
        let pipeline = Pipeline {
            enricher,
            store: store.clone(),
            router: crate::routes::Router::new(config.routes.clone()),
            max_per_ticket: config.outbox.max_per_ticket,
        };
        let state = web::Data::new(AppState {
            pipeline,
            sources: config.sources.clone(),
            max_body_bytes: config.max_body_bytes,
            metrics: metrics.clone(),
            high_water: config.outbox.high_water,
            reloader: reloader.clone(),
            admin_token: config.admin_token.clone(),
        });

        let listener = TcpListener::bind(config.listen).map_err(|source| AppError::Bind {
            addr: config.listen.to_string(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| AppError::Bind {
                addr: config.listen.to_string(),
                source,
            })?
            .port();
        let server = actix_web::HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(from_fn(request_span))
                .route("/healthz", web::get().to(api::healthz))
                .route("/readyz", web::get().to(api::readyz))
                .route("/metrics", web::get().to(api::metrics))
                .route("/admin/reload", web::post().to(api::admin_reload))
                .route("/v1/match", web::post().to(api::preview_match))
                .route(
                    "/webhooks/github",
                    web::post().to(crate::ingest::github::webhook),
                )
                .route(
                    "/webhooks/alertmanager",
                    web::post().to(crate::ingest::alertmanager::webhook),
                )
                .route(
                    "/webhooks/grafana",
                    web::post().to(crate::ingest::grafana::webhook),
                )
                .route(
                    "/webhooks/pagerduty",
                    web::post().to(crate::ingest::pagerduty::webhook),
                )
                .route(
                    "/webhooks/jira",
                    web::post().to(crate::ingest::jira::webhook),
                )
                .route(
                    "/webhooks/opsgenie",
                    web::post().to(crate::ingest::opsgenie::webhook),
                )
                .route(
                    "/webhooks/servicenow",
                    web::post().to(crate::ingest::servicenow::webhook),
                )
                .route(
                    "/webhooks/generic/{name}",
                    web::post().to(crate::ingest::generic::webhook),
                )
        })
        .listen(listener)
        .map_err(|source| AppError::Bind {
            addr: config.listen.to_string(),
            source,
        })?
        .run();
        tracing::info!(port, "listening");

        let (shutdown, shutdown_rx) = watch::channel(false);
        tokio::spawn(reload::on_sighup(reloader.clone(), shutdown_rx.clone()));
        if let Some(interval) = config.runbooks_watch {
            tokio::spawn(reload::watch(reloader, interval, shutdown_rx.clone()));
        }
        if store.shared() {
            tokio::spawn(resync_pending(
                store.clone(),
                metrics.clone(),
                shutdown_rx.clone(),
            ));
        }
        let worker = config.outbox.worker.then(|| {
            tokio::spawn(deliver::run_workers(
                store,
                Arc::new(destinations),
                config.outbox.clone(),
                metrics,
                shutdown_rx,
            ))
        });
        Ok(Application {
            port,
            server,
            worker,
            shutdown,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn server_handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until the server stops (SIGINT/SIGTERM or a handle), then lets the worker finish
    /// what it is posting; everything else stays in the store for the next start.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        let _ = self.shutdown.send(true);
        if let Some(worker) = self.worker {
            let _ = worker.await;
        }
        result
    }
}

/// The pending count each replica keeps is its own accepts minus its own deliveries; with
/// several replicas on one database it drifts. Reading the store's count now and then keeps
/// the gauge, and load shedding that uses it, true.
async fn resync_pending(
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let every = std::time::Duration::from_secs(5);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        match store.pending().await {
            Ok(pending) => metrics.set_pending(pending as i64),
            Err(error) => tracing::warn!(%error, "cannot read outbox counts"),
        }
    }
}

/// Each request gets a span with an id (echoed as `X-Request-Id`), so every log line of one
/// webhook can be found, from the sender's retry to the ticket it became.
async fn request_span(
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
