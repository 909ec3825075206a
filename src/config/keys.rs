//! Every key runlink reads. A key it does not know is refused at start-up, with the key (or
//! the environment variable) named and the closest known one suggested: a misspelled
//! `[sources.github] secrte` would otherwise start a server that takes unsigned webhooks.
//!
//! The list is checked against `runlink.example.toml` and the built-in defaults by the tests,
//! so a documented key is always accepted.

use std::collections::BTreeSet;

use super::ConfigError;

/// `*` stands for one segment: a name (`sources.generic.<name>`), a header name, or a
/// position in a list of tables (`routes`, `matcher.normalize`).
const FIXED: &[&str] = &[
    "server.listen",
    "server.max_body_bytes",
    "server.request_timeout_ms",
    "server.body_timeout_ms",
    "server.max_connections",
    "server.shutdown_timeout_ms",
    "server.admin_token",
    "server.marker_secret",
    "server.ui",
    "server.ui_token",
    "runbooks.dir",
    "runbooks.base_url",
    "runbooks.watch",
    "runbooks.watch_interval_ms",
    "runbooks.canary.enabled",
    "runbooks.canary.min_tickets",
    "runbooks.canary.min_secs",
    "runbooks.canary.max_changed",
    "templates.dir",
    "store.url",
    "matcher.top_k",
    "matcher.min_confidence",
    "matcher.no_match_text",
    "matcher.coalesce_secs",
    "matcher.model_dir",
    "matcher.semantic_weight",
    "matcher.embedding_cache_dir",
    "matcher.learn",
    "matcher.normalize.*.name",
    "matcher.normalize.*.pattern",
    "matcher.normalize.*.replace",
    "outbox.worker",
    "outbox.poll_interval_ms",
    "outbox.batch_size",
    "outbox.lease_secs",
    "outbox.max_attempts",
    "outbox.backoff_base_ms",
    "outbox.backoff_cap_ms",
    "outbox.request_timeout_ms",
    "outbox.max_age_secs",
    "outbox.high_water",
    "outbox.max_per_ticket",
    "outbox.max_per_reply_target",
    "outbox.reply_target_window_secs",
    "outbox.fold_wait_ms",
    "sources.github.secret",
    "sources.alertmanager.token",
    "sources.grafana.token",
    "sources.grafana.secret",
    "sources.grafana.signature_header",
    "sources.grafana.timestamp_header",
    "sources.pagerduty.secrets",
    "sources.jira.secret",
    "sources.opsgenie.header",
    "sources.opsgenie.token",
    "sources.servicenow.token",
    "sources.servicenow.username",
    "sources.servicenow.password",
    "sources.generic.*.token",
    "sources.generic.*.title",
    "sources.generic.*.id",
    "sources.generic.*.body",
    "sources.generic.*.labels",
    "sources.generic.*.delivery",
    "sources.generic.*.reply_destination",
    "sources.generic.*.reply_id",
    "sources.generic.*.comment",
    "sources.generic.*.comment_author",
    "destinations.github.token",
    "destinations.jira.email",
    "destinations.jira.token",
    "destinations.jira.bearer_token",
    "destinations.jira.api_version",
    "destinations.jira.internal",
    "destinations.pagerduty.token",
    "destinations.pagerduty.from",
    "destinations.opsgenie.api_key",
    "destinations.servicenow.username",
    "destinations.servicenow.password",
    "destinations.servicenow.token",
    "destinations.generic.*.method",
    "destinations.generic.*.path",
    "destinations.generic.*.headers.*",
    "destinations.generic.*.body",
    "destinations.generic.*.content_type",
    "destinations.generic.*.max_chars",
    "destinations.generic.*.lookup_path",
    "destinations.generic.*.lookup_pointer",
    "destinations.generic.*.on_uncertain",
    "routes.*.source",
    "routes.*.destination",
    "routes.*.annotation",
    "routes.*.label",
    "routes.*.target",
];

/// What every destination table has besides its own keys.
const COMMON: &[&str] = &[
    "api_url",
    "template",
    "rate_per_sec",
    "burst",
    "concurrency",
    "breaker_failures",
    "breaker_cooldown_secs",
];

const DESTINATIONS: &[&str] = &[
    "github",
    "jira",
    "pagerduty",
    "opsgenie",
    "servicenow",
    "generic.*",
];

/// Every known key pattern.
fn known() -> Vec<String> {
    let mut keys: Vec<String> = FIXED.iter().map(|k| k.to_string()).collect();
    for destination in DESTINATIONS {
        for key in COMMON {
            keys.push(format!("destinations.{destination}.{key}"));
        }
    }
    keys
}

fn matches(pattern: &str, path: &[String]) -> bool {
    let parts: Vec<&str> = pattern.split('.').collect();
    parts.len() == path.len() && parts.iter().zip(path).all(|(p, s)| *p == "*" || p == s)
}

