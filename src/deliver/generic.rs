//! A generic HTTP destination (`destinations.generic.<name>`) for in-house trackers and chat
//! tools: method, URL path, headers and body all come from config; path and body are
//! minijinja templates that see `comment`, `target.id`, `ticket`, `delivery_key` and
//! `marker`. Such APIs have no known way to list comments, so an uncertain attempt is not
//! re-posted blindly: it waits for the lease and is retried as uncertain (see `has_marker`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use minijinja::Environment;
use serde::Serialize;

use super::pacer::Pacer;
use super::retry::RetryPolicy;
use super::{Attempt, Destination, send, wrong_target};
use crate::config::{GenericDestinationConfig, Secret};
use crate::outbox::OutboxItem;
use crate::ticket::ReplyTarget;

#[derive(Debug)]
pub struct GenericDestination {
    /// The key in `destinations`: `generic.<name>`.
    destination: String,
    /// The `<name>` a reply target addresses.
    target_name: String,
    client: reqwest::Client,
    api_url: url::Url,
    method: reqwest::Method,
    headers: BTreeMap<String, Secret>,
    content_type: String,
    max_chars: usize,
    templates: Environment<'static>,
    policy: RetryPolicy,
    pacer: Pacer,
}

#[derive(Serialize, Clone, Copy)]
struct Target<'a> {
    id: &'a str,
}

#[derive(Serialize, Clone, Copy)]
struct Context<'a> {
    comment: &'a str,
    target: Target<'a>,
    ticket: &'a str,
    delivery_key: &'a str,
    marker: &'a str,
}

/// Percent-encodes everything but the unreserved characters.
fn encode_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        let keep = byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'~' | b'.');
        if keep {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
#[error("destinations.generic.{name}.{field}: {source:#}")]
pub struct GenericTemplateError {
    name: String,
    field: &'static str,
    #[source]
    source: minijinja::Error,
}

impl GenericDestination {
    pub fn new(
        config: &GenericDestinationConfig,
        client: reqwest::Client,
        policy: RetryPolicy,
    ) -> Result<Self, GenericTemplateError> {
        let mut templates = Environment::new();
        // In a path, `urlencode` must make one segment of anything: minijinja's own keeps `/`.
        templates.add_filter("urlencode", |value: String| encode_segment(&value));
        for (field, source) in [("path", &config.path), ("body", &config.body)] {
            templates
                .add_template_owned(field, source.clone())
                .map_err(|source| GenericTemplateError {
                    name: config.name.clone(),
                    field,
                    source,
                })?;
        }
        let destination = GenericDestination {
            destination: format!("generic.{}", config.name),
            target_name: config.name.clone(),
            client,
            api_url: config.common.api_url.clone(),
            method: config.method.clone(),
            headers: config.headers.clone(),
            content_type: config.content_type.clone(),
            max_chars: config.max_chars,
            templates,
            policy,
            pacer: Pacer::new(config.common.pacing.clone()),
        };
        // Unknown filters and the like only show when a template runs: run both once now,
        // so a typo fails the start-up instead of every delivery.
        let marker = crate::render::marker_token("key");
        let sample = Context {
            comment: "comment",
            target: Target { id: "id" },
            ticket: "ticket",
            delivery_key: "key",
            marker: &marker,
        };
        for field in ["path", "body"] {
            destination
                .templates
                .get_template(field)
                .and_then(|t| t.render(minijinja::value::Serde(&sample)))
                .map_err(|source| GenericTemplateError {
                    name: config.name.clone(),
                    field,
                    source,
                })?;
        }
        Ok(destination)
    }

    /// The path for `context`, refused when the target id changed its shape (added a
    /// segment, a query or a fragment, or climbs with `..`): an id from a ticket must never
    /// steer a request, with the configured credentials, to another endpoint.
    fn path(&self, context: &Context<'_>) -> Result<String, String> {
        let path = self.render("path", context)?;
        let sample = Context {
            target: Target { id: "id" },
            ..*context
        };
        let expected = self.render("path", &sample)?;
        let shape = |p: &str| (p.matches('/').count(), p.contains('?'), p.contains('#'));
        // URL parsers read `%2e` as a dot, so an encoded `..` climbs all the same.
        let climbs = path.split(['/', '?', '#']).any(|segment| {
            let segment = segment.to_ascii_lowercase().replace("%2e", ".");
            segment == ".." || segment == "."
        });
        if shape(&path) != shape(&expected) || climbs {
            return Err(format!(
                "destinations.{}.path: the target id `{}` does not fit in one path segment",
                self.destination, context.target.id
            ));
        }
        Ok(path)
    }

    fn render(&self, field: &str, context: &Context<'_>) -> Result<String, String> {
        self.templates
            .get_template(field)
            .and_then(|t| t.render(minijinja::value::Serde(context)))
            .map_err(|e| format!("destinations.{}.{field}: {e:#}", self.destination))
    }
}

#[async_trait]
impl Destination for GenericDestination {
    fn name(&self) -> &str {
        &self.destination
    }

    fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    async fn has_marker(&self, _item: &OutboxItem, _marker: &str) -> Option<bool> {
        None
    }

    async fn post(&self, item: &OutboxItem) -> Attempt {
        let ReplyTarget::Generic { name, id } = &item.target else {
            return wrong_target(self.name(), item);
        };
        if *name != self.target_name {
            return wrong_target(self.name(), item);
        }
        let marker = crate::render::marker_token(&item.delivery_key);
        let comment = super::fit(&item.body, self.max_chars);
        let context = Context {
            comment: &comment,
            target: Target { id },
            ticket: item.ticket.as_str(),
            delivery_key: &item.delivery_key,
            marker: &marker,
        };
        let (path, body) = match (self.path(&context), self.render("body", &context)) {
            (Ok(path), Ok(body)) => (path, body),
            (Err(e), _) | (_, Err(e)) => return Attempt::give_up(e),
        };
        // A path that climbs out of the configured base could reach another API on the host.
        let url = match self.api_url.join(path.trim_start_matches('/')) {
            Ok(url) if url.as_str().starts_with(self.api_url.as_str()) => url,
            Ok(url) => return Attempt::give_up(format!("path leaves api_url: {url}")),
            Err(e) => return Attempt::give_up(format!("bad path `{path}`: {e}")),
        };
        let mut request = self
            .client
            .request(self.method.clone(), url)
            .header("Content-Type", &self.content_type)
            .body(body);
        for (header, value) in &self.headers {
            request = request.header(header, value.expose());
        }
        send(&self.policy, request).await
    }
}
