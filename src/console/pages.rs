//! The console's pages. Each handler checks the session first, reads what it shows through
//! the store's indexed queries, and renders one template; the two that change something
//! (retrying dead letters, logging in and out) check a CSRF token or the console token.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{HttpRequest, HttpResponse, web};
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::{Console, access, chart, redirect, secured};
use crate::audit::AuditEvent;
use crate::outbox::console::TicketFilter;
use crate::outbox::{AuditQuery, ItemState, Requeue, now_ms};
use crate::pipeline::{Pipeline, delivery_key};
use crate::signature::AlarmSignature;
use crate::ticket::ReplyTarget;

const DAY_MS: i64 = 86_400_000;

/// Any serializable value, for a template.
fn v<T: Serialize>(value: T) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(value))
}
const PAGE: usize = 50;

/// The session of the request, or the redirect to the login form.
macro_rules! session {
    ($console:expr, $req:expr) => {
        match $console.session(&$req) {
            Some(session) => session,
            None => return redirect("/ui/login"),
        }
    };
}

fn unavailable(error: impl std::fmt::Display) -> HttpResponse {
    tracing::error!(%error, "console page could not read the store");
    secured(HttpResponse::ServiceUnavailable())
        .content_type("text/plain; charset=utf-8")
        .body("the store could not be read; try again")
}

macro_rules! ok_or_503 {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(error) => return unavailable(error),
        }
    };
}

pub(super) async fn css(console: web::Data<Console>) -> HttpResponse {
    secured(HttpResponse::Ok())
        .content_type("text/css; charset=utf-8")
        .body(console.css.clone())
}

#[derive(Serialize)]
struct OutcomeCount {
    outcome: &'static str,
    label: &'static str,
    count: u64,
}

