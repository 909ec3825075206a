//! A generic HTTP destination (`destinations.generic.<name>`) for in-house trackers and chat
//! tools: method, URL path, headers and body all come from config; path and body are
//! minijinja templates that see `comment`, `target.id`, `ticket`, `delivery_key` and
//! `marker`. Such APIs have no standard way to list comments: with a `lookup_path` and
//! `lookup_pointer` the marker check reads them; without, `on_uncertain` decides whether an
//! attempt that may have landed is posted again (`post`, the default) or held (see
//! `has_marker`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use minijinja::Environment;
use serde::Serialize;

use super::pacer::Pacer;
use super::retry::RetryPolicy;
use super::{Attempt, Destination, send, wrong_target};
use crate::config::{GenericDestinationConfig, OnUncertain, Secret};
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
    lookup_pointer: Option<String>,
    on_uncertain: OnUncertain,
    templates: Environment<'static>,
    policy: RetryPolicy,
    pacer: Pacer,
    /// Signs the marker a body template may place (`{{ marker }}`).
    marker: crate::render::MarkerKey,
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
        marker: crate::render::MarkerKey,
    ) -> Result<Self, GenericTemplateError> {
        let mut templates = Environment::new();
        // In a path, `urlencode` must make one segment of anything: minijinja's own keeps `/`.
        templates.add_filter("urlencode", |value: String| encode_segment(&value));
        let lookup = config.lookup.as_ref().map(|(path, _)| ("lookup", path));
        for (field, source) in [("path", &config.path), ("body", &config.body)]
            .into_iter()
            .chain(lookup)
        {
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
            lookup_pointer: config.lookup.as_ref().map(|(_, pointer)| pointer.clone()),
            on_uncertain: config.on_uncertain,
            templates,
            policy,
            pacer: Pacer::new(config.common.pacing.clone()),
            marker,
        };
        // Unknown filters and the like only show when a template runs: run both once now,
        // so a typo fails the start-up instead of every delivery.
        let marker = destination.marker.token("key");
        let sample = Context {
            comment: "comment",
            target: Target { id: "id" },
            ticket: "ticket",
            delivery_key: "key",
            marker: &marker,
        };
        let fields: &[&'static str] = if config.lookup.is_some() {
            &["path", "body", "lookup"]
        } else {
            &["path", "body"]
        };
        for &field in fields {
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
    fn path(&self, field: &str, context: &Context<'_>) -> Result<String, String> {
        let path = self.render(field, context)?;
        let sample = Context {
            target: Target { id: "id" },
            ..*context
        };
        let expected = self.render(field, &sample)?;
        let shape = |p: &str| (p.matches('/').count(), p.contains('?'), p.contains('#'));
        // URL parsers read `%2e` as a dot, so an encoded `..` climbs all the same.
        let climbs = path.split(['/', '?', '#']).any(|segment| {
            let segment = segment.to_ascii_lowercase().replace("%2e", ".");
            segment == ".." || segment == "."
        });
        if shape(&path) != shape(&expected) || climbs {
            return Err(format!(
                "destinations.{}.{field}: the target id `{}` does not fit in one path segment",
                self.destination, context.target.id
            ));
        }
        Ok(path)
    }

    /// `api_url` with a rendered path that stays under it.
    fn url(&self, path: &str) -> Result<url::Url, String> {
        match self.api_url.join(path.trim_start_matches('/')) {
            Ok(url) if url.as_str().starts_with(self.api_url.as_str()) => Ok(url),
            Ok(url) => Err(format!("path leaves api_url: {url}")),
            Err(e) => Err(format!("bad path `{path}`: {e}")),
        }
    }

    fn with_headers(&self, mut request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        for (header, value) in &self.headers {
            request = request.header(header, value.expose());
        }
        request
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

    fn max_chars(&self) -> usize {
        self.max_chars
    }

    /// With a lookup, the listing at `lookup_pointer` is searched for the marker. Without
    /// one there is nothing to ask, and `on_uncertain` decides: post again, or hold.
    async fn has_marker(&self, item: &OutboxItem, marker: &str) -> Option<bool> {
        let Some(pointer) = &self.lookup_pointer else {
            return match self.on_uncertain {
                OnUncertain::Post => Some(false),
                OnUncertain::Hold => None,
            };
        };
        let ReplyTarget::Generic { id, .. } = &item.target else {
            return None;
        };
        let context = Context {
            comment: "",
            target: Target { id },
            ticket: item.ticket.as_str(),
            delivery_key: &item.delivery_key,
            marker,
        };
        let url = match self.path("lookup", &context).and_then(|p| self.url(&p)) {
            Ok(url) => url,
            Err(error) => {
                tracing::warn!(%error, "cannot build the lookup for the marker check");
                return None;
            }
        };
        let listing: serde_json::Value =
            super::fetch_json(self.with_headers(self.client.get(url))).await?;
        let comments = listing.pointer(pointer)?;
        Some(comments.to_string().contains(marker))
    }

    async fn post(&self, item: &OutboxItem) -> Attempt {
        let ReplyTarget::Generic { name, id } = &item.target else {
            return wrong_target(self.name(), item);
        };
        if *name != self.target_name {
            return wrong_target(self.name(), item);
        }
        let marker = self.marker.token(&item.delivery_key);
        let comment = super::fit(&item.body, self.max_chars);
        let context = Context {
            comment: &comment,
            target: Target { id },
            ticket: item.ticket.as_str(),
            delivery_key: &item.delivery_key,
            marker: &marker,
        };
        let (path, body) = match (self.path("path", &context), self.render("body", &context)) {
            (Ok(path), Ok(body)) => (path, body),
            (Err(e), _) | (_, Err(e)) => return Attempt::give_up(e),
        };
        // A path that climbs out of the configured base could reach another API on the host.
        let url = match self.url(&path) {
            Ok(url) => url,
            Err(e) => return Attempt::give_up(e),
        };
        let request = self.with_headers(
            self.client
                .request(self.method.clone(), url)
                .header("Content-Type", &self.content_type)
                .body(body),
        );
        send(&self.policy, request).await
    }
}
