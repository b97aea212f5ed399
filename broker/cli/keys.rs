//! `referral-broker keys …` (not yet written).

use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {}

pub fn run(cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    match cmd {}
}
