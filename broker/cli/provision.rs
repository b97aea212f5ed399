//! `referral-broker provision …` (not yet written).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ProvisionArgs {}

pub fn run(_args: ProvisionArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet written")
}