pub(super) async fn overview(
    req: HttpRequest,
    console: web::Data<Console>,
    pipeline: web::Data<Pipeline>,
) -> HttpResponse {
    let session = session!(console, req);
    let now = now_ms();
    let store = &pipeline.store;
    let summary = ok_or_503!(store.console_summary(now - DAY_MS).await);
    let counts = ok_or_503!(store.counts_now().await);
    let by: HashMap<&str, u64> = summary
        .outcomes
        .iter()
        .map(|(o, n)| (o.as_str(), *n))
        .collect();
    let outcomes: Vec<OutcomeCount> = chart::OUTCOMES
        .iter()
        .map(|(outcome, label)| OutcomeCount {
            outcome,
            label,
            count: by.get(outcome).copied().unwrap_or(0),
        })
        .collect();
    let matcher = pipeline.enricher.matcher.current();
    console.render(
        "overview.html",
        context! {
            page => "overview",
            csrf => console.access.csrf(&session),
            login => console.access.needs_login(),
            received => outcomes.iter().map(|o| o.count).sum::<u64>(),
            outcomes => v(outcomes),
            chart => v(chart::hourly(&summary.hourly, now, 24)),
            pending => counts.pending,
            dead => counts.dead,
            delivered => counts.delivered,
            backlog => store.backlog(),
            version => matcher.index().version(),
            runbooks => matcher.index().len(),
            loaded_ms => pipeline.enricher.matcher.loaded_ms(),
            semantic => matcher.semantic().is_some(),
        },
    )
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct TicketsQuery {
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    outcome: Option<String>,
    #[serde(default)]
    destination: Option<String>,
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    before: Option<i64>,
}

/// The query string of the next page: the same filters, older rows.
fn next_page(query: &TicketsQuery, before: i64) -> String {
    let mut url = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in [
        ("source", &query.source),
        ("outcome", &query.outcome),
        ("destination", &query.destination),
        ("q", &query.q),
    ] {
        if let Some(value) = value.as_ref().filter(|v| !v.is_empty()) {
            url.append_pair(name, value);
        }
    }
    url.append_pair("before", &before.to_string());
    url.finish()
}

pub(super) async fn tickets(
    req: HttpRequest,
    console: web::Data<Console>,
    pipeline: web::Data<Pipeline>,
    query: web::Query<TicketsQuery>,
) -> HttpResponse {
    let session = session!(console, req);
    let filter = TicketFilter {
        source: query.source.clone(),
        outcome: query.outcome.clone(),
        destination: query.destination.clone(),
        runbook: None,
        text: query.q.clone(),
        before: query.before,
        limit: PAGE,
    };
    let rows = ok_or_503!(pipeline.store.console_tickets(&filter).await);
    let next = (rows.len() == PAGE)
        .then(|| rows.last().map(|r| next_page(&query, r.id)))
        .flatten();
    let mut destinations: Vec<&String> = pipeline.enricher.destinations.keys().collect();
    destinations.sort();
    console.render(
        "tickets.html",
        context! {
            page => "tickets",
            csrf => console.access.csrf(&session),
            login => console.access.needs_login(),
            rows => v(rows),
            next,
            source => query.source.clone().unwrap_or_default(),
            outcome => query.outcome.clone().unwrap_or_default(),
            destination => query.destination.clone().unwrap_or_default(),
            q => query.q.clone().unwrap_or_default(),
            sources => v(["alertmanager", "github", "grafana", "pagerduty", "jira", "opsgenie", "servicenow", "generic"]),
            outcomes => v(chart::OUTCOMES.iter().map(|(o, _)| *o).collect::<Vec<_>>()),
            destinations => v(destinations),
        },
    )
}

#[derive(Debug, Deserialize)]
pub(super) struct IdQuery {
    id: String,
    #[serde(default)]
    before: Option<i64>,
}

#[derive(Serialize)]
struct Line {
    at_ms: i64,
    text: String,
    kind: &'static str,
}

#[derive(Serialize)]
struct Posted {
    destination: String,
    delivery_key: String,
    state: String,
    body: String,
    attempts: Vec<Attempt>,
}

#[derive(Serialize)]
struct Attempt {
    at_ms: i64,
    attempt: u32,
    outcome: String,
    status: Option<u16>,
    detail: String,
}

#[derive(Serialize)]
struct Explained {
    runbook: String,
    title: String,
    url: String,
    confidence: f32,
    confident: bool,
    why: String,
}

/// Where the ticket lives, as a link when runlink knows its address.
fn ticket_link(target: Option<&ReplyTarget>) -> Option<String> {
    match target? {
        ReplyTarget::GithubIssue {
            owner,
            repo,
            number,
        } => Some(format!("https://github.com/{owner}/{repo}/issues/{number}")),
        _ => None,
    }
}

pub(super) async fn ticket(
    req: HttpRequest,
    console: web::Data<Console>,
    pipeline: web::Data<Pipeline>,
    query: web::Query<IdQuery>,
) -> HttpResponse {
    let session = session!(console, req);
    let store = &pipeline.store;
    let Ok(id) = crate::ticket::TicketId::parse(query.id.clone()) else {
        return console.render(
            "ticket.html",
            context! { page => "tickets", missing => true },
        );
    };
    let stored = ok_or_503!(store.ticket(&id).await);
    let records = ok_or_503!(
        store
            .audit_log(AuditQuery {
                ticket: Some(id.to_string()),
                since_ms: None,
                limit: Some(500),
            })
            .await
    );
    let mut trail = Vec::new();
    let mut recorded = None;
    let mut posted: Vec<Posted> = Vec::new();
    for record in &records {
        trail.push(Line {
            at_ms: record.at_ms,
            text: record.event.describe(),
            kind: record.event.kind(),
        });
        match &record.event {
            AuditEvent::Decided {
                signature,
                candidates,
                confident,
                index_version,
                ..
            } => {
                recorded = Some((
                    signature.clone(),
                    candidates.clone(),
                    *confident,
                    index_version.clone(),
                ))
            }
            AuditEvent::Enqueued {
                delivery_key,
                destination,
            } => {
                let (state, body) = ok_or_503!(store.delivery(delivery_key).await)
                    .unwrap_or_else(|| ("unknown".into(), String::new()));
                posted.push(Posted {
                    destination: destination.clone(),
                    delivery_key: delivery_key.clone(),
                    state,
                    body,
                    attempts: Vec::new(),
                });
            }
            AuditEvent::DeliveryAttempt {
                delivery_key,
                attempt,
                outcome,
                status,
                detail,
                ..
            } => {
                if let Some(p) = posted.iter_mut().find(|p| &p.delivery_key == delivery_key) {
                    p.attempts.push(Attempt {
                        at_ms: record.at_ms,
                        attempt: *attempt,
                        outcome: outcome.as_str().to_string(),
                        status: *status,
                        detail: detail.clone(),
                    });
                }
            }
            _ => {}
        }
    }
    // What `explain` says now, with the index in force.
    let (signature, explained) = match &stored {
        Some(stored) => {
            let enricher = pipeline.enricher.clone();
            let ticket = stored.ticket.clone();
            let decided = tokio::task::spawn_blocking(move || {
                let signature = AlarmSignature::of(&ticket, &enricher.normalizer);
                let lessons = enricher.lessons.as_ref().map(|b| b.current());
                let decision = enricher.matcher.current().decide_with(
                    &signature,
                    enricher.top_k,
                    lessons.as_deref(),
                );
                (signature, decision)
            })
            .await;
            match decided {
                Ok((signature, Ok(decision))) => (
                    Some(signature),
                    decision
                        .candidates
                        .iter()
                        .map(|c| Explained {
                            runbook: c.runbook.id.to_string(),
                            title: c.runbook.title.clone(),
                            url: c.runbook.url.to_string(),
                            confidence: c.confidence,
                            confident: c.confident,
                            why: c.reason.describe(),
                        })
                        .collect(),
                ),
                _ => (None, Vec::new()),
            }
        }
        None => (None, Vec::new()),
    };
    let (recorded_signature, recorded_candidates, recorded_confident, recorded_version) =
        recorded.unwrap_or_default();
    console.render(
        "ticket.html",
        context! {
            page => "tickets",
            csrf => console.access.csrf(&session),
            login => console.access.needs_login(),
            id => id.to_string(),
            missing => stored.is_none() && records.is_empty(),
            ticket => v(stored.as_ref().map(|s| &s.ticket)),
            received_ms => stored.as_ref().map(|s| s.received_ms),
            link => ticket_link(stored.as_ref().and_then(|s| s.ticket.reply.as_ref())),
            reply => stored.as_ref().and_then(|s| s.ticket.reply.as_ref()).map(|r| format!("{} {}", r.destination(), r.display_id())),
            signature => v(signature),
            recorded_signature,
            recorded_candidates => v(recorded_candidates),
            recorded_confident,
            recorded_version,
            explained => v(explained),
            posted => v(posted),
            trail => v(trail),
        },
    )
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct DaysQuery {
    #[serde(default)]
    days: Option<i64>,
}

#[derive(Serialize)]
struct RunbookRow {
    id: String,
    title: String,
    url: String,
    linked: u64,
    alarms: Vec<String>,
    findings: Vec<String>,
}

impl Console {
    /// Lint findings of the corpus behind `version`, computed once per version.
    async fn findings(&self, version: &str) -> Arc<Vec<crate::runbooks::lint::Finding>> {
        if let Some((v, findings)) = self.lint.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
            && v == version
        {
            return findings.clone();
        }
        let (dir, base) = (self.corpus_dir.clone(), self.base_url.clone());
        let findings = tokio::task::spawn_blocking(move || {
            crate::runbooks::Corpus::load(&dir, &base)
                .map(|corpus| crate::runbooks::lint::lint(&corpus))
                .unwrap_or_default()
        })
        .await
        .unwrap_or_default();
        let findings = Arc::new(findings);
        *self.lint.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((version.to_string(), findings.clone()));
        findings
    }
}

pub(super) async fn runbooks(
    req: HttpRequest,
    console: web::Data<Console>,
    pipeline: web::Data<Pipeline>,
    query: web::Query<DaysQuery>,
) -> HttpResponse {
    let session = session!(console, req);
    let days = query.days.unwrap_or(7).clamp(1, 365);
    let counts: HashMap<String, u64> = ok_or_503!(
        pipeline
            .store
            .console_runbooks(now_ms() - days * DAY_MS)
            .await
    )
    .into_iter()
    .collect();
    let matcher = pipeline.enricher.matcher.current();
    let findings = console.findings(matcher.index().version()).await;
    let mut rows: Vec<RunbookRow> = matcher
        .index()
        .runbooks()
        .iter()
        .map(|r| {
            let file = r.id.as_str().split('#').next().unwrap_or_default();
            RunbookRow {
                id: r.id.to_string(),
                title: r.title.clone(),
                url: r.url.to_string(),
                linked: counts.get(r.id.as_str()).copied().unwrap_or(0),
                alarms: r.alarms.clone(),
                findings: findings
                    .iter()
                    .filter(|f| f.path.ends_with(file))
                    .map(|f| f.to_string())
                    .collect(),
            }
        })
        .collect();
    rows.sort_by(|a, b| b.linked.cmp(&a.linked).then(a.id.cmp(&b.id)));
    console.render(
        "runbooks.html",
        context! {
            page => "runbooks",
            csrf => console.access.csrf(&session),
            login => console.access.needs_login(),
            days,
            rows => v(rows),
            version => matcher.index().version(),
        },
    )
}

pub(super) async fn runbook(
    req: HttpRequest,
    console: web::Data<Console>,
    pipeline: web::Data<Pipeline>,
    query: web::Query<IdQuery>,
) -> HttpResponse {
    let session = session!(console, req);
    let matcher = pipeline.enricher.matcher.current();
    let runbook = matcher
        .index()
        .runbooks()
        .iter()
        .find(|r| r.id.as_str() == query.id)
        .cloned();
    let filter = TicketFilter {
        runbook: Some(query.id.clone()),
        before: query.before,
        limit: PAGE,
        ..Default::default()
    };
    let rows = ok_or_503!(pipeline.store.console_tickets(&filter).await);
    let next = (rows.len() == PAGE)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    console.render(
        "runbook.html",
        context! {
            page => "runbooks",
            csrf => console.access.csrf(&session),
            login => console.access.needs_login(),
            id => query.id.clone(),
            runbook => runbook.as_ref().map(|r| context! {
                title => r.title.clone(),
                url => r.url.to_string(),
                alarms => r.alarms.clone(),
                steps => r.first_steps.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>(),
            }),
            rows => v(rows),
            next,
        },
    )
}

pub(super) async fn coverage(
    req: HttpRequest,
    console: web::Data<Console>,
    pipeline: web::Data<Pipeline>,
    query: web::Query<DaysQuery>,
) -> HttpResponse {
    let session = session!(console, req);
    let days = query.days.unwrap_or(30).clamp(1, 365);
    let since = now_ms() - days * DAY_MS;
    let gaps = ok_or_503!(pipeline.store.console_gaps(since, 200).await);
    let said_none = ok_or_503!(pipeline.store.feedback_since(since).await)
        .into_iter()
        .filter(|r| {
            r.forgotten_ms.is_none() && r.feedback.kind == crate::feedback::FeedbackKind::None
        })
        .fold(HashMap::<String, u64>::new(), |mut m, r| {
            *m.entry(r.feedback.signature).or_default() += 1;
            m
        });
    console.render(
        "coverage.html",
        context! {
            page => "coverage",
            csrf => console.access.csrf(&session),
            login => console.access.needs_login(),
            days,
            gaps => v(gaps),
            said_none => {
                let mut all: Vec<(String, u64)> = said_none.into_iter().collect();
                all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                v(all)
            },
        },
    )
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct PlaygroundForm {
    #[serde(default)]
    title: String,
    #[serde(default)]
    body: String,
    /// `key=value` per line.
    #[serde(default)]
    labels: String,
    #[serde(default)]
    destination: String,
}

/// The destinations a comment can be previewed for, and the template of each.
fn templates(pipeline: &Pipeline) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = pipeline
        .enricher
        .destinations
        .iter()
        .map(|(d, t)| (d.clone(), t.clone()))
        .collect();
    all.sort();
    all
}

pub(super) async fn playground(
    req: HttpRequest,
    console: web::Data<Console>,
    pipeline: web::Data<Pipeline>,
) -> HttpResponse {
    let session = session!(console, req);
    console.render(
        "playground.html",
        context! {
            page => "playground",
            csrf => console.access.csrf(&session),
            login => console.access.needs_login(),
            destinations => v(templates(&pipeline).into_iter().map(|(d, _)| d).collect::<Vec<_>>()),
            form => context! { title => "", body => "", labels => "", destination => "github" },
        },
    )
}

pub(super) async fn playground_run(
    req: HttpRequest,
    console: web::Data<Console>,
    pipeline: web::Data<Pipeline>,
    form: web::Form<PlaygroundForm>,
) -> HttpResponse {
    let session = session!(console, req);
    let form = form.into_inner();
    let labels = form
        .labels
        .lines()
        .filter_map(|l| l.split_once(['=', ':']))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .collect();
    let ticket = crate::ingest::manual::ManualTicket {
        title: form.title.clone(),
        body: form.body.clone(),
        labels,
        ..Default::default()
    }
    .into_ticket(0)
    .without_controls();
    let enricher = &pipeline.enricher;
    let signature = AlarmSignature::of(&ticket, &enricher.normalizer);
    let decision = ok_or_503!(enricher.decide(signature.clone()).await);
    let all = templates(&pipeline);
    let template = all
        .iter()
        .find(|(d, _)| *d == form.destination)
        .or_else(|| all.first())
        .map(|(_, t)| t.clone())
        .unwrap_or_else(|| "github.md.j2".into());
    let key = delivery_key(&ticket, &signature.key());
    let comment = enricher
        .renderer
        .render(&template, &ticket, &signature, &decision, &key)
        .unwrap_or_else(|e| format!("(the template failed: {e})"));
    let candidates: Vec<Explained> = decision
        .candidates
        .iter()
        .map(|c| Explained {
            runbook: c.runbook.id.to_string(),
            title: c.runbook.title.clone(),
            url: c.runbook.url.to_string(),
            confidence: c.confidence,
            confident: c.confident,
            why: c.reason.describe(),
        })
        .collect();
    console.render(
        "playground.html",
        context! {
            page => "playground",
            csrf => console.access.csrf(&session),
            login => console.access.needs_login(),
            destinations => v(all.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>()),
            form => context! {
                title => form.title,
                body => form.body,
                labels => form.labels,
                destination => form.destination,
            },
            result => context! {
                signature => v(signature.to_string()),
                confident => decision.is_confident(),
                candidates => v(candidates),
                comment,
                template,
            },
        },
    )
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct DeadQuery {
    #[serde(default)]
    retried: Option<u64>,
}

pub(super) async fn dead(
    req: HttpRequest,
    console: web::Data<Console>,
    pipeline: web::Data<Pipeline>,
    query: web::Query<DeadQuery>,
) -> HttpResponse {
    let session = session!(console, req);
    let rows = ok_or_503!(pipeline.store.list(Some(ItemState::Dead), 200).await);
    console.render(
        "dead.html",
        context! {
            page => "dead",
            csrf => console.access.csrf(&session),
            login => console.access.needs_login(),
            rows => v(rows),
            retried => query.retried,
        },
    )
}

#[derive(Debug, Deserialize)]
pub(super) struct RetryForm {
    #[serde(default)]
    csrf: String,
    /// One dead letter, or all of them when absent.
    #[serde(default)]
    id: Option<i64>,
}

pub(super) async fn retry(
    req: HttpRequest,
    console: web::Data<Console>,
    pipeline: web::Data<Pipeline>,
    form: web::Form<RetryForm>,
) -> HttpResponse {
    let Some(session) = console.session(&req) else {
        return secured(HttpResponse::Unauthorized())
            .content_type("text/plain; charset=utf-8")
            .body("log in first");
    };
    if !console.access.valid_csrf(&session, &form.csrf) {
        return secured(HttpResponse::Forbidden())
            .content_type("text/plain; charset=utf-8")
            .body("missing or wrong CSRF token: reload the page and try again");
    }
    let which = match form.id {
        Some(id) => Requeue::One(id),
        None => Requeue::AllDead,
    };
    let n = ok_or_503!(pipeline.store.requeue(which).await);
    console.metrics.add_pending(n as i64);
    tracing::info!(requeued = n, "dead letters retried from the console");
    redirect(&format!("/ui/dead?retried={n}"))
}

pub(super) async fn login_form(console: web::Data<Console>) -> HttpResponse {
    if !console.access.needs_login() {
        return redirect("/ui");
    }
    console.render("login.html", context! { page => "login", failed => false })
}

#[derive(Debug, Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    token: String,
}

pub(super) async fn login(console: web::Data<Console>, form: web::Form<LoginForm>) -> HttpResponse {
    if !console.access.needs_login() {
        return redirect("/ui");
    }
    if !console.access.accepts(&form.token) {
        tracing::warn!("console login with a wrong token");
        let mut response =
            console.render("login.html", context! { page => "login", failed => true });
        *response.status_mut() = actix_web::http::StatusCode::UNAUTHORIZED;
        return response;
    }
    let cookie = Cookie::build(access::COOKIE, console.access.session(now_ms()))
        .path("/ui")
        .http_only(true)
        .same_site(SameSite::Strict)
        .finish();
    let mut response = redirect("/ui");
    let _ = response.add_cookie(&cookie);
    response
}

#[derive(Debug, Deserialize)]
pub(super) struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

pub(super) async fn logout(
    req: HttpRequest,
    console: web::Data<Console>,
    form: web::Form<LogoutForm>,
) -> HttpResponse {
    if let Some(session) = console.session(&req)
        && !console.access.valid_csrf(&session, &form.csrf)
    {
        return secured(HttpResponse::Forbidden()).finish();
    }
    let mut cookie = Cookie::build(access::COOKIE, "").path("/ui").finish();
    cookie.make_removal();
    let mut response = redirect("/ui/login");
    let _ = response.add_cookie(&cookie);
    response
}
