//! The `runlink` binary: a thin shell over the library. `serve` runs the server; the other
//! subcommands are tools for runbook authors and evaluations.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    runlink::telemetry::init();
    match cli::run(args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("runlink: {error:#}");
            ExitCode::FAILURE
        }
    }
}
