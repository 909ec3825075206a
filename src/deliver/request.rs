//! What every destination does with HTTP: one shared client, URLs built from encoded
//! segments, authentication, sending a request and judging the answer, fitting a note to a
//! length limit, and reading a JSON listing for the marker check.

use std::time::Duration;

use super::Attempt;
use super::retry::{RetryPolicy, Verdict};
use crate::outbox::OutboxItem;

/// `base` with path segments appended, each percent-encoded: ids from tickets can never
/// escape into another path.
pub fn api_url(base: &url::Url, segments: &[&str]) -> Result<url::Url, String> {
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|_| format!("`{base}` cannot take a path"))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

pub fn with_auth(
    request: reqwest::RequestBuilder,
    auth: &crate::config::HttpAuth,
) -> reqwest::RequestBuilder {
    use crate::config::HttpAuth;
    match auth {
        HttpAuth::None => request,
        HttpAuth::Basic { username, password } => {
            request.basic_auth(username, Some(password.expose()))
        }
        HttpAuth::Bearer(token) => request.bearer_auth(token.expose()),
    }
}

/// Sends one request and lets the policy judge the answer. The start of an error body is
/// kept, because that is what an operator needs to read in the dead-letter list.
pub async fn send(policy: &RetryPolicy, request: reqwest::RequestBuilder) -> Attempt {
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            let verdict = policy.classify(status, response.headers());
            let detail = if verdict == Verdict::Done {
                String::new()
            } else {
                let text = response.text().await.unwrap_or_default();
                text.chars().take(300).collect()
            };
            Attempt {
                verdict,
                status: Some(status.as_u16()),
                detail,
                uncertain: false,
            }
        }
        Err(error) => attempt_from_error(policy, &error),
    }
}

/// Notes have a length limit: cuts `text` to at most `max` characters, keeping its last
/// line, which is where the marker is.
pub fn fit(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    let count = text.chars().count();
    if count <= max {
        return text.into();
    }
    let tail: String = text.lines().last().unwrap_or_default().to_string();
    let room = max.saturating_sub(tail.chars().count() + 5);
    let head: String = text.chars().take(room).collect();
    format!("{head}\n…\n{tail}").into()
}

/// GETs a JSON document for a marker check; `None` (cannot tell) on any failure.
pub async fn fetch_json<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
) -> Option<T> {
    let response = request.send().await.ok()?;
    if !response.status().is_success() {
        tracing::warn!(
            status = response.status().as_u16(),
            "cannot list comments for the marker check"
        );
        return None;
    }
    response.json().await.ok()
}

/// The reply target an item addresses, when it is of the kind this destination posts to.
/// Anything else is a bug in routing, and giving up says so instead of retrying forever.
pub fn wrong_target(destination: &str, item: &OutboxItem) -> Attempt {
    Attempt::give_up(format!(
        "{destination} cannot post to a {} target",
        item.target.destination()
    ))
}

/// One HTTP client for all destinations: connection pools are shared, TLS set up once.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    // reqwest is built without a bundled crypto provider; install ring once per process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("runlink/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A network failure after the request may have been written counts as uncertain; a refused
/// connection does not.
pub fn attempt_from_error(policy: &RetryPolicy, error: &reqwest::Error) -> Attempt {
    Attempt {
        verdict: policy.classify_error(error),
        status: None,
        detail: String::new(),
        uncertain: !error.is_connect() && !error.is_builder(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_notes_keep_their_last_line() {
        let text = format!("{}\nref runlink:delivery=abc", "x".repeat(100));
        let cut = fit(&text, 60);
        assert!(cut.chars().count() <= 60, "{cut}");
        assert!(cut.ends_with("ref runlink:delivery=abc"), "{cut}");
        assert_eq!(fit("short", 60), "short");
    }
}
