//! The `referral-broker` binary: glue only. Parses the command line, sets up logging and
//! hands over to [`referral_broker::cli`], which maps errors to exit codes.
#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = referral_broker::cli::Cli::parse();
    referral_broker::cli::init_logging(cli.verbose);
    referral_broker::cli::run(cli)
}
