//! `sources.<name>`: how each inbound webhook proves who sent it, and for generic sources,
//! where in the JSON the ticket's fields are. A source with no secret accepts unsigned
//! requests; `Application::build` warns about each such source at start-up.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ConfigError, Secret, check_name, present};

#[derive(Debug, Default, Deserialize)]
pub struct RawSources {
    #[serde(default)]
    pub github: RawSecretSource,
    #[serde(default)]
    pub alertmanager: RawTokenSource,
    #[serde(default)]
    pub grafana: RawGrafanaSource,
    #[serde(default)]
    pub pagerduty: RawPagerdutySource,
    #[serde(default)]
    pub jira: RawSecretSource,
    #[serde(default)]
    pub opsgenie: RawOpsgenieSource,
    #[serde(default)]
    pub servicenow: RawServicenowSource,
    #[serde(default)]
    pub generic: BTreeMap<String, RawGenericSource>,
    /// The built-in sources that have a table in the settings (filled in by the loader).
    #[serde(skip)]
    pub configured: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawSecretSource {
    pub secret: Option<Secret>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawTokenSource {
    pub token: Option<Secret>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawGrafanaSource {
    pub token: Option<Secret>,
    pub secret: Option<Secret>,
    pub signature_header: Option<String>,
    pub timestamp_header: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawPagerdutySource {
    #[serde(default)]
    pub secrets: Vec<Secret>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawOpsgenieSource {
    pub header: Option<String>,
    pub token: Option<Secret>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawServicenowSource {
    pub token: Option<Secret>,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

#[derive(Debug, Deserialize)]
pub struct RawGenericSource {
    pub token: Option<Secret>,
    pub title: String,
    pub id: String,
    pub body: Option<String>,
    pub labels: Option<String>,
    pub delivery: Option<String>,
    pub reply_destination: Option<String>,
    pub reply_id: Option<String>,
    pub comment: Option<String>,
    pub comment_author: Option<String>,
}

/// A header name from config, checked so the request handler can never fail on it. It lives
/// as long as the process (config is read once), so errors can name it like the built-in
/// header names.
fn header_name(key: &'static str, raw: String) -> Result<&'static str, ConfigError> {
    actix_web::http::header::HeaderName::try_from(raw.as_str())
        .map_err(|e| ConfigError::invalid(key, format!("`{raw}`: {e}")))?;
    Ok(Box::leak(raw.into_boxed_str()))
}

/// A JSON Pointer (RFC 6901) from config: empty (the whole document) or starting with `/`.
fn pointer(key: &'static str, raw: String) -> Result<String, ConfigError> {
    if raw.is_empty() || raw.starts_with('/') {
        Ok(raw)
    } else {
        Err(ConfigError::invalid(
            key,
            format!("`{raw}` is not a JSON Pointer (it must start with `/`)"),
        ))
    }
}

#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub github_secret: Option<Secret>,
    pub alertmanager_token: Option<Secret>,
    pub grafana: GrafanaSource,
    /// Any of these verifies a PagerDuty signature: the old and the new during a rotation.
    pub pagerduty_secrets: Vec<Secret>,
    pub jira_secret: Option<Secret>,
    pub opsgenie: OpsgenieSource,
    pub servicenow: ServicenowAuth,
    pub generic: BTreeMap<String, GenericSource>,
    /// The built-in sources the settings name: only those are warned about at start-up
    /// (the others warn when their first webhook arrives).
    pub configured: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct GrafanaSource {
    pub token: Option<Secret>,
    pub secret: Option<Secret>,
    pub signature_header: &'static str,
    /// When set, the HMAC covers `timestamp:body` with the timestamp from this header.
    pub timestamp_header: Option<&'static str>,
}

#[derive(Debug, Clone, Default)]
pub struct OpsgenieSource {
    pub header: &'static str,
    pub token: Option<Secret>,
}

#[derive(Debug, Clone, Default)]
pub enum ServicenowAuth {
    #[default]
    None,
    Bearer(Secret),
    Basic {
        username: String,
        password: Secret,
    },
}

#[derive(Debug, Clone)]
pub struct GenericSource {
    pub token: Option<Secret>,
    pub title: String,
    pub id: String,
    pub body: Option<String>,
    pub labels: Option<String>,
    /// Where the sender's delivery id is; without it, a hash of the body dedups retries.
    pub delivery: Option<String>,
    /// Where the enrichment goes: a destination name and the pointer to the ticket's id
    /// there. Without them the ticket is matched and recorded, or answered through `routes`.
    pub reply: Option<(String, String)>,
    /// Where a comment event's text is: a body with text there is a comment (a `/runlink`
    /// command, or nothing to act on), not a new ticket.
    pub comment: Option<String>,
    /// Where the comment's author is.
    pub comment_author: Option<String>,
}

impl RawSources {
    pub fn check(self) -> Result<Sources, ConfigError> {
        let grafana = GrafanaSource {
            token: present(self.grafana.token),
            secret: present(self.grafana.secret),
            signature_header: header_name(
                "sources.grafana.signature_header",
                self.grafana
                    .signature_header
                    .unwrap_or_else(|| "X-Grafana-Alerting-Signature".into()),
            )?,
            timestamp_header: self
                .grafana
                .timestamp_header
                .filter(|h| !h.is_empty())
                .map(|h| header_name("sources.grafana.timestamp_header", h))
                .transpose()?,
        };
        let opsgenie = OpsgenieSource {
            header: header_name(
                "sources.opsgenie.header",
                self.opsgenie
                    .header
                    .unwrap_or_else(|| "X-Runlink-Token".into()),
            )?,
            token: present(self.opsgenie.token),
        };
        let servicenow = match (
            present(self.servicenow.token),
            self.servicenow.username.filter(|u| !u.is_empty()),
            present(self.servicenow.password),
        ) {
            (Some(token), None, None) => ServicenowAuth::Bearer(token),
            (None, Some(username), Some(password)) => ServicenowAuth::Basic { username, password },
            (None, None, None) => ServicenowAuth::None,
            _ => {
                return Err(ConfigError::invalid(
                    "sources.servicenow",
                    "set either `token` (bearer) or both `username` and `password` (basic)",
                ));
            }
        };
        let mut generic = BTreeMap::new();
        for (name, raw) in self.generic {
            check_name("sources.generic", &name)?;
            let reply = match (raw.reply_destination, raw.reply_id) {
                (Some(destination), Some(id)) => {
                    Some((destination, pointer("sources.generic.<name>.reply_id", id)?))
                }
                (None, None) => None,
                _ => {
                    return Err(ConfigError::invalid(
                        "sources.generic.<name>.reply_destination",
                        format!("`{name}`: set both reply_destination and reply_id, or neither"),
                    ));
                }
            };
            generic.insert(
                name,
                GenericSource {
                    token: present(raw.token),
                    title: pointer("sources.generic.<name>.title", raw.title)?,
                    id: pointer("sources.generic.<name>.id", raw.id)?,
                    body: raw
                        .body
                        .map(|p| pointer("sources.generic.<name>.body", p))
                        .transpose()?,
                    labels: raw
                        .labels
                        .map(|p| pointer("sources.generic.<name>.labels", p))
                        .transpose()?,
                    delivery: raw
                        .delivery
                        .map(|p| pointer("sources.generic.<name>.delivery", p))
                        .transpose()?,
                    reply,
                    comment: raw
                        .comment
                        .map(|p| pointer("sources.generic.<name>.comment", p))
                        .transpose()?,
                    comment_author: raw
                        .comment_author
                        .map(|p| pointer("sources.generic.<name>.comment_author", p))
                        .transpose()?,
                },
            );
        }
        Ok(Sources {
            configured: self.configured,
            github_secret: present(self.github.secret),
            alertmanager_token: present(self.alertmanager.token),
            grafana,
            pagerduty_secrets: self
                .pagerduty
                .secrets
                .into_iter()
                .filter(|s| !s.expose().is_empty())
                .collect(),
            jira_secret: present(self.jira.secret),
            opsgenie,
            servicenow,
            generic,
        })
    }
}

impl Sources {
    /// Sources that accept requests without any proof of origin, for the start-up warning.
    pub fn unauthenticated(&self) -> Vec<String> {
        let mut open = Vec::new();
        let mut check = |name: &str, secured: bool| {
            if !secured && self.configured.iter().any(|c| c == name) {
                open.push(name.to_string());
            }
        };
        check("github", self.github_secret.is_some());
        check("alertmanager", self.alertmanager_token.is_some());
        check(
            "grafana",
            self.grafana.token.is_some() || self.grafana.secret.is_some(),
        );
        check("pagerduty", !self.pagerduty_secrets.is_empty());
        check("jira", self.jira_secret.is_some());
        check("opsgenie", self.opsgenie.token.is_some());
        check(
            "servicenow",
            !matches!(self.servicenow, ServicenowAuth::None),
        );
        for (name, source) in &self.generic {
            if source.token.is_none() {
                open.push(format!("generic.{name}"));
            }
        }
        open
    }
}
