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
use crate::store::{
    Duplicate, DuplicateItem, Event, ItemFacts, LogReader, NewEntry, Received, Routed, Seq, Store,
    StoreConfig, UrlCheck, UrlKey,
};
use crate::wire::Kind;

/// Measure the store: dedup at 100 k / 1 M / 10 M keys, audit appends, log verification.
///
/// Dedup: the index is filled with distinct URL keys (spread over 4 destinations) up to each
/// size in turn, the way the daemon opens them: referrals of 20 items, each key checked and
/// opened, then the referrals' `received` and `routed` entries appended (100 referrals per
/// append). At each size, `--ops` check-and-open calls are timed, half on keys already open
/// (answer: duplicate) and half on new keys (answer: opened); the check figure should stay
/// flat as the index grows (printed as the mean over all calls, and from the median time of
/// a referral's checks, which a busy shared machine does not skew; the load average is
/// printed too). Their entries (`received`, `routed`, `duplicate`) are then appended, timed
/// apart: "logged ops/s" is what making those decisions durable costs (log fsync, sled, and
/// the URL snapshots the writer takes meanwhile). At the end the store is closed (timed: it
/// writes the snapshot of the open URL keys) and a fresh process opens it: the time to load
/// the open URL keys into memory, and the memory they take. Filling 10 M keys takes about 15
/// minutes and 12 GB of disk; `--keys` chooses the sizes and `--max-fill-secs` bounds the
/// fill (larger sizes are then skipped).
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
    /// (Internal) open the store in DIR in this fresh process, print what loading the open
    /// URL keys took and the memory, and exit: how the dedup part measures a reopen.
    #[arg(long, value_name = "DIR", hide = true)]
    load_only: Option<PathBuf>,
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
    if let Some(dir) = &args.load_only {
        load_only(dir, args.cache_mib)?;
        return Ok(ExitCode::SUCCESS);
    }
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

/// Items per synthetic referral (the top of the realistic 1–20 mix).
const ITEMS: u64 = 20;
/// Referrals per append (one group commit, one sled batch).
const CHUNK: u64 = 100;

/// What the dedup part needs: the store, the destinations, one origin.
struct Dedup {
    store: Store,
    dests: Vec<ParticipantId>,
    origin: ParticipantId,
}

impl Dedup {
    /// Key `n` belongs to destination `n % 4`.
    fn dest(&self, n: u64) -> &ParticipantId {
        &self.dests[(n % self.dests.len() as u64) as usize]
    }

    /// The entries the daemon appends for one referral: `received`, then per destination
    /// `routed` (items opened) and `duplicate` (items suppressed).
    fn entries(
        &self,
        id: &EnvelopeId,
        keys: &[u64],
        dups: &[Option<EnvelopeId>],
        out: &mut Vec<NewEntry>,
    ) {
        let items = keys
            .iter()
            .map(|&n| ItemFacts {
                url_key: url_key(n),
                hashes: Vec::new(),
            })
            .collect();
        out.push(
            NewEntry::new(Event::Received(Received {
                kind: Kind::Referral,
                items,
            }))
            .envelope(id.clone())
            .participant(self.origin.clone())
            .message(id.as_str().as_bytes()),
        );
        for (d, dest) in self.dests.iter().enumerate() {
            let mine = |i: &usize| keys[*i] % self.dests.len() as u64 == d as u64;
            let routed: Vec<u16> = (0..keys.len())
                .filter(|i| mine(i) && dups[*i].is_none())
                .map(|i| i as u16)
                .collect();
            let duplicates: Vec<DuplicateItem> = (0..keys.len())
                .filter(mine)
                .filter_map(|i| {
                    Some(DuplicateItem {
                        item: i as u16,
                        url_key: url_key(keys[i]),
                        first_referral: dups[i].clone()?,
                    })
                })
                .collect();
            let entry = |event| {
                NewEntry::new(event)
                    .envelope(id.clone())
                    .participant(self.origin.clone())
                    .destination(dest.clone())
            };
            if !routed.is_empty() {
                out.push(entry(Event::Routed(Routed {
                    items: routed,
                    reason: "country".into(),
                })));
            }
            if !duplicates.is_empty() {
                out.push(entry(Event::Duplicate(Duplicate { items: duplicates })));
            }
        }
    }
}

