//! The subcommands of `referral-broker`, one file each. Each file owns its clap arguments
//! and a `run` function; errors become `anyhow` here, at the edge, and exit codes in [`run`].

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `println!` for the commands' output, except that a closed stdout (the output piped into
/// `head`, say) ends the program quietly instead of panicking as `println!` does.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::cli::stdout_failed(&e);
        }
    }};
}

/// `print!` likewise (see [`outln!`]).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout().lock(), $($arg)*) {
            $crate::cli::stdout_failed(&e);
        }
    }};
}

/// Writing to stdout failed: a reader that went away (EPIPE) ends the program with the
/// status a shell gives a SIGPIPE'd command (141) and no message; anything else is said on
/// stderr, with exit status 74 (EX_IOERR).
pub(crate) fn stdout_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
    eprintln!("error: writing to standard output: {e}");
    std::process::exit(74);
}

pub mod audit;
pub mod audit_store;
pub mod bench;
pub mod bench_relay;
pub mod inbox;
pub mod keys;
pub mod pki;
pub mod provision;
pub mod serve;
pub mod status;
pub mod status_update;
pub mod submit;

/// Routes signed cross-border referrals between hotlines and law enforcement.
///
/// Participants connect to RabbitMQ with mutual TLS (the certificate is the identity), every
/// message is signed with ed25519, and every handoff is logged.
#[derive(Debug, Parser)]
#[command(name = "referral-broker", version, propagate_version = true)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides it.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Signing keys: generate a participant's ed25519 key pair.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// The chain of custody: verify the log, prove an envelope's entries, check a bundle.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Development PKI: a CA, a server certificate, participant certificates.
    #[command(subcommand)]
    Pki(pki::PkiCommand),
    /// Create RabbitMQ users and permissions for every participant of a registry.
    Provision(provision::ProvisionArgs),
    /// Run the routing daemon (consume ingress, check, route, deliver, audit).
    Serve(serve::ServeArgs),
    /// Sign and send a referral (or retraction, receipt, status) as a participant.
    #[command(long_about = submit::ABOUT)]
    Submit(submit::SubmitArgs),
    /// Read your inbox: verify each message, print it, send receipts, acknowledge.
    #[command(long_about = inbox::ABOUT)]
    Inbox(inbox::InboxArgs),
    /// Report what happened to one item of a referral you received.
    #[command(long_about = status_update::ABOUT)]
    StatusUpdate(status_update::StatusUpdateArgs),
    /// Measure the store: dedup lookups+inserts, audit appends (group commit), log verification.
    Bench(bench::BenchArgs),
    /// Measure the broker end to end against a minimal relay on one RabbitMQ node (ops/bench).
    BenchE2e(bench_relay::BenchE2eArgs),
    /// The baseline relay of bench-e2e (internal).
    #[command(hide = true)]
    BenchRelay(bench_relay::BenchRelayArgs),
    /// Operators: a running broker's status (readiness, inboxes, takedown times, checkpoint).
    Status(status::StatusArgs),
}

/// Exit code for bad usage or configuration (as sysexits' EX_USAGE / EX_CONFIG do).
pub const EXIT_CONFIG: u8 = 78;

/// Logging to stderr; `RUST_LOG` wins over `-v`.
pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Runs one subcommand and turns its outcome into an exit code.
pub fn run(cli: Cli) -> ExitCode {
    let outcome = match cli.command {
        Command::Keys(cmd) => keys::run(cmd),
        Command::Audit(cmd) => audit::run(cmd),
        Command::Pki(cmd) => pki::run(cmd),
        Command::Provision(args) => provision::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Submit(args) => submit::run(args),
        Command::Inbox(args) => inbox::run(args),
        Command::StatusUpdate(args) => status_update::run(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchE2e(args) => bench_relay::run(args),
        Command::BenchRelay(args) => bench_relay::run_relay(args),
        Command::Status(args) => status::run(args),
    };
    match outcome {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
