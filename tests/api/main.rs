//! runlink's integration tests, one binary: the real application on random ports, real
//! sockets, doubles for the destinations, and the real Alertmanager and PostgreSQL where
//! they are installed (`scripts/install-deps.sh`). Shared helpers are in `common`.

mod common;

mod alertmanager;
mod alertmanager_e2e;
mod canary;
mod cli;
mod config;
mod console;
mod destinations;
mod disk_full;
mod failback;
mod feedback;
mod github_webhook;
mod hardening;
mod history;
mod http;
mod matching;
mod reload;
mod replicas;
mod semantic;
mod sources;
mod store;
