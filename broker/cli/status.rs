//! `referral-broker status`: the operators' status of a running broker, read from its admin
//! server's `/api/status`, as a terminal table (or JSON), with an exit code a monitoring
//! system can use.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};

use crate::admin::client::{self, ClientTls};
use crate::admin::status::{Attention, Counts, StatusReport, human_duration};
use crate::admin::{ADDRESS_FILE, DEFAULT_INBOX_AGE_SECS};

const ABOUT: &str = "\
Show the status of a running broker: readiness, RabbitMQ connection, every participant's
inbox (depth, readers, oldest unread message) and its delivered / sent / rejected /
duplicate counts over the last hour and day, notice-and-takedown times per destination
country, the audit log and its last checkpoint, recent rejections.

It reads /api/status from the broker's admin server: give its URL with --admin, or the
broker's data directory with --data (serve writes the URL to <data_dir>/admin.url).
For an admin server with TLS, --ca names its CA; with mutual TLS, --cert and --key are
your operator certificate.

Examples:
  referral-broker status --data /var/lib/referral-broker
  referral-broker status --admin http://127.0.0.1:9187/ --max-inbox-age 900
  referral-broker status --admin https://broker.example:9187/ --ca ops-ca.pem \\
      --cert me.pem --key me.key --json | jq .participants

Exit status (usable as a monitoring check):
  0  all is well
  1  something needs attention: not ready, an inbox whose oldest unread message is older
     than --max-inbox-age, no checkpoint for too long, messages parked
  2  bad usage
  3  the status could not be read (broker down, wrong address, TLS refused)";

#[derive(Debug, clap::Args)]
#[command(long_about = ABOUT)]
#[command(group(clap::ArgGroup::new("where").required(true).args(["admin", "data"])))]
pub struct StatusArgs {
    /// The admin server's URL, e.g. http://127.0.0.1:9187/
    #[arg(long, value_name = "URL", env = "REFBROKER_ADMIN")]
    pub admin: Option<String>,
    /// The broker's data directory (its admin.url file names the URL).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Print the status as JSON (with an `attention` list) instead of tables.
    #[arg(long)]
    pub json: bool,
    /// An inbox whose oldest unread message is older than this needs attention (seconds).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_INBOX_AGE_SECS)]
    pub max_inbox_age: u64,
    /// CA of the admin server's certificate (https).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Your client certificate, for an admin server with mutual TLS.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The key of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub timeout: u64,
}

