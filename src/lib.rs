//! runlink: links alarm-generated tickets to the runbooks that resolve them.
//!
//! The modules follow the data flow: `ingest` (one file per source) -> `ticket` ->
//! `signature` -> `runbooks` / `search` -> `matcher` -> `render` -> `outbox` -> `deliver`
//! (one file per destination) -> `audit`. `feedback` carries what operators say about an
//! answer back into matching, and to the runbook authors. `pipeline` carries one parsed ticket to the store;
//! `reply_routing` decides where its comment goes. `http` is the HTTP surface, `wiring`
//! builds the parts from the configuration (for the server and the CLI alike), and
//! `startup` runs the server.

#![warn(unreachable_pub)]

pub mod audit;
pub mod canary;
pub mod config;
pub mod console;
pub mod deliver;
mod did_you_mean;
pub mod feedback;
mod http;
pub mod ingest;
pub mod matcher;
mod memo;
pub mod metrics;
pub mod outbox;
pub mod pipeline;
mod reload;
pub mod render;
mod reply_routing;
pub mod runbooks;
pub mod search;
pub mod semantic;
pub mod signature;
pub mod startup;
pub mod telemetry;
pub mod ticket;
pub mod wiring;
