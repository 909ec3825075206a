//! Building the parts from the configuration: the matcher, the store, the destinations and
//! the enricher. The server (`startup`) and the operator tools (`runlink audit`, `replay`,
//! `outbox`) build them the same way from here, so both match and open stores identically.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, DestinationsConfig, StoreUrl};
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
use crate::pipeline::{Coalescer, Enricher, MatcherHandle};
use crate::render::MarkerKey;
use crate::render::Renderer;
use crate::runbooks::{Corpus, CorpusError};
use crate::search::{RunbookIndex, SearchError};
use crate::semantic::{SemanticError, SemanticSetup};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("config key `runbooks.dir`: {0}")]
    Corpus(#[from] CorpusError),
    #[error(transparent)]
    Search(#[from] SearchError),
    #[error("config key `templates.dir`: {0}")]
    Render(#[from] crate::render::RenderError),
    #[error("config key `store.url`: {0}")]
    Store(#[from] crate::outbox::StoreError),
    #[error("http client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("config key {0}")]
    GenericTemplate(#[from] GenericTemplateError),
    #[error("config key `matcher.model_dir`: {0}")]
    Semantic(#[from] SemanticError),
}

/// Loads the corpus and builds the matcher; shared by the server and the CLI so both match
/// exactly the same way.
pub fn build_matcher(
    dir: &std::path::Path,
    base_url: &url::Url,
    settings: MatcherSettings,
    semantic: Option<&SemanticSetup>,
) -> Result<(Matcher, Vec<crate::runbooks::LoadError>), BuildError> {
    build_matcher_cached_as(dir, dir, base_url, settings, semantic)
}

/// `build_matcher` over a copy of a corpus, whose embeddings are cached as the original's
/// (`cache_as`): only what the copy changed is embedded again.
pub fn build_matcher_cached_as(
    dir: &std::path::Path,
    cache_as: &std::path::Path,
    base_url: &url::Url,
    settings: MatcherSettings,
    semantic: Option<&SemanticSetup>,
) -> Result<(Matcher, Vec<crate::runbooks::LoadError>), BuildError> {
    let corpus = Corpus::load(dir, base_url)?;
    let index = RunbookIndex::build(corpus.runbooks)?;
    Ok((
        matcher_over(index, settings, semantic, cache_as),
        corpus.errors,
    ))
}

/// A matcher over a built index, with the semantic signal when it is set up.
pub fn matcher_over(
    index: RunbookIndex,
    settings: MatcherSettings,
    semantic: Option<&SemanticSetup>,
    corpus_dir: &std::path::Path,
) -> Matcher {
    let semantic = semantic.and_then(|s| s.index(index.runbooks(), corpus_dir));
    let matcher = Matcher::new(Arc::new(index), settings);
    match semantic {
        Some(semantic) => matcher.with_semantic(semantic),
        None => matcher,
    }
}

/// Opens the configured store and brings its schema up to date. Without an `Enrich` the
/// store takes only matched accepts, and cannot apply an ingest log that holds unmatched
/// ones (`open_store_for` can).
pub async fn open_store(url: &StoreUrl) -> Result<Arc<dyn Store>, BuildError> {
    open_store_with(url, None).await
}

pub async fn open_store_with(
    url: &StoreUrl,
    enrich: Option<Arc<dyn Enrich>>,
) -> Result<Arc<dyn Store>, BuildError> {
    match url {
        StoreUrl::Sqlite(path) => Ok(Arc::new(SqliteStore::open_with(path, enrich)?)),
        StoreUrl::Postgres(url) => Ok(Arc::new(PostgresStore::open(url.expose()).await?)),
    }
}

/// The store's name for the secret markers are signed with.
const MARKER_SECRET: &str = "marker";

/// The key runlink's markers are signed with: `server.marker_secret`, or the one kept in the
/// store (made at its first start).
pub async fn marker_key(config: &Config) -> Result<MarkerKey, BuildError> {
    if let StoreUrl::Postgres(url) = &config.store
        && config.marker_secret.is_none()
    {
        let store = PostgresStore::open(url.expose()).await?;
        let secret = store.stored_secret(MARKER_SECRET, &fresh_secret()).await?;
        return Ok(MarkerKey::new(secret.as_bytes()));
    }
    marker_key_local(config)
}

/// `marker_key` where no PostgreSQL store needs asking (that one is matched before it is
/// stored, so no unmatched ticket waits for a key).
fn marker_key_local(config: &Config) -> Result<MarkerKey, BuildError> {
    match (&config.marker_secret, &config.store) {
        (Some(secret), _) => Ok(MarkerKey::new(secret.expose().as_bytes())),
        (None, StoreUrl::Sqlite(path)) => Ok(MarkerKey::new(
            SqliteStore::stored_secret(path, MARKER_SECRET, &fresh_secret())?.as_bytes(),
        )),
        (None, StoreUrl::Postgres(_)) => Err(BuildError::Store(crate::outbox::StoreError::Join(
            "the marker key of a PostgreSQL store is read with `marker_key`".into(),
        ))),
    }
}

fn fresh_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The store as the operator tools open it: an ingest log left by a server that stopped
/// holds tickets acknowledged before they were matched, and applying them needs the
/// server's runbooks and templates. Those are loaded only if such a ticket is there.
pub async fn open_store_for(config: &Config) -> Result<Arc<dyn Store>, BuildError> {
    let lazy = Arc::new(LazyEnricher {
        config: config.clone(),
        built: std::sync::OnceLock::new(),
    });
    open_store_with(&config.store, Some(lazy)).await
}

#[derive(Debug)]
struct LazyEnricher {
    config: Config,
    built: std::sync::OnceLock<Result<Enricher, Arc<BuildError>>>,
}

impl LazyEnricher {
    fn built(&self) -> Result<&Enricher, EnrichError> {
        let built = self.built.get_or_init(|| {
            let build = || {
                let client = deliver::http_client(self.config.outbox.request_timeout)?;
                let marker = marker_key_local(&self.config)?;
                let (_, templates) = build_destinations(
                    &self.config.destinations,
                    &client,
                    &retry_policy(&self.config),
                    &marker,
                )?;
                let semantic = SemanticSetup::from_config(&self.config.matcher)?;
                build_enricher(
                    &self.config,
                    templates,
                    Arc::new(Metrics::new()),
                    marker,
                    semantic.as_ref(),
                )
            };
            build().map_err(Arc::new)
        });
        built
            .as_ref()
            .map_err(|error| EnrichError(Box::new(error.clone())))
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
    marker: MarkerKey,
    semantic: Option<&SemanticSetup>,
) -> Result<Enricher, BuildError> {
    let (matcher, load_errors) = build_matcher(
        &config.runbooks_dir,
        &config.runbooks_base_url,
        MatcherSettings {
            top_k: config.matcher.top_k,
            min_confidence: config.matcher.min_confidence,
        },
        semantic,
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
        marker,
    )?;
    Ok(Enricher {
        matcher: Arc::new(MatcherHandle::new(matcher)),
        renderer: Arc::new(renderer),
        normalizer: config.matcher.normalize.clone(),
        destinations: templates,
        top_k: config.matcher.top_k,
        metrics,
        coalescer: Coalescer::new(config.matcher.coalesce),
        known: Default::default(),
        lessons: None,
        canary: Default::default(),
    })
}

pub fn retry_policy(config: &Config) -> RetryPolicy {
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
    marker: &MarkerKey,
) -> Result<(Destinations, HashMap<String, String>), BuildError> {
    let mut built: Vec<(Arc<dyn Destination>, &str)> = Vec::new();
    if let Some(github) = &config.github {
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
                marker.clone(),
            )?),
            &generic.common.template,
        ));
    }
    // Probes are answered in the sink, rendered like a GitHub comment.
    built.push((
        Arc::new(crate::deliver::probe::ProbeSink::new(policy.clone())),
        "github.md.j2",
    ));
    let mut destinations = Destinations::new();
    let mut templates = HashMap::new();
    for (destination, template) in built {
        templates.insert(destination.name().to_string(), template.to_string());
        destinations.insert(destination.name().to_string(), destination);
    }
    Ok((destinations, templates))
}
