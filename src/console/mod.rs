//! The web console under `/ui`: what runlink received, decided and posted, and what to write
//! next, as server-rendered pages (minijinja templates in `templates/ui/`, one CSS file, no
//! script, nothing from elsewhere). Every page reads the store through indexed queries
//! (`outbox::console`), so it answers fast whatever the store holds. Access is `access.rs`.

mod access;
mod chart;
mod pages;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use minijinja::Environment;

use crate::metrics::Metrics;
use crate::runbooks::lint::Finding;
pub(crate) use access::Access;

/// Every response of the console carries these: nothing runs but what runlink serves, no
/// page may be framed, nothing is cached or leaks in a referrer.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

const TEMPLATES: &[&str] = &[
    "base.html",
    "overview.html",
    "tickets.html",
    "ticket.html",
    "runbooks.html",
    "runbook.html",
    "coverage.html",
    "playground.html",
    "dead.html",
    "login.html",
];

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("console template {name}: {source}")]
    Template {
        name: String,
        #[source]
        source: minijinja::Error,
    },
}

pub struct Console {
    access: Access,
    env: Environment<'static>,
    css: String,
    corpus_dir: PathBuf,
    base_url: url::Url,
    metrics: Arc<Metrics>,
    /// Lint findings of the index version they were made for: lint reads every file, so
    /// the runbooks page does it once per version.
    lint: Mutex<Option<(String, Arc<Vec<Finding>>)>>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").finish_non_exhaustive()
    }
}

/// A template from `dir/ui/`, or the bundled one.
fn template_source(dir: &std::path::Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join("ui").join(name))
        .ok()
        .or_else(|| bundled(name).map(str::to_string))
}

fn bundled(name: &str) -> Option<&'static str> {
    Some(match name {
        "base.html" => include_str!("../../templates/ui/base.html"),
        "overview.html" => include_str!("../../templates/ui/overview.html"),
        "tickets.html" => include_str!("../../templates/ui/tickets.html"),
        "ticket.html" => include_str!("../../templates/ui/ticket.html"),
        "runbooks.html" => include_str!("../../templates/ui/runbooks.html"),
        "runbook.html" => include_str!("../../templates/ui/runbook.html"),
        "coverage.html" => include_str!("../../templates/ui/coverage.html"),
        "playground.html" => include_str!("../../templates/ui/playground.html"),
        "dead.html" => include_str!("../../templates/ui/dead.html"),
        "login.html" => include_str!("../../templates/ui/login.html"),
        "console.css" => include_str!("../../templates/ui/console.css"),
        _ => return None,
    })
}

/// Milliseconds since the epoch as a UTC time.
fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

impl Console {
    pub(crate) fn new(
        access: Access,
        templates_dir: &std::path::Path,
        corpus_dir: PathBuf,
        base_url: url::Url,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ConsoleError> {
        let mut env = Environment::new();
        // `.html` templates escape every value by default: ticket text is never markup.
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .build()
                .expect("default delimiters are valid"),
        );
        env.add_filter("time", |ms: i64| time(ms));
        env.add_filter("pct", |share: f64| format!("{:.1} %", share * 100.0));
        for name in TEMPLATES {
            let source = template_source(templates_dir, name).unwrap_or_default();
            env.add_template_owned(name.to_string(), source)
                .map_err(|source| ConsoleError::Template {
                    name: name.to_string(),
                    source,
                })?;
        }
        Ok(Console {
            access,
            env,
            css: template_source(templates_dir, "console.css").unwrap_or_default(),
            corpus_dir,
            base_url,
            metrics,
            lint: Mutex::new(None),
        })
    }

    /// The session of a request: `Some("")` when no login is needed, the cookie when it
    /// is valid, `None` when the request must log in first.
    fn session(&self, req: &HttpRequest) -> Option<String> {
        if !self.access.needs_login() {
            return Some(String::new());
        }
        let cookie = req.cookie(access::COOKIE)?;
        self.access
            .valid_session(cookie.value(), crate::outbox::now_ms())
            .then(|| cookie.value().to_string())
    }

    fn render(&self, name: &str, ctx: minijinja::Value) -> HttpResponse {
        match self.env.get_template(name).and_then(|t| t.render(ctx)) {
            Ok(html) => secured(HttpResponse::Ok())
                .content_type("text/html; charset=utf-8")
                .body(html),
            Err(error) => {
                tracing::error!(%error, template = name, "console page failed to render");
                secured(HttpResponse::InternalServerError())
                    .content_type("text/plain; charset=utf-8")
                    .body("the page could not be rendered; see the server log")
            }
        }
    }
}

/// The headers every console response carries.
fn secured(mut builder: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    builder
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    builder
}

fn redirect(to: &str) -> HttpResponse {
    secured(HttpResponse::SeeOther())
        .insert_header((header::LOCATION, to))
        .finish()
}

/// Registers the console's routes (when it is on).
pub(crate) fn configure(cfg: &mut web::ServiceConfig, console: web::Data<Console>) {
    cfg.app_data(console).service(
        web::scope("/ui")
            .route("", web::get().to(pages::overview))
            .route("/", web::get().to(pages::overview))
            .route("/console.css", web::get().to(pages::css))
            .route("/login", web::get().to(pages::login_form))
            .route("/login", web::post().to(pages::login))
            .route("/logout", web::post().to(pages::logout))
            .route("/tickets", web::get().to(pages::tickets))
            .route("/ticket", web::get().to(pages::ticket))
            .route("/runbooks", web::get().to(pages::runbooks))
            .route("/runbook", web::get().to(pages::runbook))
            .route("/coverage", web::get().to(pages::coverage))
            .route("/playground", web::get().to(pages::playground))
            .route("/playground", web::post().to(pages::playground_run))
            .route("/dead", web::get().to(pages::dead))
            .route("/dead/retry", web::post().to(pages::retry)),
    );
}
