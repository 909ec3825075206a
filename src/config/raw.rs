//! The first stage: what the TOML file and the `RUNLINK__*` environment say, layered over the
//! built-in defaults (`defaults.toml`), before anything is checked.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, RawDestinations, RawRoute, RawSources, Secret};

#[derive(Debug, Deserialize)]
pub struct RawSettings {
    pub server: RawServer,
    pub runbooks: RawRunbooks,
    pub templates: RawTemplates,
    pub store: RawStore,
    pub matcher: RawMatcher,
    pub outbox: RawOutbox,
    #[serde(default)]
    pub sources: RawSources,
    #[serde(default)]
    pub destinations: RawDestinations,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
pub struct RawServer {
    pub listen: String,
    pub max_body_bytes: usize,
    pub request_timeout_ms: u64,
    pub body_timeout_ms: u64,
    pub max_connections: usize,
    pub shutdown_timeout_ms: u64,
    pub admin_token: Option<Secret>,
    pub marker_secret: Option<Secret>,
    pub ui: bool,
    pub ui_token: Option<Secret>,
}

#[derive(Debug, Deserialize)]
pub struct RawRunbooks {
    pub dir: PathBuf,
    pub base_url: String,
    pub watch: bool,
    pub watch_interval_ms: u64,
    pub canary: RawCanary,
}

#[derive(Debug, Deserialize)]
pub struct RawCanary {
    pub enabled: bool,
    pub min_tickets: u64,
    pub min_secs: u64,
    pub max_changed: f64,
}

#[derive(Debug, Deserialize)]
pub struct RawTemplates {
    pub dir: PathBuf,
}

#[derive(Debug, Deserialize)]
pub struct RawStore {
    pub url: String,
}

#[derive(Debug, Deserialize)]
pub struct RawMatcher {
    pub top_k: usize,
    pub min_confidence: f32,
    pub no_match_text: String,
    pub coalesce_secs: u64,
    #[serde(default)]
    pub normalize: Vec<crate::signature::NormalizeRule>,
    pub model_dir: PathBuf,
    pub semantic_weight: f32,
    pub learn: bool,
    pub embedding_cache_dir: PathBuf,
}

#[derive(Debug, Deserialize)]
pub struct RawOutbox {
    pub worker: bool,
    pub poll_interval_ms: u64,
    pub batch_size: usize,
    pub lease_secs: u64,
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
    pub request_timeout_ms: u64,
    pub max_age_secs: u64,
    pub high_water: u64,
    pub max_per_ticket: u32,
    pub max_per_reply_target: u32,
    pub reply_target_window_secs: u64,
    pub fold_wait_ms: u64,
}

/// The defaults are the "embedded" setup: bundled runbooks, SQLite under `data/`, loopback.
const DEFAULTS: &str = include_str!("defaults.toml");

impl RawSettings {
    /// Layers: built-in defaults, then the optional TOML file, then `RUNLINK__SECTION__KEY`.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        // Values are taken as the strings they are: parsing them here would turn a token
        // `007` into the number 7 and `1e3` into 1000. Numeric keys still read as numbers.
        builder = builder.add_source(
            config::Environment::with_prefix("RUNLINK")
                .prefix_separator("__")
                .separator("__"),
        );
        let env: Vec<String> = std::env::vars_os()
            .filter_map(|(name, _)| name.into_string().ok())
            .filter(|name| name.starts_with("RUNLINK__"))
            .collect();
        Self::checked(builder.build()?, &env)
    }

    /// Refuses unknown keys, then reads the settings.
    fn checked(built: config::Config, env: &[String]) -> Result<Self, ConfigError> {
        let tree: serde_json::Value = built.clone().try_deserialize()?;
        super::keys::check_known(&tree, env)?;
        let mut settings: RawSettings = built.try_deserialize()?;
        settings.sources.configured = tree["sources"]
            .as_object()
            .map(|tables| {
                tables
                    .iter()
                    .filter(|(name, table)| {
                        *name != "generic" && table.as_object().is_some_and(|t| !t.is_empty())
                    })
                    .map(|(name, _)| name.clone())
                    .collect()
            })
            .unwrap_or_default();
        Ok(settings)
    }

    /// Defaults plus TOML layers, later ones winning: what tests and tools use to build a
    /// config without touching the process environment.
    pub fn from_toml_layers(layers: &[&str]) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        for layer in layers {
            builder = builder.add_source(config::File::from_str(layer, config::FileFormat::Toml));
        }
        Self::checked(builder.build()?, &[])
    }
}
