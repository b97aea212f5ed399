//! `referral-broker pki …` (not yet written).

use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum PkiCommand {}

pub fn run(cmd: PkiCommand) -> anyhow::Result<ExitCode> {
    match cmd {}
}
