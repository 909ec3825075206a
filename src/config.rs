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

mod destinations;
mod sources;

pub use destinations::*;
pub use sources::*;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {0}")]
    Load(#[from] config::ConfigError),
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
    pub admin_token: Option<Secret>,
}

#[derive(Debug, Deserialize)]
pub struct RawRunbooks {
    pub dir: PathBuf,
    pub base_url: String,
    pub watch: bool,
    pub watch_interval_ms: u64,
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
}

/// The defaults are the "embedded" setup: bundled runbooks, SQLite under `data/`, loopback.
const DEFAULTS: &str = r#"
[server]
listen = "127.0.0.1:8080"
max_body_bytes = 1048576

[runbooks]
dir = "index/runbooks"
base_url = "https://runbooks.example.com/"
watch = true
watch_interval_ms = 2000

[templates]
dir = "templates"

[store]
url = "sqlite://data/runlink.db"

[matcher]
top_k = 3
min_confidence = 0.54
no_match_text = "runlink found no runbook it is confident about for this alarm."
coalesce_secs = 60

[outbox]
worker = true
poll_interval_ms = 500
batch_size = 32
lease_secs = 60
max_attempts = 12
backoff_base_ms = 1000
backoff_cap_ms = 300000
request_timeout_ms = 10000
max_age_secs = 86400
high_water = 100000
max_per_ticket = 3

[destinations.github]
api_url = "https://api.github.com"
"#;

impl RawSettings {
    /// Layers: built-in defaults, then the optional TOML file, then `RUNLINK__SECTION__KEY`.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("RUNLINK")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
        Ok(builder.build()?.try_deserialize()?)
    }

    /// Defaults plus TOML layers, later ones winning: what tests and tools use to build a
    /// config without touching the process environment.
    pub fn from_toml_layers(layers: &[&str]) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        for layer in layers {
            builder = builder.add_source(config::File::from_str(layer, config::FileFormat::Toml));
        }
        Ok(builder.build()?.try_deserialize()?)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite(PathBuf),
    Postgres(PostgresUrl),
}

/// A PostgreSQL connection URL. It usually holds a password, so it prints without one.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl(String);

impl PostgresUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Url::parse(&self.0) {
            Ok(mut url) => {
                if url.password().is_some() {
                    let _ = url.set_password(Some("***"));
                }
                // Passwords can also hide in the query (`?password=`).
                url.set_query(None);
                write!(f, "PostgresUrl({url})")
            }
            Err(_) => f.write_str("PostgresUrl(***)"),
        }
    }
}

impl StoreUrl {
    pub fn parse(raw: &str) -> Result<Self, ConfigError> {
        if let Some(path) = raw.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(ConfigError::invalid(
                    "store.url",
                    "sqlite:// needs a file path",
                ));
            }
            return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
        }
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            raw.parse::<tokio_postgres::Config>()
                .map_err(|e| ConfigError::invalid("store.url", e.to_string()))?;
            return Ok(StoreUrl::Postgres(PostgresUrl(raw.to_string())));
        }
        let scheme = raw.split("://").next().unwrap_or(raw);
        Err(ConfigError::invalid(
            "store.url",
            format!("unsupported store `{scheme}` (expected sqlite://PATH or postgres://...)"),
        ))
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub runbooks_dir: PathBuf,
    pub runbooks_base_url: Url,
    /// Reload the corpus when its files change (polled every `watch_interval`).
    pub runbooks_watch: Option<Duration>,
    pub admin_token: Option<Secret>,
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
}

fn parse_url(key: &'static str, raw: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(raw).map_err(|e| ConfigError::invalid(key, format!("`{raw}`: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::invalid(key, "must be an http(s) URL"));
    }
    Ok(url)
}

/// An empty secret in config or env means "not set".
pub(crate) fn present(secret: Option<Secret>) -> Option<Secret> {
    secret.filter(|s| !s.expose().is_empty())
}

/// Names of generic sources and destinations become URL path segments and metric labels:
/// letters, digits, `-` and `_` only.
pub(crate) fn check_name(key: &'static str, name: &str) -> Result<(), ConfigError> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("`{name}`: names are letters, digits, `-` and `_`"),
        ))
    }
}

