//! `referral-broker serve --config broker.toml`: the routing daemon. Glue only: load and
//! check the configuration (exit 78 on a bad one, before anything is opened or connected),
//! start a tokio runtime, run [`crate::serve::run`] until SIGTERM or SIGINT, exit 0 after a
//! clean drain.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::serve::{self, ServeConfig};

/// Run the routing daemon.
///
/// Reads broker.toml (registry, signing key, AMQP, store, routing, ingress policy, window,
/// flood control; see the documentation of `referral_broker::serve::config`), declares the
/// topology, consumes the ingress queue and routes until SIGTERM or SIGINT, then finishes
/// the messages it took and exits 0. A bad configuration exits with 78 before anything is
/// opened or connected.
///
/// Example: referral-broker serve --config broker.toml
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct ServeArgs {
    /// The daemon's configuration (TOML).
    #[arg(long, value_name = "FILE", env = "REFBROKER_CONFIG")]
    config: PathBuf,
    /// Check the configuration and exit (0 if it is usable, 78 if not).
    #[arg(long)]
    check: bool,
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = match ServeConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: bad configuration: {e}");
            return Ok(ExitCode::from(super::EXIT_CONFIG));
        }
    };
    if args.check {
        outln!(
            "{}: configuration usable (broker {}, {} participants, vhost {:?})",
            args.config.display(),
            config.registry.broker().id,
            config.registry.participants().count(),
            config.transport.vhost
        );
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let summary = serve::run(config, shutdown_signal()).await?;
        tracing::info!(
            accepted = summary.accepted,
            rejected = summary.rejected,
            "clean shutdown"
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// Resolves at the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the daemon");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
