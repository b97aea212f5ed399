//! `referral-broker provision …`: RabbitMQ users and permissions from the registry, in one
//! command (a thin shell over [`crate::provision`]). Prints every change it made.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::provision::{self, Desired, Rabbitmqctl};
use crate::registry::Registry;

/// Create RabbitMQ users and permissions for every participant of a registry.
///
/// For each participant: a user named after its id, without password (it logs in with its
/// certificate), allowed to publish to the `ingress` exchange and to read its own inbox,
/// nothing else. The broker's entry may use only the broker's own exchanges and queues.
/// A participant no longer in the registry loses its access to the vhost (permissions
/// cleared, connections closed; the user is deleted when it has no other vhost). Users that
/// are not participant ids (guest, admin…) are never touched. Safe to run again: it changes
/// only what differs.
///
/// Example: referral-broker provision --registry registry.toml --vhost referrals
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct ProvisionArgs {
    /// The participant registry (TOML).
    #[arg(long, value_name = "FILE")]
    registry: PathBuf,
    /// The vhost to provision (created if missing).
    #[arg(long, value_name = "VHOST")]
    vhost: String,
    /// rabbitmqctl, or a wrapper that points it at the right node.
    #[arg(
        long,
        value_name = "PATH",
        env = "REFBROKER_RABBITMQCTL",
        default_value = "rabbitmqctl"
    )]
    rabbitmqctl: PathBuf,
}

pub fn run(args: ProvisionArgs) -> anyhow::Result<ExitCode> {
    if args.vhost.is_empty() {
        anyhow::bail!("--vhost must not be empty");
    }
    let registry = Registry::load(&args.registry)
        .with_context(|| format!("loading the registry {}", args.registry.display()))?;
    let desired = Desired::from_registry(&registry, &args.vhost);
    let ctl = Rabbitmqctl::new(&args.rabbitmqctl);
    let actions = provision::apply(&ctl, &desired)
        .with_context(|| format!("provisioning vhost {:?}", args.vhost))?;
    if actions.is_empty() {
        outln!(
            "vhost {:?}: nothing to change ({} participants up to date)",
            args.vhost,
            desired.users.len()
        );
    } else {
        for action in &actions {
            outln!("{action}");
        }
        outln!(
            "vhost {:?}: {} change(s), {} participants provisioned",
            args.vhost,
            actions.len(),
            desired.users.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
