//! `referral-broker inbox`: read this participant's inbox — verify each message, print it for
//! an analyst (or as JSON lines), answer each referral with an `accepted` receipt, and
//! acknowledge only after printing.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::json;

use super::submit::{ConfigArg, with_participant};
use crate::participant::{InboxEvent, InboxMode, Participant, render};
use crate::wire::{Kind, Outcome};

pub const ABOUT: &str = "\
Read your inbox: verify, print, acknowledge.

For every message in inbox.<your id>:
  1. verify it: the ORIGIN's ed25519 signature over the exact bytes received (key from
     your registry by x-key-id; the envelope's origin must own that key), and the broker's
     signed attestation (who it was routed to, why, duplicates, known hashes, audit entry);
  2. print it: origin, kind, each item with URL, hosting country and classification,
     why it was routed to you, duplicates and known hashes (or one JSON object per line
     with --json);
  3. for a referral, send a signed `receipt` (accepted) to its origin (not with
     --no-receipt);
  4. record its envelope id in data_dir and only then acknowledge it.

A second copy of an envelope already handed over (the network delivers at least once) is
acknowledged and dropped, with a note on stderr (an event line with --json). A message
that fails verification is NOT shown as genuine: it is reported as REFUSED, a copy is kept
in <data_dir>/refused/, and it is parked (dead-lettered to the operator's `parked` queue).

Without --follow, stops when the inbox is empty; with --follow, waits for new messages
until interrupted (Ctrl-C or SIGTERM: the message in hand is finished first).

Examples:
  referral-broker inbox -c participant.toml
  referral-broker inbox --follow -c participant.toml
  referral-broker inbox --json -c participant.toml | jq 'select(.kind == \"referral\")'

With --json each line is one of:
  {\"event\":\"message\", \"kind\", \"id\", \"origin\", \"redelivered\", \"verified\":{…},
   \"envelope\": <the envelope>, \"signed_bytes_base64\": <the exact bytes the origin signed>,
   \"attestation\": <the broker's attestation, or null for the broker's own messages>}
  {\"event\":\"receipt_sent\", \"referral\", \"receipt\"}
  {\"event\":\"duplicate\", \"id\", \"kind\", \"redelivered\", \"first_handed_over_at\"}
  {\"event\":\"refused\", \"problem\", \"detail\", \"message_id\", \"kept_at\"}

Exit status: 0 done (also when messages were refused: they are reported); 78 bad
configuration; 1 anything else (nothing unprinted is acknowledged).";

#[derive(Debug, clap::Args)]
pub struct InboxArgs {
    /// Keep waiting for new messages (until Ctrl-C / SIGTERM).
    #[arg(long)]
    pub follow: bool,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Do not send an `accepted` receipt for each referral.
    #[arg(long)]
    pub no_receipt: bool,
    #[command(flatten)]
    pub config: ConfigArg,
}

/// What one run did, printed at the end on stderr.
#[derive(Debug, Default)]
struct Counts {
    handed_over: u64,
    receipts: u64,
    duplicates: u64,
    refused: u64,
}

pub fn run(args: InboxArgs) -> anyhow::Result<ExitCode> {
    with_participant(&args.config.config, async |me| {
        let mode = if args.follow {
            InboxMode::Follow
        } else {
            InboxMode::Drain
        };
        let mut inbox = me.inbox(mode).await?;
        let mut counts = Counts::default();
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            let event = tokio::select! {
                biased;
                _ = &mut shutdown => {
                    eprintln!("interrupted: stopping (nothing unprinted was acknowledged)");
                    break;
                }
                event = inbox.next() => event,
            };
            let Some(event) = event else { break };
            handle(me, &args, event?, &mut counts).await?;
        }
        let queue = inbox.queue().to_owned();
        let refused_dir = inbox.data_dir().root().join("refused");
        inbox.close().await;
        eprintln!(
            "{}: {} handed over, {} receipt(s) sent, {} duplicate(s) dropped, {} refused{}",
            queue,
            counts.handed_over,
            counts.receipts,
            counts.duplicates,
            counts.refused,
            if counts.refused > 0 {
                format!(" (copies in {})", refused_dir.display())
            } else {
                String::new()
            }
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn emit(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

async fn handle(
    me: &Participant,
    args: &InboxArgs,
    event: InboxEvent,
    counts: &mut Counts,
) -> anyhow::Result<()> {
    match event {
        InboxEvent::Message(pending) => {
            let message = pending.message();
            if args.json {
                emit(&format!("{}\n", render::json(message)))?;
            } else {
                emit(&render::text(message, me.registry()))?;
            }
            if message.envelope.kind == Kind::Referral && !args.no_receipt {
                let referral = message.envelope.id.clone();
                let receipt = me
                    .send_receipt(&referral, Outcome::Accepted, None)
                    .await
                    .with_context(|| format!("sending the receipt for {referral}"))?;
                counts.receipts += 1;
                if args.json {
                    emit(&format!(
                        "{}\n",
                        json!({"event": "receipt_sent", "referral": referral, "receipt": receipt, "outcome": "accepted"})
                    ))?;
                } else {
                    emit(&format!(
                        "→ receipt sent to {}: accepted ({receipt})\n\n",
                        message.envelope.origin
                    ))?;
                }
            }
            pending.handed_over().await?;
            counts.handed_over += 1;
        }
        InboxEvent::Duplicate {
            envelope_id,
            kind,
            redelivered,
            first,
        } => {
            counts.duplicates += 1;
            if args.json {
                emit(&format!(
                    "{}\n",
                    json!({"event": "duplicate", "id": envelope_id, "kind": kind,
                           "redelivered": redelivered,
                           "first_handed_over_at": crate::wire::time::format(&first.at)})
                ))?;
            } else {
                eprintln!(
                    "note: dropped a second copy of {kind} {envelope_id} (handed over at {}){}",
                    crate::wire::time::format(&first.at),
                    if redelivered { ", redelivered" } else { "" }
                );
            }
        }
        InboxEvent::Refused(refused) => {
            counts.refused += 1;
            let kept = refused.kept_at.as_ref().map(|p| p.display().to_string());
            if args.json {
                emit(&format!(
                    "{}\n",
                    json!({"event": "refused", "problem": refused.refusal.problem.as_str(),
                           "detail": refused.refusal.detail,
                           "message_id": refused.message_id,
                           "envelope_id": refused.refusal.envelope_id,
                           "redelivered": refused.redelivered,
                           "kept_at": kept})
                ))?;
            } else {
                emit(&format!(
                    "━━ REFUSED: NOT GENUINE (message_id {}) ━━\nProblem:   {} — {}\nAction:    not handed over; parked for the network operator{}\n\n",
                    render::clean_line(refused.message_id.as_deref().unwrap_or("none")),
                    refused.refusal.problem,
                    render::clean_line(&refused.refusal.detail),
                    kept.map(|k| format!("; copy kept in {k}"))
                        .unwrap_or_default()
                ))?;
            }
        }
    }
    Ok(())
}