/// The dotted path of every leaf of the merged settings (a list of plain values is a leaf;
/// a list of tables is walked with its positions).
fn leaves(value: &serde_json::Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match value {
        // A table with nothing in it (every key commented out) sets nothing.
        serde_json::Value::Object(map) if map.is_empty() => {}
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                path.push(key.clone());
                leaves(value, path, out);
                path.pop();
            }
        }
        serde_json::Value::Array(items) if items.iter().any(|v| v.is_object()) => {
            for (i, item) in items.iter().enumerate() {
                path.push(i.to_string());
                leaves(item, path, out);
                path.pop();
            }
        }
        _ => out.push(path.clone()),
    }
}

/// The environment variable that sets `path` (`RUNLINK__SOURCES__GITHUB__SECRET`).
fn env_name(path: &[String]) -> String {
    format!("RUNLINK__{}", path.join("__").to_uppercase())
}

/// The known key closest to an unknown one: same parent, closest last segment.
fn suggestion(known: &[String], path: &[String]) -> Option<Vec<String>> {
    let (last, parent) = path.split_last()?;
    let siblings: BTreeSet<&str> = known
        .iter()
        .filter_map(|k| {
            let (k_parent, k_last) = k.rsplit_once('.')?;
            matches(k_parent, parent).then_some(k_last)
        })
        .collect();
    let best = crate::did_you_mean::closest(last, siblings)?;
    let mut path = parent.to_vec();
    path.push(best.to_string());
    Some(path)
}

/// Refuses settings that hold a key runlink does not read. `env` lists the `RUNLINK__*`
/// variable names, so a key that came from one is reported by the variable's name.
pub(super) fn check_known(settings: &serde_json::Value, env: &[String]) -> Result<(), ConfigError> {
    let known = known();
    let mut found = Vec::new();
    leaves(settings, &mut Vec::new(), &mut found);
    let mut problems = Vec::new();
    for path in found {
        if known.iter().any(|k| matches(k, &path)) {
            continue;
        }
        let hint = suggestion(&known, &path);
        let variable = env_name(&path);
        let from_env = env.iter().any(|v| v.eq_ignore_ascii_case(&variable));
        problems.push(match (from_env, hint) {
            (true, Some(hint)) => format!(
                "environment variable `{variable}` names no configuration key (did you mean `{}`?)",
                env_name(&hint)
            ),
            (true, None) => {
                format!("environment variable `{variable}` names no configuration key")
            }
            (false, Some(hint)) => format!(
                "unknown configuration key `{}` (did you mean `{}`?)",
                path.join("."),
                hint.join(".")
            ),
            (false, None) => format!("unknown configuration key `{}`", path.join(".")),
        });
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Unknown(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(toml: &str, env: &[&str]) -> Result<(), ConfigError> {
        let json: serde_json::Value = config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap();
        let env: Vec<String> = env.iter().map(|s| s.to_string()).collect();
        check_known(&json, &env)
    }

    #[test]
    fn documented_keys_are_known() {
        check(include_str!("../../runlink.example.toml"), &[]).unwrap();
        check(include_str!("defaults.toml"), &[]).unwrap();
    }

    #[test]
    fn a_misspelled_key_is_named_with_the_key_it_resembles() {
        let error = check("[sources.github]\nsecrte = \"s\"\n", &[]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown configuration key `sources.github.secrte` (did you mean `sources.github.secret`?)"
        );
        let error = check(
            "[destinations.generic.chat]\napi_url = \"https://x\"\nrate_per_src = 1\n",
            &[],
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("did you mean `destinations.generic.chat.rate_per_sec`"),
            "{error}"
        );
        let error = check(
            "[[routes]]\ndestination = \"jira\"\nanotation = \"t\"\n",
            &[],
        )
        .unwrap_err();
        assert!(error.to_string().contains("routes.0.annotation"), "{error}");
    }

    #[test]
    fn a_key_from_the_environment_is_named_by_its_variable() {
        let error = check(
            "[sources.github]\nsecrte = \"s\"\n",
            &["RUNLINK__SOURCES__GITHUB__SECRTE"],
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "environment variable `RUNLINK__SOURCES__GITHUB__SECRTE` names no configuration key (did you mean `RUNLINK__SOURCES__GITHUB__SECRET`?)"
        );
    }

    #[test]
    fn names_and_header_names_are_free() {
        check(
            "[sources.generic.chatops]\ntitle = \"/t\"\nid = \"/i\"\n[destinations.generic.chat]\napi_url = \"https://x\"\nheaders = { \"X-Api-Key\" = \"k\" }\n",
            &[],
        )
        .unwrap();
    }
}
