//! `referral-broker bench`: the store's figures (issue 5) — URL dedup lookups + inserts per
//! second at growing index sizes, audit appends per second with group commit against one
//! fsync per append, and log verification entries per second. Not a test: it prints numbers.
//!
//! Everything runs through the store's public API ([`crate::store::Store`],
//! [`crate::store::LogReader`]) on synthetic data in a scratch directory.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::audit::merkle::CompactTree;
use crate::ids::{EnvelopeId, ParticipantId};
use crate::store::{Event, LogReader, NewEntry, Routed, Seq, Store, StoreConfig, UrlCheck, UrlKey};

/// Measure the store: dedup at 100 k / 1 M / 10 M keys, audit appends, log verification.
///
/// Dedup: the index is filled with distinct URL keys (spread over 4 destinations) up to each
/// size in turn; at each size, `--ops` check-and-open calls are timed, half on keys already
/// open (answer: duplicate) and half on new keys (answer: opened). The figure should stay flat
/// as the index grows. Filling 10 M keys takes minutes and about 3 GB of disk; `--keys`
/// chooses the sizes and `--max-fill-secs` bounds the fill (larger sizes are then skipped).
///
/// Appends: `--appends` entries from `--writers` concurrent tasks, each awaiting durability
/// (group commit: one fsync per batch), then `--baseline-appends` entries from one task (one
/// fsync per append); the ratio is printed. Verify: every entry of the appended log read
/// back, its frame checked, decoded canonically, its seq checked, hashed into the tree.
///
/// Example: referral-broker bench --keys 100000,1000000 --appends 100000
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct BenchArgs {
    /// Scratch directory (default: a new one under the system temp dir, removed afterwards).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Dedup index sizes to measure at, in keys, comma-separated.
    #[arg(
        long,
        value_name = "N,N,…",
        value_delimiter = ',',
        default_value = "100000,1000000,10000000"
    )]
    keys: Vec<u64>,
    /// Dedup operations timed at each size.
    #[arg(long, value_name = "N", default_value_t = 200_000)]
    ops: u64,
    /// Stop filling the dedup index after this many seconds in total.
    #[arg(long, value_name = "SECS", default_value_t = 1800)]
    max_fill_secs: u64,
    /// Entries appended with group commit.
    #[arg(long, value_name = "N", default_value_t = 200_000)]
    appends: u64,
    /// Concurrent appending tasks.
    #[arg(long, value_name = "N", default_value_t = 256)]
    writers: u64,
    /// Entries appended one at a time (one fsync each), the baseline.
    #[arg(long, value_name = "N", default_value_t = 3_000)]
    baseline_appends: u64,
    /// sled cache, MiB.
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    cache_mib: u64,
    /// Skip the dedup part.
    #[arg(long)]
    no_dedup: bool,
    /// Skip the append and verify parts.
    #[arg(long)]
    no_append: bool,
    /// Keep the scratch directory.
    #[arg(long)]
    keep: bool,
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:>12} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_message(what.to_owned());
    pb
}

fn url_key(n: u64) -> UrlKey {
    UrlKey(Sha256::digest(n.to_le_bytes()).into())
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let (dir, remove) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("referral-broker-bench-{}", std::process::id())),
            !args.keep,
        ),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    if std::fs::read_dir(&dir)?.next().is_some() {
        bail!(
            "{} is not empty: the benchmark needs a fresh directory",
            dir.display()
        );
    }
    println!("scratch directory: {}", dir.display());
    let config = StoreConfig {
        cache_capacity: args.cache_mib << 20,
        ..StoreConfig::default()
    };
    let outcome = (|| {
        if !args.no_dedup {
            dedup(&args, &dir.join("dedup"), &config)?;
        }
        if !args.no_append {
            appends(&args, &dir, &config)?;
        }
        anyhow::Ok(())
    })();
    if remove {
        let _ = std::fs::remove_dir_all(&dir);
    }
    outcome?;
    Ok(ExitCode::SUCCESS)
}

