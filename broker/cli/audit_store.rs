//! `referral-broker audit rebuild-index` and `audit purge`: the store's maintenance commands
//! (the `audit` variants that open the store itself; the rest of `audit` is in
//! [`super::audit`]). Both need the broker stopped: sled allows one process per directory.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use chrono::Utc;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::store::{self, Store, StoreConfig};

const REBUILD_ABOUT: &str = "\
Rebuild the index (sled) of a data directory from its audit log alone.

Deletes DIR/index and replays every entry of DIR/log into a new one: processed envelope ids
and their outcomes, URL keys per destination, hash sightings, referrals and their entries,
checkpoints, quarantine records. Afterwards the broker's dedup decisions are the ones it
would have made from the log. Message bodies (DIR/bodies) are not derived from the log and
are left as they are.

Run it with the broker stopped. A torn tail of the log (an unacknowledged write cut short by
a crash) is truncated first, as the broker does on start.";

const PURGE_ABOUT: &str = "\
Drop stored message bodies older than the retention period.

Removes from DIR/bodies every message body stored more than DAYS days ago and appends a
`purge` entry to the audit log saying how many. Entries keep the SHA-256 of the messages
they are about, so the log still verifies, and a body kept elsewhere can still be matched
to its entry.

Run it with the broker stopped.";

#[derive(Debug, clap::Args)]
#[command(long_about = REBUILD_ABOUT)]
pub struct RebuildIndexArgs {
    /// The broker's data directory (holding `log/`).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// sled's cache while rebuilding, MiB.
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    pub cache_mib: u64,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, clap::Args)]
#[command(long_about = PURGE_ABOUT)]
pub struct PurgeArgs {
    /// The broker's data directory.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Retention: drop bodies stored more than this many days ago.
    #[arg(long, value_name = "DAYS")]
    pub older_than: u32,
}

pub fn run_rebuild_index(args: RebuildIndexArgs) -> anyhow::Result<ExitCode> {
    let config = StoreConfig {
        cache_capacity: args.cache_mib << 20,
        ..StoreConfig::default()
    };
    let pb = ProgressBar::new(0);
    if args.quiet {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template(
            "replaying [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} entries ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let t = Instant::now();
    let report = store::rebuild_index(&args.data, config, &mut |done, total| {
        pb.set_length(total);
        pb.set_position(done);
    })
    .with_context(|| format!("rebuilding the index of {}", args.data.display()))?;
    pb.finish_and_clear();
    if report.truncated_bytes > 0 {
        outln!(
            "truncated a torn tail of {} bytes (never acknowledged)",
            report.truncated_bytes
        );
    }
    outln!(
        "index rebuilt from {} entries in {:.1} s",
        report.entries,
        t.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn run_purge(args: PurgeArgs) -> anyhow::Result<ExitCode> {
    let (store, _) = Store::open(&args.data, StoreConfig::default(), &mut |_, _| {})
        .with_context(|| format!("opening the store in {}", args.data.display()))?;
    let cutoff = Utc::now() - chrono::Duration::days(i64::from(args.older_than));
    let report = store
        .purge_bodies(cutoff)
        .context("purging message bodies")?;
    outln!(
        "dropped {} message bodies ({} bytes) stored before {}; recorded as audit entry {}",
        report.bodies,
        report.bytes,
        cutoff.format("%Y-%m-%dT%H:%M:%SZ"),
        report.entry
    );
    Ok(ExitCode::SUCCESS)
}
