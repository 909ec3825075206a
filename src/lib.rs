//! runlink: links alarm-generated tickets to the runbooks that resolve them.
//!
//! The modules follow the data flow: `ingest` (one file per source) -> `ticket` ->
//! `signature` -> `runbooks` / `search` -> `matcher` -> `render` -> `outbox` -> `deliver`
//! (one file per destination) -> `audit`. `pipeline` is the glue between a parsed ticket and
//! the store; `app` wires it all into one server.

pub mod api;
pub mod app;
pub mod audit;
pub mod config;
pub mod deliver;
pub mod ingest;
pub mod matcher;
pub mod memo;
pub mod metrics;
pub mod outbox;
pub mod pipeline;
pub mod reload;
pub mod render;
pub mod routes;
pub mod runbooks;
pub mod search;
pub mod signature;
pub mod telemetry;
pub mod ticket;