/// A base URL that later gets paths joined onto it must end in `/`, or `Url::join` would
/// replace its last segment.
pub(crate) fn parse_base_url(key: &'static str, raw: &str) -> Result<Url, ConfigError> {
    let mut url = parse_url(key, raw)?;
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

impl TryFrom<RawSettings> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawSettings) -> Result<Self, ConfigError> {
        let listen = raw.server.listen.parse().map_err(|e| {
            ConfigError::invalid("server.listen", format!("`{}`: {e}", raw.server.listen))
        })?;
        if raw.server.max_body_bytes == 0 {
            return Err(ConfigError::invalid(
                "server.max_body_bytes",
                "must be greater than 0",
            ));
        }
        if raw.matcher.top_k == 0 {
            return Err(ConfigError::invalid("matcher.top_k", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&raw.matcher.min_confidence) {
            return Err(ConfigError::invalid(
                "matcher.min_confidence",
                "must be between 0 and 1",
            ));
        }
        let normalize = crate::signature::Normalizer::with_rules(raw.matcher.normalize)
            .map_err(|e| ConfigError::invalid("matcher.normalize", e.to_string()))?;
        if raw.outbox.backoff_base_ms == 0 || raw.outbox.backoff_cap_ms < raw.outbox.backoff_base_ms
        {
            return Err(ConfigError::invalid(
                "outbox.backoff_cap_ms",
                "needs 0 < backoff_base_ms <= backoff_cap_ms",
            ));
        }
        // An uncertain item makes two requests under one lease: the marker check, the post.
        if raw.outbox.lease_secs.max(1) * 1000 < 2 * raw.outbox.request_timeout_ms + 1000 {
            return Err(ConfigError::invalid(
                "outbox.lease_secs",
                "must exceed twice outbox.request_timeout_ms by at least a second: the marker check and the post must both end before the lease does",
            ));
        }
        if raw.outbox.max_attempts == 0 {
            return Err(ConfigError::invalid(
                "outbox.max_attempts",
                "must be at least 1",
            ));
        }
        let destinations = raw.destinations.check()?;
        let routes = check_routes(raw.routes, &destinations.names())?;
        Ok(Config {
            listen,
            max_body_bytes: raw.server.max_body_bytes,
            runbooks_dir: raw.runbooks.dir,
            runbooks_base_url: parse_base_url("runbooks.base_url", &raw.runbooks.base_url)?,
            runbooks_watch: raw
                .runbooks
                .watch
                .then(|| Duration::from_millis(raw.runbooks.watch_interval_ms.max(50))),
            admin_token: raw.server.admin_token.filter(|s| !s.expose().is_empty()),
            templates_dir: raw.templates.dir,
            store: StoreUrl::parse(&raw.store.url)?,
            matcher: MatcherConfig {
                top_k: raw.matcher.top_k,
                min_confidence: raw.matcher.min_confidence,
                no_match_text: raw.matcher.no_match_text,
                coalesce: Duration::from_secs(raw.matcher.coalesce_secs),
                normalize,
            },
            outbox: OutboxConfig {
                worker: raw.outbox.worker,
                poll_interval: Duration::from_millis(raw.outbox.poll_interval_ms.max(10)),
                batch_size: raw.outbox.batch_size.max(1),
                lease: Duration::from_secs(raw.outbox.lease_secs.max(1)),
                max_attempts: raw.outbox.max_attempts,
                backoff_base: Duration::from_millis(raw.outbox.backoff_base_ms),
                backoff_cap: Duration::from_millis(raw.outbox.backoff_cap_ms),
                request_timeout: Duration::from_millis(raw.outbox.request_timeout_ms.max(1)),
                max_age: Duration::from_secs(raw.outbox.max_age_secs.max(1)),
                high_water: raw.outbox.high_water.max(1),
                max_per_ticket: raw.outbox.max_per_ticket.max(1),
            },
            sources: raw.sources.check()?,
            destinations,
            routes,
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_embedded_setup() {
        let config = Config::from_toml("").unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(
            config.store,
            StoreUrl::Sqlite(PathBuf::from("data/runlink.db"))
        );
        assert_eq!(
            config.destinations.github.unwrap().common.api_url.as_str(),
            "https://api.github.com/"
        );
        assert!(config.sources.github_secret.is_none());
        assert!(config.destinations.jira.is_none());
        assert!(config.routes.is_empty());
    }

    #[test]
    fn bad_listen_address_names_the_key() {
        let err = Config::from_toml("[server]\nlisten = \"nowhere\"").unwrap_err();
        assert!(err.to_string().contains("server.listen"), "{err}");
    }

    #[test]
    fn bad_base_url_names_the_key() {
        let err = Config::from_toml("[runbooks]\nbase_url = \"not a url\"").unwrap_err();
        assert!(err.to_string().contains("runbooks.base_url"), "{err}");
    }

    #[test]
    fn unknown_store_scheme_names_the_key() {
        let err = Config::from_toml("[store]\nurl = \"mysql://x\"").unwrap_err();
        assert!(err.to_string().contains("store.url"), "{err}");
    }

    #[test]
    fn bad_normalization_regex_names_the_key() {
        let err = Config::from_toml(
            "[[matcher.normalize]]\nname = \"broken\"\npattern = \"(\"\nreplace = \"x\"",
        )
        .unwrap_err();
        assert!(err.to_string().contains("matcher.normalize"), "{err}");
    }

    #[test]
    fn the_example_config_is_valid_and_matches_the_defaults() {
        let example = Config::from_toml(include_str!("../runlink.example.toml")).unwrap();
        let defaults = Config::from_toml("").unwrap();
        assert_eq!(format!("{example:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn pacing_keys_are_read_per_destination() {
        let config = Config::from_toml(
            "[destinations.github]\nrate_per_sec = 5.5\nburst = 3\nconcurrency = 7",
        )
        .unwrap();
        let pacing = config.destinations.github.unwrap().common.pacing;
        assert_eq!(
            (pacing.rate_per_sec, pacing.burst, pacing.concurrency),
            (5.5, 3, 7)
        );
        let err = Config::from_toml("[destinations.github]\nrate_per_sec = 0").unwrap_err();
        assert!(err.to_string().contains("destinations.github"), "{err}");
    }

    #[test]
    fn secrets_do_not_print() {
        let config =
            Config::from_toml("[destinations.github]\ntoken = \"ghp_supersecret\"").unwrap();
        assert!(!format!("{config:?}").contains("supersecret"));
    }

    #[test]
    fn every_destination_is_enabled_by_its_api_url_and_checked() {
        let config = Config::from_toml(
            r#"
[destinations.jira]
api_url = "https://acme.atlassian.net"
email = "bot@acme.com"
token = "t"
[destinations.pagerduty]
api_url = "https://api.pagerduty.com"
token = "t"
from = "bot@acme.com"
[destinations.opsgenie]
api_url = "https://api.opsgenie.com"
api_key = "k"
[destinations.servicenow]
api_url = "https://acme.service-now.com"
token = "t"
[destinations.generic.chat]
api_url = "https://chat.internal/api"
[[routes]]
source = "alertmanager"
destination = "jira"
annotation = "ticket"
"#,
        )
        .unwrap();
        assert_eq!(
            config.destinations.names(),
            [
                "github",
                "jira",
                "pagerduty",
                "opsgenie",
                "servicenow",
                "generic.chat"
            ]
        );
        assert_eq!(config.routes.len(), 1);

        let err =
            Config::from_toml("[destinations.pagerduty]\napi_url = \"https://x\"\ntoken = \"t\"")
                .unwrap_err();
        assert!(
            err.to_string().contains("destinations.pagerduty.from"),
            "{err}"
        );
        let err = Config::from_toml("[destinations.jira]\napi_url = \"https://x\"").unwrap_err();
        assert!(err.to_string().contains("destinations.jira"), "{err}");
        let err = Config::from_toml("[[routes]]\ndestination = \"jira\"\nannotation = \"ticket\"")
            .unwrap_err();
        assert!(err.to_string().contains("routes.destination"), "{err}");
        let err =
            Config::from_toml("[sources.generic.x]\ntitle = \"title\"\nid = \"/id\"").unwrap_err();
        assert!(
            err.to_string().contains("sources.generic.<name>.title"),
            "{err}"
        );
    }

    #[test]
    fn unauthenticated_sources_are_listed_for_the_warning() {
        let config = Config::from_toml(
            "[sources.github]\nsecret = \"s\"\n[sources.pagerduty]\nsecrets = [\"a\"]\n[sources.generic.t]\ntitle = \"/t\"\nid = \"/i\"",
        )
        .unwrap();
        let open = config.sources.unauthenticated();
        assert!(!open.contains(&"github".to_string()));
        assert!(!open.contains(&"pagerduty".to_string()));
        assert!(open.contains(&"jira".to_string()));
        assert!(open.contains(&"generic.t".to_string()));
    }

    #[test]
    fn postgres_urls_are_accepted_and_print_without_their_password() {
        let config =
            Config::from_toml("[store]\nurl = \"postgres://runlink:hunter2@db:5432/runlink\"")
                .unwrap();
        assert!(matches!(config.store, StoreUrl::Postgres(_)));
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("db:5432"), "{printed}");
    }
}
