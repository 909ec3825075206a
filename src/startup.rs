//! `Application::build(config)` wires everything, once: the parts `wiring` builds from the
//! configuration, the delivery worker, the reloader and the HTTP server. Tests start this
//! very same application on port 0, so what they exercise is what ships. Nothing else in the
//! crate imports this module.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_http::{HttpService, KeepAlive};
use actix_server::{Server, ServerHandle};
use actix_service::map_config;
use actix_web::App;
use actix_web::dev::AppConfig;
use actix_web::middleware::from_fn;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::deliver;
use crate::http::{AdminToken, AppState, Limits};
use crate::ingest::SourceSet;
use crate::matcher::MatcherSettings;
use crate::metrics::Metrics;
use crate::outbox::Store;
use crate::pipeline::Pipeline;
use crate::reload::{self, Reloader};
use crate::semantic::SemanticSetup;
use crate::wiring::{
    BuildError, build_destinations, build_enricher, marker_key, open_store_with, retry_policy,
};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("config key `store.url`: {0}")]
    Store(#[from] crate::outbox::StoreError),
    #[error("config key `templates.dir`: {0}")]
    Console(#[from] crate::console::ConsoleError),
    #[error("config key `server.listen`: cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("start-up task failed: {0}")]
    Join(String),
}

pub struct Application {
    port: u16,
    server: Server,
    worker: Option<JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
    cancel: watch::Sender<bool>,
    /// How long the delivery worker may finish its posts after the server stopped.
    drain: std::time::Duration,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let corpus_baseline = reload::fingerprint(&config.runbooks_dir);
        let client =
            deliver::http_client(config.outbox.request_timeout).map_err(BuildError::from)?;
        let marker = marker_key(&config).await?;
        let (destinations, templates) = build_destinations(
            &config.destinations,
            &client,
            &retry_policy(&config),
            &marker,
        )?;
        let metrics = Arc::new(Metrics::new());
        tracing::info!(destinations = ?templates.keys().collect::<Vec<_>>(), "destinations enabled");
        // Loading the model and embedding the corpus take seconds: off the async threads.
        let lessons = Arc::new(crate::feedback::LessonBook::default());
        let destination_names = templates.keys().cloned().collect();
        let (enricher, semantic) = {
            let (config, metrics, marker) = (config.clone(), metrics.clone(), marker.clone());
            let lessons = lessons.clone();
            tokio::task::spawn_blocking(move || -> Result<_, BuildError> {
                let semantic = SemanticSetup::from_config(&config.matcher)?;
                let mut enricher =
                    build_enricher(&config, templates, metrics, marker, semantic.as_ref())?;
                if config.matcher.learn {
                    enricher.lessons = Some(lessons);
                }
                Ok((Arc::new(enricher), semantic))
            })
            .await
            .map_err(|e| StartError::Join(e.to_string()))??
        };
        let store = open_store_with(&config.store, Some(enricher.clone())).await?;
        let open = config.sources.unauthenticated();
        if !open.is_empty() {
            tracing::warn!(
                sources = %open.join(", "),
                "no secret or token configured: these sources accept unauthenticated webhooks"
            );
        }

        metrics.set_pending(store.counts().await?.pending as i64);
        let canary = Arc::new(crate::canary::Canary::new(
            config.canary.clone(),
            enricher.matcher.clone(),
            store.clone(),
            metrics.clone(),
        ));
        if config.canary.enabled {
            let _ = enricher.canary.set(canary.clone());
        }
        let reloader = Arc::new(Reloader {
            dir: config.runbooks_dir.clone(),
            base_url: config.runbooks_base_url.clone(),
            settings: MatcherSettings {
                top_k: config.matcher.top_k,
                min_confidence: config.matcher.min_confidence,
            },
            matcher: enricher.matcher.clone(),
            semantic,
            store: store.clone(),
            metrics: metrics.clone(),
            running: tokio::sync::Mutex::new(()),
            canary: config.canary.enabled.then(|| canary.clone()),
        });
        let teacher = Arc::new(crate::feedback::Teacher {
            store: store.clone(),
            matcher: enricher.matcher.clone(),
            normalizer: config.matcher.normalize.clone(),
            book: lessons,
            metrics: metrics.clone(),
            marker: marker.clone(),
            destinations: destination_names,
            github: config.destinations.github.as_ref().map(|github| {
                Arc::new(deliver::github::GithubDestination::new(
                    github,
                    client.clone(),
                    retry_policy(&config),
                ))
            }),
        });
        if let Err(error) = teacher.refresh().await {
            tracing::warn!(%error, "taught answers not loaded");
        }
        let pipeline = Pipeline {
            enricher,
            store: store.clone(),
            router: crate::reply_routing::ReplyRouter::new(config.routes.clone()),
            max_per_ticket: config.outbox.max_per_ticket,
        };
        let console = match crate::console::Access::from_config(&config) {
            Ok(access) => {
                tracing::info!(login = access.needs_login(), "web console on at /ui");
                Some(Arc::new(crate::console::Console::new(
                    access,
                    &config.templates_dir,
                    config.runbooks_dir.clone(),
                    config.runbooks_base_url.clone(),
                    metrics.clone(),
                )?))
            }
            Err(reason) => {
                tracing::info!(%reason, "web console off");
                None
            }
        };
        let state = AppState::new(
            pipeline,
            metrics.clone(),
            Limits {
                max_body_bytes: config.max_body_bytes,
                body_timeout: config.body_timeout,
                high_water: config.outbox.high_water,
            },
            AdminToken(config.admin_token.clone()),
            SourceSet::new(&config.sources, &marker),
            crate::http::Services {
                reloader: reloader.clone(),
                teacher: teacher.clone(),
                canary: canary.clone(),
                console,
            },
        );

        let listener = TcpListener::bind(config.listen).map_err(|source| StartError::Bind {
            addr: config.listen.to_string(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: config.listen.to_string(),
                source,
            })?
            .port();
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let connections = connection_limit(config.max_connections, workers);
        let local = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen.to_string(),
            source,
        })?;
        let (request_timeout, max_body) = (config.request_timeout, config.max_body_bytes);
        // actix-web's `HttpServer` has no say in `Expect: 100-continue`; the HTTP service
        // underneath does, so the server is assembled from it with the same settings.
        let server = actix_server::Server::build()
            .workers(workers)
            .max_concurrent_connections(connections.div_ceil(workers).max(1))
            .shutdown_timeout((config.shutdown_timeout / 2).as_secs().max(1))
            .listen("runlink", listener, move || {
                let app = App::new()
                    .wrap(from_fn(crate::http::request_span))
                    .configure(crate::http::configure(&state));
                HttpService::build()
                    .keep_alive(KeepAlive::Timeout(Duration::from_secs(5)))
                    .client_request_timeout(request_timeout)
                    .client_disconnect_timeout(Duration::from_secs(1))
                    .local_addr(local)
                    .expect(crate::http::expect_continue(max_body))
                    .finish(map_config(app, |_| AppConfig::default()))
                    .tcp()
            })
            .map_err(|source| StartError::Bind {
                addr: config.listen.to_string(),
                source,
            })?
            .run();
        tracing::info!(
            port,
            max_connections = connections,
            "listening; past max_connections new connections wait in the backlog"
        );

        let (shutdown, shutdown_rx) = watch::channel(false);
        let (cancel, cancel_rx) = watch::channel(false);
        tokio::spawn(reload::on_sighup(reloader.clone(), shutdown_rx.clone()));
        if let Some(interval) = config.runbooks_watch {
            tokio::spawn(reload::watch(
                reloader,
                interval,
                corpus_baseline,
                shutdown_rx.clone(),
            ));
        }
        tokio::spawn(refresh_lessons(teacher, shutdown_rx.clone()));
        if config.canary.enabled {
            tokio::spawn(crate::canary::keep_in_sync(canary, shutdown_rx.clone()));
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
                cancel_rx,
            ))
        });
        Ok(Application {
            port,
            server,
            worker,
            shutdown,
            cancel,
            drain: config.shutdown_timeout / 2,
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
    /// `server.shutdown_timeout_ms` bounds the whole stop: half for requests in flight, half
    /// for posts in flight, which are then cancelled and given back as uncertain.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        let _ = self.shutdown.send(true);
        if let Some(mut worker) = self.worker
            && tokio::time::timeout(self.drain, &mut worker).await.is_err()
        {
            let _ = self.cancel.send(true);
            // Giving the items back is one store write each; past this, the leases
            // bring them back instead.
            if tokio::time::timeout(std::time::Duration::from_secs(3), &mut worker)
                .await
                .is_err()
            {
                worker.abort();
            }
        }
        result
    }
}

/// Open connections at most: the configured number, or what the process's file limit leaves
/// room for (raised to its hard limit first), keeping a quarter of it for the store, the
/// ingest log and outgoing requests. Slow clients past it wait in the backlog instead of
/// taking the descriptors everything else needs.
fn connection_limit(configured: usize, workers: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    let files = raise_file_limit();
    let limit = (files - files / 4).max(workers as u64 * 16);
    usize::try_from(limit).unwrap_or(usize::MAX)
}

/// Raises the soft limit on open files to the hard one; returns the limit in force.
fn raise_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur.min(1 << 20)
}

/// Lessons change in other processes too: another replica records a command, or an author
/// runs `runlink feedback forget`. Reading the feedback table now and then picks them up.
async fn refresh_lessons(
    teacher: Arc<crate::feedback::Teacher>,
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
        if let Err(error) = teacher.refresh().await {
            tracing::warn!(%error, "cannot read feedback");
        }
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
