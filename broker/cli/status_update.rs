//! `referral-broker status-update`: tell a referral's origin what happened to one of its items
//! (a signed `status` envelope), and print the envelope id once RabbitMQ confirmed it.

use std::process::ExitCode;

use chrono::{DateTime, SubsecRound as _, Utc};

use super::submit::{ConfigArg, with_participant};
use crate::ids::EnvelopeId;
use crate::wire::{State, Status};

pub const ABOUT: &str = "\
Report what happened to one item of a referral you received.

Sends a signed `status` envelope; the broker checks that you are a destination of that
referral and relays it to the referral's origin. Prints the new envelope id on stdout.

States:
  received            in your queue
  takedown_requested  a notice was sent to the host
  removed             gone from the URL (closes the URL for deduplication: a re-upload
                      reported later is a new referral)
  not_found           already gone when checked
  disputed            you do not agree with the classification (--reason required)
  forwarded_to_lea    handed to law enforcement (--lea-case-number required)
  unable_to_act       no legal basis, host unresponsive, …

--referral is the envelope id printed by `inbox` (\"━━ REFERRAL <id> ━━\"), --item the index
shown in brackets ([0], [1], …). --at defaults to now.

Examples:
  referral-broker status-update --referral 01a1ee57-4860-768f-ba10-24005ba57694 \\
      --item 0 --status removed -c participant.toml
  referral-broker status-update --referral 01a1ee57-4860-768f-ba10-24005ba57694 \\
      --item 2 --status takedown_requested --at 2026-11-25T14:00:00Z -c participant.toml
  referral-broker status-update --referral 01a1ee57-4860-768f-ba10-24005ba57694 \\
      --item 1 --status forwarded_to_lea --lea-case-number NL-2026-77 -c participant.toml

Exit status: 0 sent and confirmed; 78 bad configuration; 1 anything else.";

#[derive(Debug, clap::Args)]
pub struct StatusUpdateArgs {
    /// Envelope id of the referral.
    #[arg(long, value_name = "ID")]
    pub referral: EnvelopeId,
    /// Index of the item in the referral (0-based, as `inbox` shows it).
    #[arg(long, value_name = "N")]
    pub item: u16,
    /// What happened: received, takedown_requested, removed, not_found, disputed,
    /// forwarded_to_lea, unable_to_act (see --help).
    #[arg(long, value_name = "STATE", value_parser = parse_state)]
    pub status: State,
    /// When it happened, RFC 3339 (default: now).
    #[arg(long, value_name = "TIME")]
    pub at: Option<DateTime<Utc>>,
    /// Why (required with `disputed`).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Law enforcement's case number (required with `forwarded_to_lea`, refused otherwise).
    #[arg(long, value_name = "NUMBER")]
    pub lea_case_number: Option<String>,
    /// A note for the origin's analyst.
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,
    #[command(flatten)]
    pub config: ConfigArg,
}

const STATES: &str = "received, takedown_requested, removed, not_found, disputed, \
                      forwarded_to_lea, unable_to_act";

fn parse_state(s: &str) -> Result<State, String> {
    serde_json::from_value(serde_json::Value::String(s.replace('-', "_")))
        .map_err(|_| format!("{s:?} is not a state; one of {STATES}"))
}

pub fn run(args: StatusUpdateArgs) -> anyhow::Result<ExitCode> {
    let status = Status {
        referral: args.referral,
        item: args.item,
        state: args.status,
        at: args.at.unwrap_or_else(Utc::now).trunc_subsecs(3),
        reason: args.reason,
        lea_case_number: args.lea_case_number,
        note: args.note,
    };
    // Checked before connecting: a missing --reason is a usage error, not a network one.
    if let Err(e) = status.validate("") {
        eprintln!("error: status {e} (see `referral-broker status-update --help`)");
        return Ok(ExitCode::from(super::EXIT_CONFIG));
    }
    with_participant(&args.config.config, async |me| {
        let id = me.send_status(status).await?;
        outln!("{id}");
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_from_their_wire_names() {
        assert_eq!(parse_state("removed"), Ok(State::Removed));
        assert_eq!(parse_state("forwarded-to-lea"), Ok(State::ForwardedToLea));
        assert!(parse_state("gone").is_err());
    }
}
