//! `destinations.<name>` and `routes`: where enrichments are posted and with which
//! credentials. A destination is enabled by its `api_url`; everything else has a default.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::{ConfigError, Secret, check_name, parse_base_url, present};
use crate::deliver::pacer::PacingConfig;

/// Pacing of one destination (see `deliver::pacer`).
#[derive(Debug, Deserialize)]
pub struct RawPacing {
    #[serde(default = "default_rate")]
    pub rate_per_sec: f64,
    #[serde(default = "default_burst")]
    pub burst: u32,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    #[serde(default = "default_breaker_cooldown")]
    pub breaker_cooldown_secs: u64,
}

// GitHub allows about 80 content-creating requests a minute per token, and the other
// trackers are in the same range: stay under it unless told otherwise.
fn default_rate() -> f64 {
    1.0
}
fn default_burst() -> u32 {
    10
}
fn default_concurrency() -> usize {
    2
}
fn default_breaker_failures() -> u32 {
    8
}
fn default_breaker_cooldown() -> u64 {
    30
}

impl Default for RawPacing {
    fn default() -> Self {
        RawPacing {
            rate_per_sec: default_rate(),
            burst: default_burst(),
            concurrency: default_concurrency(),
            breaker_failures: default_breaker_failures(),
            breaker_cooldown_secs: default_breaker_cooldown(),
        }
    }
}

impl RawPacing {
    fn check(self, key: &'static str) -> Result<PacingConfig, ConfigError> {
        if self.rate_per_sec.is_nan() || self.rate_per_sec <= 0.0 {
            return Err(ConfigError::invalid(
                key,
                "rate_per_sec must be greater than 0",
            ));
        }
        Ok(PacingConfig {
            rate_per_sec: self.rate_per_sec,
            burst: self.burst.max(1),
            concurrency: self.concurrency.max(1),
            breaker_failures: self.breaker_failures.max(1),
            breaker_cooldown: Duration::from_secs(self.breaker_cooldown_secs),
        })
    }
}

