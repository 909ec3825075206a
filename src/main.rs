//! The `runlink` binary: a thin shell over the library. `serve` runs the server; the other
//! subcommands are tools for runbook authors and evaluations.

mod cli;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use runlink::startup::Application;

/// A webhook's path allocates several buffers over a kilobyte (the body, the ticket's JSON,
/// the rendered comment), past glibc's per-thread caches; mimalloc spends about a third of
/// glibc's instructions on them (callgrind figures in bench/HISTORY.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` and `mi_option_purge_delay` in mimalloc.h's `mi_option_e`
/// (the bindings name neither).
#[cfg(target_os = "linux")]
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
#[cfg(target_os = "linux")]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc's defaults commit whole arenas up front and keep freed pages for a second, which
/// doubled a storm's peak RSS (bench/HISTORY.md). Committing on demand and purging at once
/// keep it near glibc's. The first arena is made before `main` runs, so this runs earlier still: as a
/// constructor placed ahead of the default ones (mimalloc's own among them).
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array.00099")]
static TUNE_ALLOCATOR: extern "C" fn() = {
    extern "C" fn tune_allocator() {
        // SAFETY: sets two of mimalloc's process-wide options; nothing runs beside it yet.
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        }
    }
    tune_allocator
};

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    runlink::telemetry::init();
    let result = match args.command {
        cli::Command::Serve { config } => serve(config.as_deref()),
        command => cli::run(command),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("runlink: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let config = cli::load_config(config)?;
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(config)
            .await
            .context("cannot start the server")?;
        app.run_until_stopped().await.context("server failed")?;
        Ok(ExitCode::SUCCESS)
    })
}