/// One row of the dedup table.
#[derive(Debug, Clone)]
struct Row {
    size: u64,
    /// Check-and-open calls per second: mean over every call (lookups + inserts).
    ops: f64,
    /// … from the medians below (what a shared machine does not skew).
    ops_median: f64,
    /// Median µs per lookup (an open key: duplicate) and per insert (a new key: opened).
    lookup_us: f64,
    insert_us: f64,
    /// The same operations made durable: their entries appended, fsynced and applied to
    /// the indexes (sled), per second of appending.
    logged: f64,
    fill: f64,
    /// The machine's 1-minute load average when the row was measured.
    load: String,
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
    let b = Dedup {
        store,
        dests,
        origin: "be.childfocus"
            .parse()
            .context("synthetic participant id")?,
    };
    println!(
        "\n== dedup: URL check-and-open (sled cache {} MiB, one thread; referrals of {ITEMS} \
         items to 4 destinations, {CHUNK} referrals per append)",
        args.cache_mib
    );
    println!(
        "{:>11} {:>12} {:>12} {:>10} {:>10} {:>13} {:>12} {:>8}",
        "keys",
        "check ops/s",
        "(median)",
        "lookup µs",
        "insert µs",
        "logged ops/s",
        "fill keys/s",
        "load"
    );
    let fill_deadline = Instant::now() + Duration::from_secs(args.max_fill_secs);
    // Keys 0..filled are open (each by a logged referral); each measurement adds ops/2.
    let mut filled = 0u64;
    let mut results: Vec<Row> = Vec::new();
    let mut entries = Vec::new();
    for size in sizes {
        let mut fill_rate = 0.0;
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
                    return finish(b, &results, args.cache_mib);
                }
                entries.clear();
                for _ in 0..CHUNK {
                    let id = EnvelopeId::new_v7();
                    let keys: Vec<u64> = (filled..filled + ITEMS).collect();
                    for &n in &keys {
                        let r =
                            b.store
                                .url_check_and_open(b.dest(n), &url_key(n), &id, Utc::now())?;
                        if r != UrlCheck::Opened {
                            bail!("new key {n} was not opened");
                        }
                    }
                    b.entries(&id, &keys, &[const { None }; ITEMS as usize], &mut entries);
                    filled += ITEMS;
                }
                b.store.append_blocking(std::mem::take(&mut entries))?;
                pb.set_position(filled - start);
            }
            pb.finish_and_clear();
            fill_rate = rate(filled - start, t.elapsed());
        }
        // Timed: referrals of ITEMS/2 lookups of random open keys (answer: duplicate) and
        // ITEMS/2 new keys (answer: opened); then their entries appended, timed apart. Each
        // referral's lookups and inserts are one sample each: the median sample is what a
        // check costs when the thread is not preempted (the machine may be shared), the mean
        // includes whatever else the machine did.
        let mut rng_state = 0x9e37_79b9_7f4a_7c15u64 ^ size;
        let mut next_rand = || {
            // xorshift64*: deterministic, dependency-free, good enough to scatter lookups.
            rng_state ^= rng_state >> 12;
            rng_state ^= rng_state << 25;
            rng_state ^= rng_state >> 27;
            rng_state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let referrals = (args.ops / ITEMS).max(1);
        let half = ITEMS / 2;
        let mut samples: [Vec<Duration>; 2] = [
            Vec::with_capacity(referrals as usize),
            Vec::with_capacity(referrals as usize),
        ];
        let mut t_log = Duration::ZERO;
        let mut done = 0u64;
        while done < referrals {
            entries.clear();
            let chunk = CHUNK.min(referrals - done);
            for _ in 0..chunk {
                let id = EnvelopeId::new_v7();
                let lookups: Vec<u64> = (0..half).map(|_| next_rand() % filled).collect();
                let inserts: Vec<u64> = (filled..filled + half).collect();
                let mut dups = Vec::with_capacity(ITEMS as usize);
                let t0 = Instant::now();
                for &k in &lookups {
                    let r = b
                        .store
                        .url_check_and_open(b.dest(k), &url_key(k), &id, Utc::now())?;
                    let UrlCheck::Duplicate { first_referral, .. } = r else {
                        bail!("key {k} should have been open");
                    };
                    dups.push(Some(first_referral));
                }
                let t1 = Instant::now();
                for &n in &inserts {
                    let r = b
                        .store
                        .url_check_and_open(b.dest(n), &url_key(n), &id, Utc::now())?;
                    if r != UrlCheck::Opened {
                        bail!("new key {n} was not opened");
                    }
                    dups.push(None);
                }
                let t2 = Instant::now();
                samples[0].push(t1 - t0);
                samples[1].push(t2 - t1);
                filled += half;
                let keys: Vec<u64> = lookups.into_iter().chain(inserts).collect();
                b.entries(&id, &keys, &dups, &mut entries);
            }
            let t0 = Instant::now();
            b.store.append_blocking(std::mem::take(&mut entries))?;
            t_log += t0.elapsed();
            done += chunk;
        }
        let ops = referrals * half;
        let total: Duration = samples.iter().flatten().sum();
        let median_us = |v: &mut Vec<Duration>| {
            v.sort_unstable();
            v.get(v.len() / 2)
                .map_or(0.0, |d| d.as_secs_f64() * 1e6 / half as f64)
        };
        let (lookup_us, insert_us) = (median_us(&mut samples[0]), median_us(&mut samples[1]));
        let row = Row {
            size,
            ops: rate(2 * ops, total),
            ops_median: 2e6 / (lookup_us + insert_us).max(1e-9),
            lookup_us,
            insert_us,
            logged: rate(2 * ops, t_log),
            fill: fill_rate,
            load: load_average(),
        };
        println!(
            "{:>11} {:>12.0} {:>12.0} {:>10.2} {:>10.2} {:>13.0} {:>12.0} {:>8}",
            row.size,
            row.ops,
            row.ops_median,
            row.lookup_us,
            row.insert_us,
            row.logged,
            row.fill,
            row.load
        );
        results.push(row);
    }
    finish(b, &results, args.cache_mib)
}

