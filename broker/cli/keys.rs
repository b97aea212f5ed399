//! `referral-broker keys …`: a participant's ed25519 signing keys.
//!
//! `keys generate` writes the key pair in the format of [`crate::signing`] (private key
//! mode 0600, never overwriting an existing file) and prints what the operator pastes into
//! the registry. The private key is never printed.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, SubsecRound as _, Utc};

use crate::ids::ParticipantId;
use crate::signing::Signer;

const GENERATE_ABOUT: &str = "\
Generate a participant's ed25519 signing key pair.

Writes DIR/<ID>.key (the private key: standard base64 of the 32-byte seed, mode 0600)
and DIR/<ID>.pub (standard base64 of the 32-byte public key), refusing to overwrite
either. Prints the public key, its key id and a [[participant.key]] entry to paste into
the registry under the participant's [[participant]] entry.

Keep the .key file on the participant's side only; the operator needs only the .pub
file or the printed entry.";

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Generate a participant's ed25519 signing key pair.
    #[command(long_about = GENERATE_ABOUT)]
    Generate {
        /// Participant id the key is for (lowercase dotted name, e.g. fr.pointdecontact).
        #[arg(long, value_name = "ID")]
        participant: ParticipantId,
        /// Directory to write the key files into (created, mode 0700, if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Start of the key's validity, RFC 3339 (default: now).
        #[arg(long, value_name = "TIME")]
        not_before: Option<DateTime<Utc>>,
        /// End of the key's validity, RFC 3339 (default: none).
        #[arg(long, value_name = "TIME")]
        not_after: Option<DateTime<Utc>>,
    },
}

pub fn run(cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::Generate {
            participant,
            out,
            not_before,
            not_after,
        } => generate(&participant, &out, not_before, not_after),
    }
}

fn generate(
    participant: &ParticipantId,
    out: &std::path::Path,
    not_before: Option<DateTime<Utc>>,
    not_after: Option<DateTime<Utc>>,
) -> anyhow::Result<ExitCode> {
    let not_before = not_before.unwrap_or_else(|| Utc::now().trunc_subsecs(0));
    if let Some(end) = not_after {
        anyhow::ensure!(
            end > not_before,
            "--not-after ({}) must be after --not-before ({})",
            rfc3339(end),
            rfc3339(not_before)
        );
    }
    if !out.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt as _;
            builder.mode(0o700);
        }
        builder
            .create(out)
            .with_context(|| format!("creating {}", out.display()))?;
    }
    let signer = Signer::generate().context("generating a key")?;
    let paths = signer
        .write_key_files(out, participant)
        .context("writing the key files")?;

    outln!(
        "wrote {}  (private key, mode 0600: keep it secret, never send it)",
        paths.private.display()
    );
    outln!("wrote {}  (public key)", paths.public.display());
    outln!("public key: {}", signer.public_key_b64());
    outln!("key id:     {}", signer.key_id());
    outln!();
    outln!("# Add under the [[participant]] entry with id = \"{participant}\":");
    out!(
        "{}",
        registry_snippet(&signer, participant, not_before, not_after)
    );
    Ok(ExitCode::SUCCESS)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// The `[[participant.key]]` entry for this key, as the registry reads it.
fn registry_snippet(
    signer: &Signer,
    participant: &ParticipantId,
    not_before: DateTime<Utc>,
    not_after: Option<DateTime<Utc>>,
) -> String {
    let mut s = format!(
        "[[participant.key]]     # {participant}\n\
         public_key = \"{}\"\n\
         id = \"{}\"\n\
         not_before = \"{}\"\n",
        signer.public_key_b64(),
        signer.key_id(),
        rfc3339(not_before),
    );
    if let Some(end) = not_after {
        s.push_str(&format!("not_after = \"{}\"\n", rfc3339(end)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    #[test]
    fn the_snippet_is_a_valid_registry_key() {
        let broker = Signer::from_seed([9; 32]);
        let participant: ParticipantId = "net.refbroker".parse().unwrap_or_else(|e| panic!("{e}"));
        let nb: DateTime<Utc> = "2026-01-01T00:00:00Z"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let na: DateTime<Utc> = "2027-01-01T00:00:00Z"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let text = format!(
            "broker = \"net.refbroker\"\n[[participant]]\nid = \"net.refbroker\"\n\
             name = \"Broker\"\nrole = \"operator\"\n{}",
            registry_snippet(&broker, &participant, nb, Some(na))
        );
        let reg = Registry::from_toml(&text, "snippet").unwrap_or_else(|e| panic!("{e}\n{text}"));
        let key = &reg.broker().keys[0];
        assert_eq!(&key.key_id, broker.key_id());
        assert_eq!(key.not_before, nb);
        assert_eq!(key.not_after, Some(na));
    }
}
