//! The `referral-broker` binary: glue only. Parses the command line, sets up logging and
//! hands over to [`referral_broker::cli`], which maps errors to exit codes.
#![forbid(unsafe_code)]

use clap::Parser;

/// mimalloc rather than glibc's malloc: the daemon allocates and frees small blocks from
/// several threads (tokio workers, the store writer, sled, lapin) for every message, and
/// glibc's allocator took 15–20 % of its CPU per referral (issue 7, `ops/bench`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = referral_broker::cli::Cli::parse();
    referral_broker::cli::init_logging(cli.verbose);
    referral_broker::cli::run(cli)
}