/// What every destination table has besides its credentials.
#[derive(Debug, Default, Deserialize)]
pub struct RawCommon {
    pub api_url: Option<String>,
    pub template: Option<String>,
    #[serde(flatten)]
    pub pacing: RawPacing,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawDestinations {
    #[serde(default)]
    pub github: RawGithub,
    #[serde(default)]
    pub jira: RawJira,
    #[serde(default)]
    pub pagerduty: RawPagerduty,
    #[serde(default)]
    pub opsgenie: RawOpsgenie,
    #[serde(default)]
    pub servicenow: RawServicenow,
    #[serde(default)]
    pub generic: BTreeMap<String, RawGeneric>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawGithub {
    pub token: Option<Secret>,
    #[serde(flatten)]
    pub common: RawCommon,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawJira {
    pub email: Option<String>,
    pub token: Option<Secret>,
    pub bearer_token: Option<Secret>,
    pub api_version: Option<u8>,
    #[serde(default)]
    pub internal: bool,
    #[serde(flatten)]
    pub common: RawCommon,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawPagerduty {
    pub token: Option<Secret>,
    pub from: Option<String>,
    #[serde(flatten)]
    pub common: RawCommon,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawOpsgenie {
    pub api_key: Option<Secret>,
    #[serde(flatten)]
    pub common: RawCommon,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawServicenow {
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
    #[serde(flatten)]
    pub common: RawCommon,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawGeneric {
    pub method: Option<String>,
    pub path: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    pub body: Option<String>,
    pub content_type: Option<String>,
    pub max_chars: Option<usize>,
    pub lookup_path: Option<String>,
    pub lookup_pointer: Option<String>,
    pub on_uncertain: Option<String>,
    #[serde(flatten)]
    pub common: RawCommon,
}

#[derive(Debug, Clone)]
pub struct Common {
    /// Base URL; API paths are appended to it, so tests and staging can point it anywhere.
    pub api_url: Url,
    /// Comment template in `templates.dir`.
    pub template: String,
    pub pacing: PacingConfig,
}

#[derive(Debug, Clone)]
pub enum HttpAuth {
    None,
    Basic { username: String, password: Secret },
    Bearer(Secret),
}

#[derive(Debug, Clone)]
pub struct GithubDestinationConfig {
    pub common: Common,
    pub token: Option<Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JiraApi {
    /// Jira Cloud: comment bodies are Atlassian Document Format.
    V3,
    /// Jira Server / Data Center: comment bodies are wiki markup.
    V2,
}

#[derive(Debug, Clone)]
pub struct JiraDestinationConfig {
    pub common: Common,
    pub auth: HttpAuth,
    pub api: JiraApi,
    /// On service-desk projects, post as an internal note (`sd.public.comment`).
    pub internal: bool,
}

#[derive(Debug, Clone)]
pub struct PagerdutyDestinationConfig {
    pub common: Common,
    pub token: Secret,
    /// PagerDuty requires the email of a valid user in `From` for notes.
    pub from: String,
}

#[derive(Debug, Clone)]
pub struct OpsgenieDestinationConfig {
    pub common: Common,
    pub api_key: Secret,
}

#[derive(Debug, Clone)]
pub struct ServicenowDestinationConfig {
    pub common: Common,
    pub auth: HttpAuth,
}

#[derive(Debug, Clone)]
pub struct GenericDestinationConfig {
    pub name: String,
    pub common: Common,
    pub method: reqwest::Method,
    /// minijinja template appended to `api_url`; sees `target.id`.
    pub path: String,
    pub headers: BTreeMap<String, Secret>,
    /// minijinja template of the request body; sees `comment`, `target.id`, `marker`.
    pub body: String,
    pub content_type: String,
    /// The comment is cut to this many characters (its links and marker kept).
    pub max_chars: usize,
    /// Where earlier comments can be listed for the marker check: a GET path template and a
    /// JSON Pointer to them in the answer.
    pub lookup: Option<(String, String)>,
    pub on_uncertain: OnUncertain,
}

/// What a generic destination without a lookup does with an attempt that may have landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUncertain {
    /// Post again: a second comment is possible, a lost one is not.
    Post,
    /// Never post blindly: retried as uncertain until the attempts run out, then a dead
    /// letter for an operator to look at.
    Hold,
}

#[derive(Debug, Clone, Default)]
pub struct DestinationsConfig {
    pub github: Option<GithubDestinationConfig>,
    pub jira: Option<JiraDestinationConfig>,
    pub pagerduty: Option<PagerdutyDestinationConfig>,
    pub opsgenie: Option<OpsgenieDestinationConfig>,
    pub servicenow: Option<ServicenowDestinationConfig>,
    pub generic: Vec<GenericDestinationConfig>,
}

impl DestinationsConfig {
    /// The names of the enabled destinations, as `ReplyTarget::destination` spells them.
    pub fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if self.github.is_some() {
            names.push("github".to_string());
        }
        if self.jira.is_some() {
            names.push("jira".into());
        }
        if self.pagerduty.is_some() {
            names.push("pagerduty".into());
        }
        if self.opsgenie.is_some() {
            names.push("opsgenie".into());
        }
        if self.servicenow.is_some() {
            names.push("servicenow".into());
        }
        names.extend(self.generic.iter().map(|g| format!("generic.{}", g.name)));
        names
    }
}

fn common(
    raw: RawCommon,
    url_key: &'static str,
    pacing_key: &'static str,
    default_template: &str,
) -> Result<Option<Common>, ConfigError> {
    let Some(api) = raw.api_url.filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    Ok(Some(Common {
        api_url: parse_base_url(url_key, &api)?,
        template: raw
            .template
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| default_template.to_string()),
        pacing: raw.pacing.check(pacing_key)?,
    }))
}

fn required(secret: Option<Secret>, key: &'static str) -> Result<Secret, ConfigError> {
    present(secret).ok_or_else(|| ConfigError::invalid(key, "is required when api_url is set"))
}

impl RawDestinations {
    pub fn check(self) -> Result<DestinationsConfig, ConfigError> {
        let github = common(
            self.github.common,
            "destinations.github.api_url",
            "destinations.github.rate_per_sec",
            "github.md.j2",
        )?
        .map(|common| GithubDestinationConfig {
            common,
            token: present(self.github.token),
        });

        let jira = match common(
            self.jira.common,
            "destinations.jira.api_url",
            "destinations.jira.rate_per_sec",
            "jira.md.j2",
        )? {
            None => None,
            Some(common) => {
                let auth = match (
                    self.jira.email.filter(|e| !e.is_empty()),
                    present(self.jira.token),
                    present(self.jira.bearer_token),
                ) {
                    (Some(username), Some(password), None) => {
                        HttpAuth::Basic { username, password }
                    }
                    (None, None, Some(token)) => HttpAuth::Bearer(token),
                    _ => {
                        return Err(ConfigError::invalid(
                            "destinations.jira",
                            "set `email` and `token` (basic auth, Jira Cloud) or `bearer_token` (personal access token)",
                        ));
                    }
                };
                let api = match self.jira.api_version.unwrap_or(3) {
                    3 => JiraApi::V3,
                    2 => JiraApi::V2,
                    other => {
                        return Err(ConfigError::invalid(
                            "destinations.jira.api_version",
                            format!("{other}: expected 3 (ADF, Jira Cloud) or 2 (wiki markup)"),
                        ));
                    }
                };
                Some(JiraDestinationConfig {
                    common,
                    auth,
                    api,
                    internal: self.jira.internal,
                })
            }
        };

        let pagerduty = match common(
            self.pagerduty.common,
            "destinations.pagerduty.api_url",
            "destinations.pagerduty.rate_per_sec",
            "pagerduty.txt.j2",
        )? {
            None => None,
            Some(common) => Some(PagerdutyDestinationConfig {
                common,
                token: required(self.pagerduty.token, "destinations.pagerduty.token")?,
                from: self
                    .pagerduty
                    .from
                    .filter(|f| f.contains('@'))
                    .ok_or_else(|| {
                        ConfigError::invalid(
                            "destinations.pagerduty.from",
                            "the email of a PagerDuty user is required (sent as the `From` header)",
                        )
                    })?,
            }),
        };

        let opsgenie = match common(
            self.opsgenie.common,
            "destinations.opsgenie.api_url",
            "destinations.opsgenie.rate_per_sec",
            "opsgenie.txt.j2",
        )? {
            None => None,
            Some(common) => Some(OpsgenieDestinationConfig {
                common,
                api_key: required(self.opsgenie.api_key, "destinations.opsgenie.api_key")?,
            }),
        };

        let servicenow = match common(
            self.servicenow.common,
            "destinations.servicenow.api_url",
            "destinations.servicenow.rate_per_sec",
            "servicenow.txt.j2",
        )? {
            None => None,
            Some(common) => {
                let auth = match (
                    self.servicenow.username.filter(|u| !u.is_empty()),
                    present(self.servicenow.password),
                    present(self.servicenow.token),
                ) {
                    (Some(username), Some(password), None) => {
                        HttpAuth::Basic { username, password }
                    }
                    (None, None, Some(token)) => HttpAuth::Bearer(token),
                    _ => {
                        return Err(ConfigError::invalid(
                            "destinations.servicenow",
                            "set `username` and `password` (basic) or `token` (OAuth bearer)",
                        ));
                    }
                };
                Some(ServicenowDestinationConfig { common, auth })
            }
        };

        let mut generic = Vec::new();
        for (name, raw) in self.generic {
            check_name("destinations.generic", &name)?;
            let Some(common) = common(
                raw.common,
                "destinations.generic.<name>.api_url",
                "destinations.generic.<name>.rate_per_sec",
                "generic.md.j2",
            )?
            else {
                continue;
            };
            let method = raw.method.unwrap_or_else(|| "POST".into());
            let method =
                reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).map_err(|_| {
                    ConfigError::invalid(
                        "destinations.generic.<name>.method",
                        format!("`{method}` is not an HTTP method"),
                    )
                })?;
            for header in raw.headers.keys() {
                reqwest::header::HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                    ConfigError::invalid(
                        "destinations.generic.<name>.headers",
                        format!("`{header}` is not a header name"),
                    )
                })?;
            }
            generic.push(GenericDestinationConfig {
                name,
                common,
                method,
                path: raw.path.unwrap_or_default(),
                headers: raw.headers,
                body: raw
                    .body
                    .unwrap_or_else(|| r#"{"text": {{ comment|tojson }}}"#.into()),
                content_type: raw
                    .content_type
                    .unwrap_or_else(|| "application/json".into()),
                max_chars: raw.max_chars.unwrap_or(65_536).max(256),
                lookup: match (raw.lookup_path, raw.lookup_pointer) {
                    (Some(path), Some(pointer)) if pointer.is_empty() || pointer.starts_with('/') => {
                        Some((path, pointer))
                    }
                    (None, None) => None,
                    _ => {
                        return Err(ConfigError::invalid(
                            "destinations.generic.<name>.lookup_path",
                            "set both lookup_path and lookup_pointer (a JSON Pointer starting with `/`), or neither",
                        ));
                    }
                },
                on_uncertain: match raw.on_uncertain.as_deref() {
                    None | Some("post") => OnUncertain::Post,
                    Some("hold") => OnUncertain::Hold,
                    Some(other) => {
                        return Err(ConfigError::invalid(
                            "destinations.generic.<name>.on_uncertain",
                            format!("`{other}`: expected `post` or `hold`"),
                        ));
                    }
                },
            });
        }
        Ok(DestinationsConfig {
            github,
            jira,
            pagerduty,
            opsgenie,
            servicenow,
            generic,
        })
    }
}

/// `[[routes]]`: answer a source's tickets somewhere other than where they came from.
#[derive(Debug, Deserialize)]
pub struct RawRoute {
    pub source: Option<String>,
    pub destination: String,
    pub annotation: Option<String>,
    pub label: Option<String>,
    pub target: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    /// The ticket's annotation of this name holds the target (`ticket: OPS-12`).
    Annotation(String),
    Label(String),
    /// Always this target (a fixed Jira issue, a chat room).
    Fixed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Source kind (`alertmanager`) or `generic.<name>`; `None` matches every source.
    pub source: Option<String>,
    pub destination: String,
    pub target: RouteTarget,
}

pub fn check_routes(raw: Vec<RawRoute>, enabled: &[String]) -> Result<Vec<Route>, ConfigError> {
    raw.into_iter()
        .map(|r| {
            if !enabled.contains(&r.destination) {
                return Err(ConfigError::invalid(
                    "routes.destination",
                    format!(
                        "`{}` is not an enabled destination (enabled: {})",
                        r.destination,
                        enabled.join(", ")
                    ),
                ));
            }
            let target = match (r.annotation, r.label, r.target) {
                (Some(a), None, None) => RouteTarget::Annotation(a),
                (None, Some(l), None) => RouteTarget::Label(l),
                (None, None, Some(t)) => {
                    crate::ticket::ReplyTarget::parse(&r.destination, &t)
                        .map_err(|e| ConfigError::invalid("routes.target", e.to_string()))?;
                    RouteTarget::Fixed(t)
                }
                _ => {
                    return Err(ConfigError::invalid(
                        "routes",
                        "each route takes exactly one of `annotation`, `label` or `target`",
                    ));
                }
            };
            Ok(Route {
                source: r.source.filter(|s| !s.is_empty()),
                destination: r.destination,
                target,
            })
        })
        .collect()
}
