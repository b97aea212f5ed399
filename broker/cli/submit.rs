//! `referral-broker submit`: sign and send one message (by default a referral) as this
//! participant, and print its envelope id once RabbitMQ confirmed it.
//!
//! Also holds what the three participant commands (`submit`, `inbox`, `status-update`) share:
//! the `--config` argument, the runtime, and the exit code of a configuration error (78).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use crate::participant::{ConfigError, Participant, ParticipantConfig, ParticipantError};
use crate::wire::{Body, Receipt, Referral, Retraction, Status};

pub const ABOUT: &str = "\
Sign and send a referral (or a retraction, receipt or status) as this participant.

FILE holds the BODY of the message, not a whole envelope: the client wraps it in an
envelope from you (a fresh UUIDv7 id, created now), signs the exact bytes with your
signing key, publishes them to the `ingress` exchange and waits until RabbitMQ confirms.
It then prints the envelope id (and only that) on stdout, so a script can keep it:

    id=$(referral-broker submit referral.json --config participant.toml)

With --envelope, FILE is a complete envelope that you built yourself: it is checked
against the contract (schemas/), must name you as origin and carry an id never used
before, and its bytes are signed and sent exactly as they are in the file.

A referral body (see schemas/README.md for every field):

    {\"reference\": \"FR-2026-004211\",
     \"public_report_received_at\": \"2026-11-25T08:12:03Z\",
     \"priority\": \"normal\",
     \"items\": [{
        \"url\": \"https://images.example/gallery/a7f3c9.jpg\",
        \"site_type\": \"image_host\", \"third_party_hosted\": false, \"media_type\": \"image\",
        \"hashes\": [{\"algorithm\": \"sha256\", \"value\": \"1c5f…d277\"}],
        \"classification\": {\"legal_status\": \"baseline\", \"assessing_jurisdiction\": \"FR\",
           \"category\": \"csam\", \"victim_age_group\": \"prepubescent\", \"victim_gender\": \"female\"},
        \"hosting\": {\"ip\": \"192.0.2.10\", \"country\": \"NL\"},
        \"assessed_at\": \"2026-11-25T09:40:12Z\"}]}

The broker routes each item to the hotline of its hosting country (or to `to` if given),
copies urgent referrals to law enforcement, and answers problems with a notice in your
inbox (`referral-broker inbox`).

Examples:
    referral-broker submit referral.json -c participant.toml
    referral-broker submit --kind retraction retract.json -c participant.toml
    referral-broker submit --envelope envelope.json -c participant.toml
    cat referral.json | referral-broker submit - -c participant.toml

Exit status: 0 sent and confirmed; 78 bad configuration (participant.toml, registry,
keys, certificates); 1 anything else (invalid body, broker unreachable, refused).";

/// The configuration file of a participant command.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// The participant's configuration: id, broker, certificate, signing key, registry, data
    /// directory (example: ops/examples/python/participant.toml).
    #[arg(
        long,
        short = 'c',
        value_name = "FILE",
        env = "REFBROKER_PARTICIPANT_CONFIG",
        default_value = "participant.toml"
    )]
    pub config: PathBuf,
}

/// What FILE holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SubmitKind {
    Referral,
    Retraction,
    Receipt,
    Status,
}

#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// The message body as JSON (`-` reads stdin); with --envelope, a whole envelope.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The kind of body in FILE.
    #[arg(
        long,
        value_enum,
        default_value = "referral",
        conflicts_with = "envelope"
    )]
    pub kind: SubmitKind,
    /// FILE is a complete envelope (from you); its bytes are signed and sent unchanged.
    #[arg(long)]
    pub envelope: bool,
    #[command(flatten)]
    pub config: ConfigArg,
}

pub fn run(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    // Read and check the file before connecting: a bad body costs no connection.
    let bytes = read_input(&args.file)?;
    let body = if args.envelope {
        None
    } else {
        Some(
            parse_body(args.kind, &bytes)
                .with_context(|| format!("{} is not a valid body", args.file.display()))?,
        )
    };
    with_participant(&args.config.config, async |me| {
        let id = match body {
            Some(body) => me.submit(body).await?,
            None => me.submit_bytes(&bytes).await?,
        };
        outln!("{id}");
        Ok(ExitCode::SUCCESS)
    })
}

fn read_input(path: &Path) -> anyhow::Result<Vec<u8>> {
    let limit = crate::wire::limits::MAX_BODY_BYTES as u64 + 1;
    let mut bytes = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .take(limit)
            .read_to_end(&mut bytes)
            .context("reading stdin")?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(limit).read_to_end(&mut bytes))
            .with_context(|| format!("reading {}", path.display()))?;
    }
    Ok(bytes)
}

/// Parses a body of `kind` (unknown fields refused; the contract's bounds are checked when the
/// envelope is validated before sending).
pub fn parse_body(kind: SubmitKind, bytes: &[u8]) -> anyhow::Result<Body> {
    Ok(match kind {
        SubmitKind::Referral => Body::Referral(serde_json::from_slice::<Referral>(bytes)?),
        SubmitKind::Retraction => Body::Retraction(serde_json::from_slice::<Retraction>(bytes)?),
        SubmitKind::Receipt => Body::Receipt(serde_json::from_slice::<Receipt>(bytes)?),
        SubmitKind::Status => Body::Status(serde_json::from_slice::<Status>(bytes)?),
    })
}

/// Loads `config`, connects, runs `work`, closes. A configuration problem — here or inside
/// `work` — is printed and becomes exit code 78.
pub fn with_participant(
    config: &Path,
    work: impl AsyncFnOnce(&Participant) -> anyhow::Result<ExitCode>,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = runtime.block_on(async {
        let config = ParticipantConfig::load(config)?;
        let me = Participant::connect(config).await?;
        let outcome = work(&me).await;
        me.close().await;
        outcome
    });
    match outcome {
        Err(e) if is_config_error(&e) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(super::EXIT_CONFIG))
        }
        other => other,
    }
}

fn is_config_error(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ConfigError>().is_some()
        || e.downcast_ref::<ParticipantError>()
            .is_some_and(ParticipantError::is_config)
}
