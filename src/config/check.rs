//! The second stage: `RawSettings` checked into `Config`. Every check that can fail names
//! the key, so an operator can fix the right line before the server binds a port.

use std::time::Duration;

use super::raw::RawSettings;
use super::{
    Config, ConfigError, MatcherConfig, OutboxConfig, Sources, StoreUrl, check_routes,
    parse_base_url,
};

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
        let sources = raw.sources.check()?;
        check_replies(&sources, &destinations.names())?;
        Ok(Config {
            listen,
            max_body_bytes: raw.server.max_body_bytes,
            request_timeout: Duration::from_millis(raw.server.request_timeout_ms.max(100)),
            body_timeout: Duration::from_millis(raw.server.body_timeout_ms.max(100)),
            max_connections: raw.server.max_connections,
            shutdown_timeout: Duration::from_millis(raw.server.shutdown_timeout_ms.max(2000)),
            runbooks_dir: raw.runbooks.dir,
            runbooks_base_url: parse_base_url("runbooks.base_url", &raw.runbooks.base_url)?,
            runbooks_watch: raw
                .runbooks
                .watch
                .then(|| Duration::from_millis(raw.runbooks.watch_interval_ms.max(50))),
            canary: crate::canary::CanarySettings {
                enabled: raw.runbooks.canary.enabled,
                min_tickets: raw.runbooks.canary.min_tickets,
                min_secs: Duration::from_secs(raw.runbooks.canary.min_secs),
                max_changed: if (0.0..=1.0).contains(&raw.runbooks.canary.max_changed) {
                    raw.runbooks.canary.max_changed
                } else {
                    return Err(ConfigError::invalid(
                        "runbooks.canary.max_changed",
                        format!(
                            "{} is not a share between 0 and 1",
                            raw.runbooks.canary.max_changed
                        ),
                    ));
                },
            },
            admin_token: raw.server.admin_token.filter(|s| !s.expose().is_empty()),
            marker_secret: raw.server.marker_secret.filter(|s| !s.expose().is_empty()),
            ui: raw.server.ui,
            ui_token: raw.server.ui_token.filter(|s| !s.expose().is_empty()),
            templates_dir: raw.templates.dir,
            store: StoreUrl::parse(&raw.store.url)?,
            matcher: MatcherConfig {
                top_k: raw.matcher.top_k,
                min_confidence: raw.matcher.min_confidence,
                no_match_text: raw.matcher.no_match_text,
                coalesce: Duration::from_secs(raw.matcher.coalesce_secs),
                normalize,
                model_dir: raw.matcher.model_dir,
                semantic_weight: check_weight(raw.matcher.semantic_weight)?,
                learn: raw.matcher.learn,
                embedding_cache_dir: Some(raw.matcher.embedding_cache_dir)
                    .filter(|d| !d.as_os_str().is_empty()),
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
                max_per_reply_target: raw.outbox.max_per_reply_target,
                reply_target_window: Duration::from_secs(raw.outbox.reply_target_window_secs),
                fold_wait: Duration::from_millis(raw.outbox.fold_wait_ms),
            },
            sources,
            destinations,
            routes,
        })
    }
}

/// A generic source that answers on a destination nobody configured would refuse every
/// webhook with a 4xx, which its sender does not retry: caught here, before any is lost.
fn check_replies(sources: &Sources, destinations: &[String]) -> Result<(), ConfigError> {
    for (name, source) in &sources.generic {
        if let Some((destination, _)) = &source.reply
            && !destinations.contains(destination)
        {
            let known = if destinations.is_empty() {
                "none is configured".to_string()
            } else {
                format!("configured: {}", destinations.join(", "))
            };
            return Err(ConfigError::invalid(
                "sources.generic.<name>.reply_destination",
                format!("`{name}`: destination `{destination}` is not configured ({known})"),
            ));
        }
    }
    Ok(())
}

fn check_weight(weight: f32) -> Result<f32, ConfigError> {
    if (0.0..=1.0).contains(&weight) {
        Ok(weight)
    } else {
        Err(ConfigError::invalid(
            "matcher.semantic_weight",
            format!("{weight} is not between 0 and 1"),
        ))
    }
}
