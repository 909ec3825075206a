//! The URL-shaped settings: the store (`sqlite://PATH` or `postgres://...`, which prints
//! without its password) and the http(s) URLs of runbooks and destinations.

use std::fmt;
use std::path::PathBuf;

use url::Url;

use super::{ConfigError, Secret};

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
