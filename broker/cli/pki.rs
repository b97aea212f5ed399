//! `referral-broker pki …`: the development PKI on the command line (a thin shell over
//! [`crate::pki`]). Never overwrites a file; private keys are written 0600.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::ids::ParticipantId;
use crate::pki::{self, DevCa, Validity};

/// Development PKI for tests, demos and a local RabbitMQ node.
///
/// `init` makes a certificate authority and the RabbitMQ server certificate; `issue` makes a
/// participant's client certificate, whose common name is the participant id (RabbitMQ logs
/// the participant in under that name). For a real network use your own CA instead: see
/// certs/README.md for the files and extensions it must produce.
#[derive(Debug, clap::Subcommand)]
pub enum PkiCommand {
    /// Create a development CA and a server certificate for RabbitMQ on this machine.
    ///
    /// Writes into DIR (created 0700 if missing):
    ///   ca.pem       CA certificate: give it to RabbitMQ (ssl_options.cacertfile) and to
    ///                every participant as the only trusted root
    ///   ca.key       CA private key (0600): needed only by `pki issue`
    ///   server.pem   server certificate: CN localhost, SAN DNS:localhost + IP:127.0.0.1,
    ///                EKU serverAuth (ssl_options.certfile)
    ///   server.key   its private key (0600) (ssl_options.keyfile)
    ///
    /// Refuses, writing nothing, if any of these files exists.
    ///
    /// Example: referral-broker pki init --out .run/pki
    #[command(verbatim_doc_comment)]
    Init {
        /// Directory to write into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Common name of the CA.
        #[arg(long, value_name = "NAME", default_value = pki::DEFAULT_CA_NAME)]
        name: String,
    },
    /// Issue a participant's client certificate from a CA made by `pki init`.
    ///
    /// Writes into DIR (created 0700 if missing):
    ///   <ID>.pem   the certificate alone (no chain): CN = ID, EKU clientAuth
    ///   <ID>.key   its private key, PKCS#8 PEM (0600)
    ///
    /// The participant connects with these two files and trusts ca.pem. RabbitMQ takes the
    /// user name from the CN, so ID must also exist as a RabbitMQ user (`provision`).
    /// Refuses if either file exists.
    ///
    /// Example: referral-broker pki issue --ca .run/pki --participant fr.pointdecontact --out .run/pki
    #[command(verbatim_doc_comment)]
    Issue {
        /// Directory holding ca.pem and ca.key.
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// Participant id, e.g. fr.pointdecontact (lowercase dotted name).
        #[arg(long, value_name = "ID")]
        participant: ParticipantId,
        /// Directory to write into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Days of validity, starting one hour ago.
        #[arg(long, value_name = "N", default_value_t = pki::DEFAULT_PARTICIPANT_DAYS,
              value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
    },
}

pub fn run(cmd: PkiCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PkiCommand::Init { out, name } => {
            let files = pki::init(&out, &name)
                .with_context(|| format!("creating the development PKI in {}", out.display()))?;
            outln!("CA certificate      {}", files.ca_cert.display());
            outln!("CA key (secret)     {}", files.ca_key.display());
            outln!("server certificate  {}", files.server_cert.display());
            outln!("server key (secret) {}", files.server_key.display());
        }
        PkiCommand::Issue {
            ca,
            participant,
            out,
            days,
        } => {
            let dev_ca = DevCa::load(&ca)
                .with_context(|| format!("loading the CA from {}", ca.display()))?;
            let issued = dev_ca
                .issue_participant(&participant, Validity::days_from_now(days))
                .with_context(|| format!("issuing a certificate for {participant}"))?;
            let (cert, key) = issued
                .write(&out, participant.as_str())
                .with_context(|| format!("writing the certificate of {participant}"))?;
            outln!("certificate  {}", cert.display());
            outln!("key (secret) {}", key.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