fn dedup(args: &BenchArgs, dir: &Path, config: &StoreConfig) -> anyhow::Result<()> {
    let mut sizes = args.keys.clone();
    sizes.sort_unstable();
    sizes.dedup();
    let (store, _) = Store::open(dir, config.clone(), &mut |_, _| {})?;
    let dests: Vec<ParticipantId> = ["de.eco", "fr.pointdecontact", "nl.ehk", "it.stop-it"]
        .iter()
        .map(|s| s.parse().context("synthetic participant id"))
        .collect::<Result<_, _>>()?;
    // Keys are opened by `first`; lookups come from `second`, so an open key answers
    // duplicate (the same referral asking again would be answered `Opened`: a redelivery).
    let (first, second) = (EnvelopeId::new_v7(), EnvelopeId::new_v7());
    let check_as = |n: u64, referral: &EnvelopeId| -> anyhow::Result<UrlCheck> {
        let dest = &dests[(n % dests.len() as u64) as usize];
        Ok(store.url_check_and_open(dest, &url_key(n), referral, Utc::now())?)
    };
    let check = |n: u64| check_as(n, &first);
    println!(
        "\n== dedup: URL check-and-open (sled cache {} MiB, one thread)",
        args.cache_mib
    );
    println!(
        "{:>12} {:>14} {:>16} {:>16} {:>12}",
        "keys", "ops/s", "lookup µs/op", "insert µs/op", "fill keys/s"
    );
    let fill_deadline = Instant::now() + Duration::from_secs(args.max_fill_secs);
    // Keys 0..filled are open; each measurement adds ops/2 more.
    let mut filled = 0u64;
    let mut results = Vec::new();
    for size in sizes {
        if filled < size {
            let pb = bar(size - filled, "filling");
            let t = Instant::now();
            let start = filled;
            while filled < size {
                if Instant::now() > fill_deadline {
                    pb.abandon_with_message("time is up");
                    println!(
                        "fill stopped at {filled} keys after --max-fill-secs; sizes from {size} skipped"
                    );
                    return summary(&results);
                }
                check(filled)?;
                filled += 1;
                if filled.is_multiple_of(4096) {
                    pb.set_position(filled - start);
                }
            }
            pb.finish_and_clear();
            let fill_rate = rate(filled - start, t.elapsed());
            results.push((size, 0.0, 0.0, 0.0, fill_rate));
        }
        // Timed: alternate a lookup of a random open key and an insert of a new one.
        let mut rng_state = 0x9e37_79b9_7f4a_7c15u64 ^ size;
        let mut next_rand = || {
            // xorshift64*: deterministic, dependency-free, good enough to scatter lookups.
            rng_state ^= rng_state >> 12;
            rng_state ^= rng_state << 25;
            rng_state ^= rng_state >> 27;
            rng_state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let (mut t_lookup, mut t_insert) = (Duration::ZERO, Duration::ZERO);
        let half = args.ops / 2;
        let t = Instant::now();
        for _ in 0..half {
            let k = next_rand() % filled;
            let t0 = Instant::now();
            let r = check_as(k, &second)?;
            t_lookup += t0.elapsed();
            if r == UrlCheck::Opened {
                bail!("key {k} should have been open");
            }
            let t0 = Instant::now();
            let r = check(filled)?;
            t_insert += t0.elapsed();
            if r != UrlCheck::Opened {
                bail!("new key {filled} was not opened");
            }
            filled += 1;
        }
        let total = t.elapsed();
        let fill_rate = results.last().map_or(0.0, |r| r.4);
        let row = (
            size,
            rate(2 * half, total),
            t_lookup.as_secs_f64() * 1e6 / half.max(1) as f64,
            t_insert.as_secs_f64() * 1e6 / half.max(1) as f64,
            fill_rate,
        );
        if let Some(last) = results.last_mut().filter(|r| r.0 == size) {
            *last = row;
        } else {
            results.push(row);
        }
        println!(
            "{:>12} {:>14.0} {:>16.2} {:>16.2} {:>12.0}",
            row.0, row.1, row.2, row.3, row.4
        );
    }
    drop(store);
    let disk = dir_size(dir);
    println!("index on disk: {:.0} MiB", disk as f64 / 1048576.0);
    summary(&results)
}

fn summary(results: &[(u64, f64, f64, f64, f64)]) -> anyhow::Result<()> {
    let measured: Vec<_> = results.iter().filter(|r| r.1 > 0.0).collect();
    if let (Some(first), Some(last)) = (measured.first(), measured.last()) {
        println!(
            "dedup: {:.0} ops/s at {} keys, {:.0} ops/s at {} keys ({:+.0} %)",
            first.1,
            first.0,
            last.1,
            last.0,
            (last.1 / first.1 - 1.0) * 100.0
        );
    }
    Ok(())
}

fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A typical daemon entry: `routed` with ids, destination and message hash.
fn sample_entry(origin: &ParticipantId, dest: &ParticipantId) -> NewEntry {
    NewEntry::new(Event::Routed(Routed {
        items: vec![0, 1, 2],
        reason: "country".into(),
    }))
    .envelope(EnvelopeId::new_v7())
    .participant(origin.clone())
    .destination(dest.clone())
    .message(b"{\"synthetic\":true}")
}

fn appends(args: &BenchArgs, dir: &Path, config: &StoreConfig) -> anyhow::Result<()> {
    let origin: ParticipantId = "fr.pointdecontact".parse().context("synthetic id")?;
    let dest: ParticipantId = "de.eco".parse().context("synthetic id")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;

    println!(
        "\n== audit appends (each caller awaits fsync; sled flushed per batch: {})",
        config.flush_index_each_batch
    );
    let gc_dir = dir.join("append-group");
    let (store, _) = Store::open(&gc_dir, config.clone(), &mut |_, _| {})?;
    let writers = args.writers.max(1);
    let per = args.appends / writers;
    let pb = bar(per * writers, "appending");
    let t = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..writers {
            let (store, origin, dest, pb) =
                (store.clone(), origin.clone(), dest.clone(), pb.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..per {
                    store.append(vec![sample_entry(&origin, &dest)]).await?;
                    pb.inc(1);
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await.context("append task")??;
        }
        anyhow::Ok(())
    })?;
    let group_time = t.elapsed();
    pb.finish_and_clear();
    let stats = store.stats();
    let group_rate = rate(stats.appended, group_time);
    println!(
        "group commit: {} entries from {} tasks in {:.2} s = {:.0} entries/s ({} batches, {:.1} entries per fsync)",
        stats.appended,
        writers,
        group_time.as_secs_f64(),
        group_rate,
        stats.batches,
        stats.appended as f64 / stats.batches.max(1) as f64
    );
    drop(store);

    let single_dir = dir.join("append-single");
    let (single, _) = Store::open(&single_dir, config.clone(), &mut |_, _| {})?;
    let t = Instant::now();
    for _ in 0..args.baseline_appends {
        single.append_blocking(vec![sample_entry(&origin, &dest)])?;
    }
    let single_time = t.elapsed();
    let s = single.stats();
    let single_rate = rate(s.appended, single_time);
    println!(
        "one fsync per append: {} entries in {:.2} s = {:.0} entries/s ({} batches)",
        s.appended,
        single_time.as_secs_f64(),
        single_rate,
        s.batches
    );
    println!(
        "group commit / one fsync per append = {:.1}×",
        group_rate / single_rate.max(1e-9)
    );
    drop(single);

    println!(
        "\n== log verification (frame check, canonical decode, seq, leaf + tree, checkpoint roots)"
    );
    let reader = LogReader::open(&gc_dir)?;
    let size = reader.size()?;
    let pb = bar(size, "verifying");
    let t = Instant::now();
    let n = verify_pass(&reader, &pb)?;
    let vt = t.elapsed();
    pb.finish_and_clear();
    println!(
        "verify: {} entries in {:.2} s = {:.0} entries/s ({:.0} MiB of log)",
        n,
        vt.as_secs_f64(),
        rate(n, vt),
        dir_size(&gc_dir.join("log")) as f64 / 1048576.0
    );
    Ok(())
}

/// What `audit verify` has to do per entry, minus the checkpoint signatures.
fn verify_pass(reader: &LogReader, pb: &ProgressBar) -> anyhow::Result<u64> {
    let mut tree = CompactTree::new();
    // Recent trees, for checkpoints that cover a few entries less than their seq.
    let mut recent: VecDeque<CompactTree> = VecDeque::new();
    let mut n = 0u64;
    for le in reader.iter_from(Seq(0))? {
        let le = le?;
        if !le.check_ok {
            bail!("entry {}: frame check does not match", le.seq);
        }
        let e = le.decode()?;
        if let Event::Checkpoint(c) = &e.event {
            let root = if c.size == tree.size() {
                Some(tree.root())
            } else {
                recent
                    .iter()
                    .find(|t| t.size() == c.size)
                    .map(CompactTree::root)
            };
            if root != Some(c.root.0) {
                bail!(
                    "entry {}: checkpoint root does not match size {}",
                    e.seq,
                    c.size
                );
            }
        }
        tree.push(le.leaf_hash);
        recent.push_back(tree.clone());
        if recent.len() > 64 {
            recent.pop_front();
        }
        n += 1;
        if n.is_multiple_of(8192) {
            pb.set_position(n);
        }
    }
    Ok(n)
}