/// Prints the summary, then closes the store (timed: the last URL snapshot is written then)
/// and has a fresh process open it again, to time loading the open URL keys into memory and
/// see the memory it takes.
fn finish(b: Dedup, results: &[Row], cache_mib: u64) -> anyhow::Result<()> {
    summary(results)?;
    let dir = b.store.dir().to_owned();
    let keys = b.store.url_index().open_keys;
    let t = Instant::now();
    // The last handle: the writer finishes, flushes sled and writes the URL snapshot.
    drop(b);
    let close = t.elapsed();
    let snap = dir.join("index").join("urls.snap");
    println!(
        "close: {:.2} s, most of it writing the URL snapshot of {keys} open keys ({:.0} MiB)",
        close.as_secs_f64(),
        std::fs::metadata(&snap).map_or(0, |m| m.len()) as f64 / 1048576.0,
    );
    let exe = std::env::current_exe().context("finding this executable")?;
    let status = std::process::Command::new(exe)
        .args([
            "bench",
            "--cache-mib",
            &cache_mib.to_string(),
            "--load-only",
        ])
        .arg(&dir)
        .status()
        .context("running the reopen")?;
    if !status.success() {
        bail!("the reopen failed: {status}");
    }
    println!(
        "index on disk: {:.0} MiB, log {:.0} MiB",
        dir_size(&dir.join("index")) as f64 / 1048576.0,
        dir_size(&dir.join("log")) as f64 / 1048576.0
    );
    Ok(())
}

/// Opens the store in `dir` (a fresh process: nothing else in memory) and prints the load.
/// Dropping it at the end writes no snapshot: it already covers the whole log.
fn load_only(dir: &Path, cache_mib: u64) -> anyhow::Result<()> {
    let config = StoreConfig {
        cache_capacity: cache_mib << 20,
        ..StoreConfig::default()
    };
    let before = rss_mib();
    let t = Instant::now();
    let (store, report) = Store::open(dir, config, &mut |_, _| {})?;
    let open_time = t.elapsed();
    let after = rss_mib();
    let idx = store.url_index();
    let mib = |m: Option<u64>| m.map_or_else(|| "?".to_owned(), |m| m.to_string());
    println!(
        "reopen (fresh process): {} open URL keys loaded (snapshot, then the log after it) in \
         {:.2} s ({:.0} keys/s); whole open {:.2} s",
        report.url_load.keys,
        report.url_load.time.as_secs_f64(),
        rate(report.url_load.keys, report.url_load.time),
        open_time.as_secs_f64(),
    );
    println!(
        "memory: URL table ≈ {:.0} MiB = {:.0} bytes per open key; process RSS {} MiB before \
         open, {} MiB after (the rest is sled: cache {cache_mib} MiB, page table, buffers)",
        idx.approx_bytes as f64 / 1048576.0,
        idx.approx_bytes as f64 / idx.open_keys.max(1) as f64,
        mib(before),
        mib(after),
    );
    Ok(())
}

/// The 1-minute load average (Linux), as printed by the kernel.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// Resident memory of this process (Linux), MiB.
fn rss_mib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

fn summary(results: &[Row]) -> anyhow::Result<()> {
    if let (Some(first), Some(last)) = (results.first(), results.last()) {
        let change = |a: f64, b: f64| (b / a - 1.0) * 100.0;
        println!(
            "dedup check-and-open: {:.0} ops/s at {} keys, {:.0} ops/s at {} keys ({:+.0} %); \
             from medians {:.0} → {:.0} ops/s ({:+.0} %)",
            first.ops,
            first.size,
            last.ops,
            last.size,
            change(first.ops, last.ops),
            first.ops_median,
            last.ops_median,
            change(first.ops_median, last.ops_median)
        );
        println!(
            "dedup logged (entries fsynced + applied to sled): {:.0} ops/s at {} keys, {:.0} ops/s at {} keys ({:+.0} %)",
            first.logged,
            first.size,
            last.logged,
            last.size,
            change(first.logged, last.logged)
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
