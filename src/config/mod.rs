//! Settings, in two stages (the ripgrep habit): `RawSettings` is what the TOML file and the
//! `RUNLINK__*` environment say, `Config` is the checked form with URLs parsed and secrets
//! wrapped. Anything that can be wrong is found here, before the server binds a port, and the
//! error names the key so an operator can fix the right line.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

mod check;
mod destinations;
mod keys;
mod raw;
mod sources;
#[cfg(test)]
mod tests;
mod urls;

pub use destinations::*;
pub use raw::*;
pub use sources::*;
pub use urls::*;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Load(#[from] config::ConfigError),
    #[error("{}", .0.join("; "))]
    Unknown(Vec<String>),
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

impl ConfigError {
    pub fn invalid(key: &'static str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key,
            message: message.into(),
        }
    }
}

/// A credential read from config or env. It never prints, so it can sit in structs that are
/// logged with `{:?}`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    /// How long a client may take to send a request's headers...
    pub request_timeout: Duration,
    /// ...and its body: a sender that trickles bytes is cut off, not waited for.
    pub body_timeout: Duration,
    /// Open connections at most, all workers together; 0 derives it from the file limit.
    pub max_connections: usize,
    /// SIGTERM to exit at most: half for requests in flight, half for posts in flight.
    pub shutdown_timeout: Duration,
    pub runbooks_dir: PathBuf,
    pub runbooks_base_url: Url,
    /// Reload the corpus when its files change (polled every `watch_interval`).
    pub runbooks_watch: Option<Duration>,
    /// Shadow rollout of corpus changes (`crate::canary`).
    pub canary: crate::canary::CanarySettings,
    pub admin_token: Option<Secret>,
    /// Signs the marker in runlink's comments; made once and kept in the store when unset.
    pub marker_secret: Option<Secret>,
    /// The web console under `/ui` (`crate::console`): off with `false`; otherwise on
    /// loopback without a login, elsewhere only with `ui_token`.
    pub ui: bool,
    pub ui_token: Option<Secret>,
    pub templates_dir: PathBuf,
    pub store: StoreUrl,
    pub matcher: MatcherConfig,
    pub outbox: OutboxConfig,
    pub sources: Sources,
    pub destinations: DestinationsConfig,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone)]
pub struct MatcherConfig {
    pub top_k: usize,
    pub min_confidence: f32,
    pub no_match_text: String,
    pub coalesce: Duration,
    pub normalize: crate::signature::Normalizer,
    /// The sentence-embedding model (`scripts/fetch-model.sh`); matching is lexical only
    /// while it is missing.
    pub model_dir: PathBuf,
    /// Share of the semantic score in the text ranking, in [0, 1]; 0 turns the model off.
    pub semantic_weight: f32,
    /// Where runbook embeddings are kept between builds; empty: not kept.
    pub embedding_cache_dir: Option<PathBuf>,
    /// Whether answers operators teach with `/runlink use` apply to later tickets (the
    /// commands are recorded either way).
    pub learn: bool,
}

#[derive(Debug, Clone)]
pub struct OutboxConfig {
    pub worker: bool,
    pub poll_interval: Duration,
    pub batch_size: usize,
    pub lease: Duration,
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    pub request_timeout: Duration,
    pub max_age: Duration,
    /// Above this many pending deliveries, webhooks get 503 + Retry-After.
    pub high_water: u64,
    pub max_per_ticket: u32,
    /// At most this many comments on one reply target (one issue, one incident) within
    /// `reply_target_window`; the last one allowed lists the alerts folded into it. 0: no cap.
    pub max_per_reply_target: u32,
    pub reply_target_window: Duration,
    /// How long the last comment allowed waits for more alerts to fold into it.
    pub fold_wait: Duration,
}

impl Config {
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        RawSettings::load(file)?.try_into()
    }

    pub fn from_toml(overrides: &str) -> Result<Self, ConfigError> {
        Config::from_toml_layers(&[overrides])
    }

    pub fn from_toml_layers(layers: &[&str]) -> Result<Self, ConfigError> {
        RawSettings::from_toml_layers(layers)?.try_into()
    }
}