/// Exit code when the status could not be read.
pub const EXIT_UNAVAILABLE: u8 = 3;

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let base = match (&args.admin, &args.data) {
        (Some(url), _) => url.clone(),
        (None, Some(dir)) => {
            let file = dir.join(ADDRESS_FILE);
            match std::fs::read_to_string(&file) {
                Ok(text) => text.trim().to_owned(),
                Err(e) => {
                    eprintln!(
                        "error: {}: {e} (is the broker running with this data directory, and its admin server enabled?)",
                        file.display()
                    );
                    return Ok(ExitCode::from(EXIT_UNAVAILABLE));
                }
            }
        }
        (None, None) => {
            // clap's argument group requires one of them.
            eprintln!("error: give --admin URL or --data DIR");
            return Ok(ExitCode::from(2));
        }
    };
    let url = format!("{}/api/status", base.trim_end_matches('/'));
    let tls = args.ca.as_ref().map(|ca| ClientTls {
        ca: ca.clone(),
        identity: args.cert.clone().zip(args.key.clone()),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let fetched = runtime.block_on(client::get(
        &url,
        tls.as_ref(),
        Duration::from_secs(args.timeout.max(1)),
    ));
    let response = match fetched {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: reading {url}: {e}");
            return Ok(ExitCode::from(EXIT_UNAVAILABLE));
        }
    };
    if response.status != 200 {
        eprintln!(
            "error: {url} answered {}: {}",
            response.status,
            response.text().trim()
        );
        return Ok(ExitCode::from(EXIT_UNAVAILABLE));
    }
    let report: StatusReport = match serde_json::from_slice(&response.body) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {url} did not return a broker status: {e}");
            return Ok(ExitCode::from(EXIT_UNAVAILABLE));
        }
    };
    let attention = report.attention(args.max_inbox_age);
    if args.json {
        let mut v = serde_json::to_value(&report).context("encoding the status")?;
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "attention".into(),
                serde_json::to_value(&attention).context("encoding the status")?,
            );
        }
        outln!(
            "{}",
            serde_json::to_string_pretty(&v).context("encoding the status")?
        );
    } else {
        out!("{}", render(&report, &attention, args.max_inbox_age));
    }
    Ok(if attention.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Left-aligned columns, numbers right-aligned; two spaces between columns.
fn table(out: &mut String, head: &[&str], rows: &[Vec<String>], numeric: &[bool]) {
    let mut width: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |out: &mut String, cells: &[String]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = width[i].saturating_sub(c.chars().count());
            if i > 0 {
                l.push_str("  ");
            }
            if numeric.get(i).copied().unwrap_or(false) {
                l.push_str(&" ".repeat(pad));
                l.push_str(c);
            } else {
                l.push_str(c);
                l.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(
        out,
        &head.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>(),
    );
    for r in rows {
        line(out, r);
    }
}

fn pair(h: u64, d: u64) -> String {
    format!("{h}/{d}")
}

fn counts(hour: &Counts, day: &Counts) -> [String; 4] {
    [
        pair(hour.delivered, day.delivered),
        pair(hour.received, day.received),
        pair(hour.rejected, day.rejected),
        pair(hour.duplicates, day.duplicates),
    ]
}

/// The tables.
pub fn render(r: &StatusReport, attention: &[Attention], max_inbox_age: u64) -> String {
    let mut o = String::new();
    let ready = if r.readiness.ready {
        "READY".to_owned()
    } else {
        format!("NOT READY: {}", r.readiness.reasons.join("; "))
    };
    let _ = writeln!(o, "broker {} — {ready}", r.broker);
    let _ = writeln!(
        o,
        "version {} · up since {} · status of {}",
        r.version,
        time(&r.started_at),
        time(&r.generated_at)
    );
    let c = &r.connection;
    let _ = writeln!(
        o,
        "RabbitMQ: {}{} · {} reconnection(s) · {} in process, {} held",
        c.state,
        if c.blocked { " (BLOCKED: alarm)" } else { "" },
        c.reconnections,
        r.in_flight,
        r.held
    );
    let checkpoint = match (&r.checkpoint, r.checkpoint_age_secs) {
        (Some(cp), Some(age)) => format!(
            "last checkpoint {} ago (size {}, root {}…, {})",
            human_duration(age),
            cp.size,
            &cp.root[..cp.root.len().min(16)],
            time(&cp.time)
        ),
        (Some(cp), None) => format!("last checkpoint at {} (size {})", time(&cp.time), cp.size),
        (None, Some(age)) => format!(
            "no checkpoint yet (first entry {} ago)",
            human_duration(age)
        ),
        (None, None) => "no checkpoint yet".to_owned(),
    };
    let _ = writeln!(
        o,
        "audit log: {} entries, {} bytes · {checkpoint}",
        r.audit_log.entries, r.audit_log.bytes
    );
    if !r.history.complete {
        let _ = writeln!(
            o,
            "(still reading the log found at start: hour/day counts incomplete)"
        );
    }

    o.push_str("\nPARTICIPANTS (counts: last hour/last 24 h)\n");
    let rows: Vec<Vec<String>> = r
        .participants
        .iter()
        .map(|p| {
            let (depth, readers, oldest) = match &p.inbox {
                None => ("?".into(), "?".into(), "not polled".into()),
                Some(i) => (
                    i.depth.to_string(),
                    i.consumers.to_string(),
                    match &i.oldest {
                        None => "-".to_owned(),
                        Some(x) => format!(
                            "{}{} {}{}",
                            if x.at_least { ">=" } else { "" },
                            human_duration(x.age_secs),
                            x.kind,
                            if x.age_secs > max_inbox_age { " !" } else { "" }
                        ),
                    },
                ),
            };
            let mut row = vec![p.id.clone(), p.role.clone(), depth, readers, oldest];
            row.extend(counts(&p.last_hour, &p.last_day));
            row
        })
        .collect();
    table(
        &mut o,
        &[
            "PARTICIPANT",
            "ROLE",
            "INBOX",
            "READERS",
            "OLDEST UNREAD",
            "DELIVERED",
            "SENT",
            "REJECTED",
            "DUPLICATES",
        ],
        &rows,
        &[false, false, true, true, false, true, true, true, true],
    );

    let _ = writeln!(
        o,
        "\nNOTICE AND TAKEDOWN (public report to removal, removals of the last {} days)",
        r.takedown.window_days
    );
    if r.takedown.countries.is_empty() {
        o.push_str("no removal reported yet\n");
    } else {
        let rows: Vec<Vec<String>> = r
            .takedown
            .countries
            .iter()
            .chain(r.takedown.all.iter())
            .map(|f| {
                vec![
                    f.country.clone(),
                    f.removed.to_string(),
                    human_duration(f.median_secs),
                    human_duration(f.p90_secs),
                    format!("{:.0} %", f.within_3_days * 100.0),
                ]
            })
            .collect();
        table(
            &mut o,
            &["COUNTRY", "REMOVED", "MEDIAN", "P90", "WITHIN 3 DAYS"],
            &rows,
            &[false, true, true, true, true],
        );
    }
    if r.takedown.unknown > 0 {
        let _ = writeln!(
            o,
            "{} removal(s) without times (bodies purged)",
            r.takedown.unknown
        );
    }

    if !r.queues.is_empty() {
        o.push_str("\nBROKER QUEUES\n");
        let rows: Vec<Vec<String>> = r
            .queues
            .iter()
            .map(|q| vec![q.name.clone(), q.depth.to_string(), q.consumers.to_string()])
            .collect();
        table(
            &mut o,
            &["QUEUE", "MESSAGES", "CONSUMERS"],
            &rows,
            &[false, true, true],
        );
    }

    o.push_str("\nRECENT REJECTIONS\n");
    if r.recent_rejections.is_empty() {
        o.push_str("none\n");
    } else {
        let rows: Vec<Vec<String>> = r
            .recent_rejections
            .iter()
            .take(10)
            .map(|x| {
                vec![
                    time(&x.time),
                    x.code.clone(),
                    x.participant.clone().unwrap_or_else(|| "-".into()),
                    x.envelope.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        table(
            &mut o,
            &["TIME", "REASON", "SENDER", "ENVELOPE"],
            &rows,
            &[false, false, false, false],
        );
    }

    if attention.is_empty() {
        o.push_str("\nOK: nothing needs attention\n");
    } else {
        o.push_str("\nNEEDS ATTENTION\n");
        for a in attention {
            let _ = writeln!(o, "- {}: {}", a.what, a.detail);
        }
    }
    o
}
