//! The normalized ticket: what every source turns its webhook into, and the only shape of
//! ticket the core ever sees. Ids are newtypes so a delivery id cannot be passed where a
//! ticket id is expected.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The label that marks a synthetic ticket from `runlink canary probe`.
pub const PROBE_LABEL: &str = "runlink_probe";

/// The built-in destination probe tickets are answered in.
pub const PROBE_DESTINATION: &str = "probe";

/// Which system a ticket came from. Also the default destination of its enrichment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Github,
    Alertmanager,
    Grafana,
    Pagerduty,
    Jira,
    Opsgenie,
    Servicenow,
    /// Any JSON, read through the JSON Pointers configured for one named generic source.
    Generic,
    /// Typed in by a person: `runlink match`, `explain`, `test`.
    Manual,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Github => "github",
            SourceKind::Alertmanager => "alertmanager",
            SourceKind::Grafana => "grafana",
            SourceKind::Pagerduty => "pagerduty",
            SourceKind::Jira => "jira",
            SourceKind::Opsgenie => "opsgenie",
            SourceKind::Servicenow => "servicenow",
            SourceKind::Generic => "generic",
            SourceKind::Manual => "manual",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Rejects empty and absurdly long ids: they come from the outside world.
            pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidId> {
                let raw = raw.into();
                let trimmed = raw.trim();
                if trimmed.is_empty() {
                    return Err(InvalidId::Empty);
                }
                if trimmed.len() > 512 {
                    return Err(InvalidId::TooLong);
                }
                if trimmed.chars().any(char::is_control) {
                    return Err(InvalidId::Control);
                }
                Ok($name(trimmed.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    #[error("is empty")]
    Empty,
    #[error("is longer than 512 characters")]
    TooLong,
    #[error("contains a control character")]
    Control,
}

string_id!(
    /// A ticket's identity, scoped by its source (`github:owner/repo#12`).
    TicketId
);
string_id!(
    /// The sender's id for one webhook delivery; a retry carries the same one.
    DeliveryId
);

/// Where the enrichment for a ticket is posted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReplyTarget {
    GithubIssue {
        owner: String,
        repo: String,
        number: u64,
    },
    JiraIssue {
        key: String,
    },
    PagerdutyIncident {
        id: String,
    },
    OpsgenieAlert {
        id: String,
    },
    ServicenowRecord {
        table: String,
        sys_id: String,
    },
    /// A configured generic HTTP destination (`destinations.generic.<name>`); `id` is what
    /// its URL and body templates address the ticket by.
    Generic {
        name: String,
        id: String,
    },
    /// The built-in sink for synthetic tickets (`runlink canary probe`): the comment is kept
    /// for the probe to read back, never posted. `id` is the probe ticket's id.
    Probe {
        id: String,
    },
}

/// The ServiceNow table a bare `sys_id` refers to.
pub const SERVICENOW_DEFAULT_TABLE: &str = "incident";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTarget {
    #[error("unknown destination `{0}`")]
    UnknownDestination(String),
    #[error("`{value}` is not a {expected}")]
    Malformed {
        value: String,
        expected: &'static str,
    },
}

impl ReplyTarget {
    /// The name of the destination that posts to this target (a key of `destinations`).
    pub fn destination(&self) -> String {
        match self {
            ReplyTarget::GithubIssue { .. } => "github".into(),
            ReplyTarget::JiraIssue { .. } => "jira".into(),
            ReplyTarget::PagerdutyIncident { .. } => "pagerduty".into(),
            ReplyTarget::OpsgenieAlert { .. } => "opsgenie".into(),
            ReplyTarget::ServicenowRecord { .. } => "servicenow".into(),
            ReplyTarget::Generic { name, .. } => format!("generic.{name}"),
            ReplyTarget::Probe { .. } => PROBE_DESTINATION.into(),
        }
    }

    /// A target written as text, the way routes and annotations name one: `owner/repo#12` for
    /// GitHub, an issue key for Jira (`OPS-12`), an id for PagerDuty and Opsgenie,
    /// `[table/]sys_id` for ServiceNow, anything non-empty for a generic destination.
    pub fn parse(destination: &str, raw: &str) -> Result<Self, InvalidTarget> {
        let raw = raw.trim();
        let malformed = |expected| InvalidTarget::Malformed {
            value: raw.to_string(),
            expected,
        };
        let token = |s: &str| {
            !s.is_empty()
                && s.len() <= 256
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        match destination {
            "github" => {
                let (path, number) = raw
                    .rsplit_once('#')
                    .ok_or_else(|| malformed("GitHub issue (owner/repo#123)"))?;
                let (owner, repo) = path
                    .split_once('/')
                    .ok_or_else(|| malformed("GitHub issue (owner/repo#123)"))?;
                let number = number
                    .parse()
                    .map_err(|_| malformed("GitHub issue (owner/repo#123)"))?;
                if !token(owner) || !token(repo) {
                    return Err(malformed("GitHub issue (owner/repo#123)"));
                }
                Ok(ReplyTarget::GithubIssue {
                    owner: owner.into(),
                    repo: repo.into(),
                    number,
                })
            }
            "jira" => {
                let valid = raw.split_once('-').is_some_and(|(project, n)| {
                    token(project) && !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())
                }) || (!raw.is_empty() && raw.chars().all(|c| c.is_ascii_digit()));
                if !valid {
                    return Err(malformed("Jira issue key (OPS-123)"));
                }
                Ok(ReplyTarget::JiraIssue { key: raw.into() })
            }
            "pagerduty" if token(raw) => Ok(ReplyTarget::PagerdutyIncident { id: raw.into() }),
            "pagerduty" => Err(malformed("PagerDuty incident id")),
            "opsgenie" if token(raw) => Ok(ReplyTarget::OpsgenieAlert { id: raw.into() }),
            "opsgenie" => Err(malformed("Opsgenie alert id")),
            "servicenow" => {
                let (table, sys_id) = raw
                    .split_once('/')
                    .unwrap_or((SERVICENOW_DEFAULT_TABLE, raw));
                if !token(table) || !token(sys_id) {
                    return Err(malformed("ServiceNow record ([table/]sys_id)"));
                }
                Ok(ReplyTarget::ServicenowRecord {
                    table: table.into(),
                    sys_id: sys_id.into(),
                })
            }
            other => match other.strip_prefix("generic.") {
                Some(name) if !name.is_empty() => {
                    if raw.is_empty() || raw.len() > 512 {
                        return Err(malformed("non-empty id"));
                    }
                    Ok(ReplyTarget::Generic {
                        name: name.into(),
                        id: raw.into(),
                    })
                }
                _ => Err(InvalidTarget::UnknownDestination(other.to_string())),
            },
        }
    }

    /// The id of the ticket inside its destination, as templates and logs show it.
    pub fn display_id(&self) -> String {
        match self {
            ReplyTarget::GithubIssue {
                owner,
                repo,
                number,
            } => format!("{owner}/{repo}#{number}"),
            ReplyTarget::JiraIssue { key } => key.clone(),
            ReplyTarget::PagerdutyIncident { id }
            | ReplyTarget::OpsgenieAlert { id }
            | ReplyTarget::Generic { id, .. }
            | ReplyTarget::Probe { id } => id.clone(),
            ReplyTarget::ServicenowRecord { table, sys_id } => format!("{table}/{sys_id}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub id: TicketId,
    pub source: SourceKind,
    /// What dedups sender retries: the same delivery is stored once.
    pub delivery: DeliveryId,
    pub title: String,
    pub body: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub alertname: Option<String>,
    pub reply: Option<ReplyTarget>,
    /// The alert's query (PromQL) when the source carries it: its metric names say what
    /// was measured even when the text does not.
    #[serde(default)]
    pub query: Option<String>,
}

impl Ticket {
    /// The probe run this ticket belongs to (`runlink canary probe` sets the
    /// `runlink_probe` label inside the signed body): its comment goes to the built-in
    /// `probe` sink, never to a real ticket.
    pub fn probe_run(&self) -> Option<&str> {
        self.labels.get(PROBE_LABEL).map(String::as_str)
    }

    pub fn is_probe(&self) -> bool {
        self.labels.contains_key(PROBE_LABEL)
    }

    /// The ticket without the control characters a sender put in its text (NUL, BEL,
    /// terminal escapes): they would reach the comment and the logs as they are. A title is
    /// one line; the other fields keep their line breaks and tabs.
    pub fn without_controls(mut self) -> Self {
        self.title = scrub(&self.title, false);
        self.body = scrub(&self.body, true);
        for value in self
            .labels
            .values_mut()
            .chain(self.annotations.values_mut())
        {
            *value = scrub(value, true);
        }
        self.alertname = self.alertname.map(|n| scrub(&n, false));
        self
    }
}

/// An alert's text from its annotations: the title is `summary`, else `message` (how
/// Mimir, Tempo and many mixins write it), else `None`; the body is `description` followed
/// by every other annotation written as prose (a space in it, not a link), so text kept
/// under any name is matched on. `skip` names annotations that are not text (a reply target).
pub fn annotation_text(
    annotations: &BTreeMap<String, String>,
    skip: &[&str],
) -> (Option<String>, String) {
    let pick = |key: &str| {
        annotations
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    };
    let title_key = ["summary", "message"]
        .into_iter()
        .find(|key| pick(key).is_some());
    let title = title_key.and_then(pick).map(str::to_string);
    let mut body: Vec<&str> = pick("description").into_iter().collect();
    for (key, value) in annotations {
        let value = value.trim();
        let prose = value.contains(' ') && !value.starts_with("http");
        if prose
            && Some(key.as_str()) != title_key
            && !matches!(key.as_str(), "summary" | "description")
            && !skip.contains(&key.as_str())
            && !body.contains(&value)
        {
            body.push(value);
        }
    }
    (title, body.join("\n"))
}

fn scrub(text: &str, multiline: bool) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .filter_map(|c| match c {
            '\n' | '\t' if multiline => Some(c),
            '\r' if multiline => None,
            '\n' | '\r' | '\t' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_leave_the_text_and_ids_with_them_are_refused() {
        let ticket = Ticket {
            id: TicketId::parse("t:1").unwrap(),
            source: SourceKind::Manual,
            delivery: DeliveryId::parse("d").unwrap(),
            title: "disk\u{7}full\u{1b}[31m on\nhost\u{0}".into(),
            body: "line 1\r\nline\t2\u{1b}[0m\u{9b}".into(),
            labels: BTreeMap::from([("k".to_string(), "v\u{0}".to_string())]),
            annotations: BTreeMap::new(),
            alertname: Some("Disk\u{7}Full".into()),
            reply: None,
            query: None,
        }
        .without_controls();
        assert_eq!(ticket.title, "diskfull[31m on host");
        assert_eq!(ticket.body, "line 1\nline\t2[0m");
        assert_eq!(ticket.labels["k"], "v");
        assert_eq!(ticket.alertname.as_deref(), Some("DiskFull"));
        assert_eq!(TicketId::parse("a\nb"), Err(InvalidId::Control));
    }

    #[test]
    fn ids_are_trimmed_and_never_empty() {
        assert_eq!(TicketId::parse("  a#1 ").unwrap().as_str(), "a#1");
        assert_eq!(TicketId::parse("   "), Err(InvalidId::Empty));
        assert_eq!(DeliveryId::parse("x".repeat(600)), Err(InvalidId::TooLong));
    }

    #[test]
    fn reply_target_round_trips_through_json() {
        let target = ReplyTarget::GithubIssue {
            owner: "acme".into(),
            repo: "ops".into(),
            number: 7,
        };
        let json = serde_json::to_string(&target).unwrap();
        assert_eq!(serde_json::from_str::<ReplyTarget>(&json).unwrap(), target);
    }

    #[test]
    fn targets_parse_from_text_per_destination() {
        assert_eq!(
            ReplyTarget::parse("github", "acme/ops#12")
                .unwrap()
                .display_id(),
            "acme/ops#12"
        );
        assert!(ReplyTarget::parse("github", "acme/ops").is_err());
        assert!(ReplyTarget::parse("github", "ac me/ops#1").is_err());
        assert_eq!(
            ReplyTarget::parse("jira", " OPS-42 ").unwrap(),
            ReplyTarget::JiraIssue {
                key: "OPS-42".into()
            }
        );
        assert!(ReplyTarget::parse("jira", "OPS-").is_err());
        assert!(ReplyTarget::parse("jira", "OPS 42").is_err());
        assert_eq!(
            ReplyTarget::parse("servicenow", "abc123").unwrap(),
            ReplyTarget::ServicenowRecord {
                table: "incident".into(),
                sys_id: "abc123".into()
            }
        );
        assert_eq!(
            ReplyTarget::parse("servicenow", "change_request/abc")
                .unwrap()
                .destination(),
            "servicenow"
        );
        assert!(ReplyTarget::parse("pagerduty", "P1/../x").is_err());
        assert_eq!(
            ReplyTarget::parse("generic.chat", "room-7")
                .unwrap()
                .destination(),
            "generic.chat"
        );
        assert_eq!(
            ReplyTarget::parse("fax", "1"),
            Err(InvalidTarget::UnknownDestination("fax".into()))
        );
    }
}
