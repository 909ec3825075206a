//! runlink: links alarm-generated tickets to the runbooks that resolve them.
//!
//! The modules follow the data flow: `ingest` (one file per source) -> `ticket` ->
//! `signature` -> `runbooks` / `search` -> `matcher` -> `render` -> `outbox` -> `deliver`
//! (one file per destination) -> `audit`. `pipeline` carries one parsed ticket to the store;
//! `reply_routing` decides where its comment goes. `http` is the HTTP surface, `wiring`
//! builds the parts from the configuration (for the server and the CLI alike), and
//! `startup` runs the server.

#![warn(unreachable_pub)]

pub mod audit;
pub mod config;
pub mod deliver;
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
mod suggest;
pub mod telemetry;
pub mod ticket;
pub mod wiring;
