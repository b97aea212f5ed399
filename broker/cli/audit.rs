//! `referral-broker audit …`: the chain of custody from the command line.
//!
//! - `verify`: recompute every leaf and node of a data directory's log and check every
//!   checkpoint in it (signature, then root); on failure, name the first bad sequence number.
//! - `prove`: write the evidence bundle of one envelope (its entries, their inclusion proofs,
//!   the latest signed checkpoint).
//! - `check-bundle`: check a bundle offline with only the broker's public key, and say in plain
//!   words what it proves.
//! - `consistency`: the consistency proof from an older tree size to the current log, and,
//!   given a checkpoint a participant kept, whether the log still extends it.
//!
//! The log is read with the store's [`LogReader`] (no lock: the daemon may be running); all
//! checking is [`crate::audit`]'s pure code. Exit codes: 0 verified, 1 verification failed
//! (the log or the bundle does not check), 2 could not check (a file missing or unreadable),
//! 78 bad usage (e.g. a malformed key).

use std::collections::{BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::audit::bundle::{Bundle, BundleReport, MAX_BUNDLE_BYTES, check_bundle};
use crate::audit::checkpoint::{BrokerCheckpoint, CheckpointError, parse_verifier_key};
use crate::audit::merkle::{CompactTree, Hash, LeafSource, TiledLeaves, ct_eq};
use crate::audit::proof::{consistency_proof, verify_consistency};
use crate::ids::EnvelopeId;
use crate::signing::{VerifyingKey, decode_public_key_b64, key_id_of};
use crate::store::{Entry, Event, LogReader, Seq};

use super::EXIT_CONFIG;

/// Exit code: the log or the bundle does not verify.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: could not check (missing or unreadable input).
pub const EXIT_CANNOT_CHECK: u8 = 2;

const KEY_HELP: &str = "The broker's ed25519 public key: standard base64 of its 32 bytes, a \
    file holding that (e.g. the broker's .pub key file), or a signed-note verifier key \
    `<name>+<hash>+<base64>`. Repeat it to accept checkpoints signed before a key rotation.";

const VERIFY_ABOUT: &str = "\
Verify the whole audit log of a data directory.

Reads every entry of DIR/log once, in order, and checks:
  - the frame's check and the entry's canonical encoding (a changed byte is caught here),
  - that the entry's own seq is its position (a deleted, inserted or swapped entry),
  - for each checkpoint entry: the broker's signature on its note (with --broker-key), that
    the note says the same size and root as the entry, and that the tree recomputed from
    the log has exactly that root at that size.
On failure it names the first bad sequence number (for a root that no longer matches: the
range between the last checkpoint that matched and the one that does not). It prints the
tree size, the recomputed root, the checkpoints checked, and its rate in entries/second.

Reading needs no lock: it can run while the broker runs (it stops at the last complete
entry). Exit 0: verified; 1: the log does not verify; 2: the log cannot be read.";

const PROVE_ABOUT: &str = "\
Write the evidence bundle of one envelope.

Collects every entry about ENVELOPE_ID (its own entries, and receipts, statuses and
retractions naming it), takes the latest signed checkpoint in the log, and writes a bundle
(JSON) holding the checkpoint, each entry's exact bytes, its sequence number and its
inclusion proof. Entries after the latest checkpoint cannot be proven yet and are listed.
The bundle is checked (with --broker-key) before it is written.

Anyone can then check the bundle offline with `audit check-bundle` and the broker's public
key alone. The log is read twice, front to back; memory stays small on large logs.";

const CHECK_BUNDLE_ABOUT: &str = "\
Check an evidence bundle offline, with only the broker's public key.

Verifies the checkpoint's signature first, then each entry's bytes, sequence number and
inclusion proof against the checkpoint's root, and prints what the bundle proves: which
envelope, which events at which times, in which checkpoint. The bundle is checked byte for
byte as written: any changed byte (even spacing) makes it fail.

It proves that the entries shown are in the broker's log exactly as shown. It does not
prove that no other entry about the envelope exists.

Exit 0: the bundle checks; 1: it does not; 2: the file cannot be read.";

const CONSISTENCY_ABOUT: &str = "\
Prove that the current log extends an older tree.

Prints the consistency proof (RFC 9162) from tree size SIZE to the log's current size (or
--to), with both roots recomputed from the log. Given --checkpoint, a checkpoint a
participant kept (the signed note, or the checkpoint message as received), it verifies the
checkpoint's signature, takes SIZE from it and checks that the log still has the root the
participant holds at that size and that the proof leads from it to the current root: a log
rewritten after that checkpoint fails here.

Exit 0: consistent; 1: not consistent (the log was rewritten, or lost entries); 2: the log
or the checkpoint cannot be read.";

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Recompute every leaf and node of the log and check every checkpoint in it.
    #[command(long_about = VERIFY_ABOUT)]
    Verify(VerifyArgs),
    /// Write the evidence bundle of one envelope (entries + inclusion proofs + checkpoint).
    #[command(long_about = PROVE_ABOUT)]
    Prove(ProveArgs),
    /// Check an evidence bundle offline with only the broker's public key.
    #[command(long_about = CHECK_BUNDLE_ABOUT)]
    CheckBundle(CheckBundleArgs),
    /// Consistency proof from an older tree size (or a kept checkpoint) to the current log.
    #[command(long_about = CONSISTENCY_ABOUT)]
    Consistency(ConsistencyArgs),
    /// Rebuild the index (sled) from the audit log alone (broker stopped).
    RebuildIndex(super::audit_store::RebuildIndexArgs),
    /// Drop stored message bodies past retention; entries keep their hashes (broker stopped).
    Purge(super::audit_store::PurgeArgs),
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The broker's data directory (holding `log/`).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    #[arg(long = "broker-key", value_name = "KEY", help = KEY_HELP, required_unless_present = "no_signatures")]
    pub broker_key: Vec<String>,
    /// Do not check checkpoint signatures (roots are still checked). Says so in the output.
    #[arg(long)]
    pub no_signatures: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, clap::Args)]
pub struct ProveArgs {
    /// The envelope (usually a referral) whose entries to prove.
    #[arg(value_name = "ENVELOPE_ID")]
    pub envelope: EnvelopeId,
    /// The broker's data directory (holding `log/`).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Where to write the bundle (refuses to overwrite).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[arg(long = "broker-key", value_name = "KEY", help = KEY_HELP, required = true)]
    pub broker_key: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct CheckBundleArgs {
    /// The bundle file written by `audit prove`.
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,
    #[arg(long = "broker-key", value_name = "KEY", help = KEY_HELP, required = true)]
    pub broker_key: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct ConsistencyArgs {
    /// The broker's data directory (holding `log/`).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// The older tree size (taken from --checkpoint when given).
    #[arg(long, value_name = "SIZE", required_unless_present = "checkpoint")]
    pub from: Option<u64>,
    /// The newer tree size (default: every entry of the log).
    #[arg(long, value_name = "SIZE")]
    pub to: Option<u64>,
    /// A checkpoint a participant kept: the signed note, or the checkpoint message (JSON).
    #[arg(long, value_name = "FILE", requires = "broker_key")]
    pub checkpoint: Option<PathBuf>,
    #[arg(long = "broker-key", value_name = "KEY", help = KEY_HELP)]
    pub broker_key: Vec<String>,
    /// Print the proof as JSON (sizes, roots and hashes in standard base64) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs one `audit` subcommand. Verification failures are exit 1 with a message, not errors.
pub fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    let outcome = match cmd {
        AuditCommand::Verify(a) => run_verify(a),
        AuditCommand::Prove(a) => run_prove(a),
        AuditCommand::CheckBundle(a) => run_check_bundle(a),
        AuditCommand::Consistency(a) => run_consistency(a),
        AuditCommand::RebuildIndex(a) => super::audit_store::run_rebuild_index(a),
        AuditCommand::Purge(a) => super::audit_store::run_purge(a),
    };
    match outcome {
        Ok(code) => Ok(code),
        Err(e) if e.is::<UsageError>() => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(EXIT_CONFIG))
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(EXIT_CANNOT_CHECK))
        }
    }
}

/// Bad input on the command line (exit 78).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

/// Parses a `--broker-key` value: base64, a file holding it, or a verifier key string.
pub fn load_broker_key(arg: &str) -> anyhow::Result<VerifyingKey> {
    let path = Path::new(arg);
    let text = if path.is_file() {
        let mut s = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(4096).read_to_string(&mut s))
            .with_context(|| format!("reading the broker key {}", path.display()))?;
        s
    } else {
        arg.to_owned()
    };
    let text = text.trim();
    if text.matches('+').count() >= 2
        && let Ok((_, key)) = parse_verifier_key(text)
    {
        return Ok(key);
    }
    decode_public_key_b64(text).map_err(|e| {
        usage(format!(
            "--broker-key {arg:?}: {e} (expected base64 of 32 bytes, a .pub file, or \
             <name>+<hash>+<base64>)"
        ))
    })
}

fn load_keys(args: &[String]) -> anyhow::Result<Vec<VerifyingKey>> {
    args.iter().map(|a| load_broker_key(a)).collect()
}

/// Verifies a checkpoint note with the first of `keys` that signed it.
fn verify_checkpoint(
    note: &str,
    keys: &[VerifyingKey],
) -> Result<BrokerCheckpoint, CheckpointError> {
    let mut last = CheckpointError::NoSignatureByKey;
    for key in keys {
        match BrokerCheckpoint::verify(note, key, None) {
            Ok(cp) => return Ok(cp),
            Err(CheckpointError::NoSignatureByKey) => continue,
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn progress(len: Option<u64>, quiet: bool, what: &str) -> ProgressBar {
    let pb = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    if quiet {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_message(what.to_owned());
    pb
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

// ---------------------------------------------------------------------------------------
// verify

/// Why the log does not verify, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyFailure {
    /// The first bad sequence number (for a root mismatch: the first that may be bad).
    pub first_bad_seq: u64,
    /// For a root mismatch: the bad entry is before this seq (exclusive).
    pub bad_before: Option<u64>,
    pub why: String,
}

impl std::fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.bad_before {
            Some(end) => write!(
                f,
                "first bad sequence number: {} (an entry in {}..{} was changed, removed or \
                 inserted): {}",
                self.first_bad_seq, self.first_bad_seq, end, self.why
            ),
            None => write!(
                f,
                "first bad sequence number: {}: {}",
                self.first_bad_seq, self.why
            ),
        }
    }
}

/// What `audit verify` found.
#[derive(Debug, Clone)]
pub struct VerifyOutcome {
    /// Entries read (= tree size when it verified; up to the failure otherwise).
    pub entries: u64,
    /// The recomputed root of all entries read.
    pub root: Hash,
    /// Checkpoint entries checked (roots, and signatures unless skipped).
    pub checkpoints: u64,
    /// The largest tree size a verified checkpoint covers.
    pub covered: u64,
    /// The latest verified checkpoint, if any.
    pub latest: Option<BrokerCheckpoint>,
    pub failure: Option<VerifyFailure>,
    pub elapsed: Duration,
}

/// How many recent tree states `verify` keeps for checkpoints cut a few entries before
/// their own seq (older ones are checked in a second pass).
const RECENT_TREES: usize = 8192;

/// Verifies the log of `data_dir` (see `audit verify --help`). `keys` empty: signatures are
/// not checked.
pub fn verify_log(
    data_dir: &Path,
    keys: &[VerifyingKey],
    pb: &ProgressBar,
) -> anyhow::Result<VerifyOutcome> {
    let log_dir = data_dir.join("log");
    if !log_dir.is_dir() {
        bail!("{}: no such log directory", log_dir.display());
    }
    let reader = LogReader::open(data_dir)?;
    if let Ok(n) = reader.size() {
        pb.set_length(n);
    }
    let start = Instant::now();
    let mut tree = CompactTree::new();
    let mut recent: VecDeque<CompactTree> = VecDeque::with_capacity(RECENT_TREES + 1);
    // Checkpoints older than the window: (their seq, size, root), checked in a second pass.
    let mut deferred: Vec<(u64, u64, Hash)> = Vec::new();
    let mut checkpoints = 0u64;
    // Tree sizes whose signed root matched the log.
    let mut matched: BTreeSet<u64> = BTreeSet::new();
    let mut latest: Option<BrokerCheckpoint> = None;
    let mut origin: Option<String> = None;
    let mut failure = None;
    let fail = |seq: u64, why: String| VerifyFailure {
        first_bad_seq: seq,
        bad_before: None,
        why,
    };
    let iter = reader.iter_from(Seq(0))?;
    for item in iter {
        let pos = tree.size();
        let le = match item {
            Ok(le) => le,
            Err(e) => {
                failure = Some(fail(pos, format!("the log cannot be read here: {e}")));
                break;
            }
        };
        if !le.check_ok {
            failure = Some(fail(
                pos,
                "its bytes were changed (the frame's check no longer matches them)".into(),
            ));
            break;
        }
        let entry = match Entry::decode(&le.bytes) {
            Ok(e) => e,
            Err(e) => {
                failure = Some(fail(pos, format!("not a valid audit entry: {e}")));
                break;
            }
        };
        if entry.seq.get() != pos {
            failure = Some(fail(
                pos,
                format!(
                    "the entry here says it is seq {}: entries were deleted, inserted or \
                     swapped",
                    entry.seq
                ),
            ));
            break;
        }
        if let Event::Checkpoint(c) = &entry.event {
            checkpoints += 1;
            if c.size > pos {
                failure = Some(fail(
                    pos,
                    format!(
                        "checkpoint of {} entries, but only {pos} entries precede it",
                        c.size
                    ),
                ));
                break;
            }
            if !keys.is_empty() {
                let cp = match verify_checkpoint(&c.note, keys) {
                    Ok(cp) => cp,
                    Err(e) => {
                        failure = Some(fail(pos, format!("checkpoint: {e}")));
                        break;
                    }
                };
                if cp.size != c.size || !ct_eq(&cp.root, &c.root.0) {
                    failure = Some(fail(
                        pos,
                        "checkpoint entry's size or root differ from its signed note".into(),
                    ));
                    break;
                }
                match &origin {
                    None => origin = Some(cp.origin.clone()),
                    Some(o) if *o != cp.origin => {
                        failure = Some(fail(
                            pos,
                            format!("checkpoint of log {:?}, not {o:?}", cp.origin),
                        ));
                        break;
                    }
                    Some(_) => {}
                }
                latest = Some(cp);
            }
            let back = pos - c.size;
            let state = if back == 0 {
                Some(&tree)
            } else {
                usize::try_from(back)
                    .ok()
                    .and_then(|b| recent.len().checked_sub(b))
                    .and_then(|i| recent.get(i))
            };
            match state {
                Some(t) => {
                    if !ct_eq(&t.root(), &c.root.0) {
                        failure = Some(VerifyFailure {
                            first_bad_seq: matched
                                .range(..=c.size)
                                .next_back()
                                .copied()
                                .unwrap_or(0),
                            bad_before: Some(c.size),
                            why: format!(
                                "the checkpoint at seq {pos} signed root {} for {} entries; \
                                 the log now hashes to {}",
                                B64.encode(c.root.0),
                                c.size,
                                B64.encode(t.root())
                            ),
                        });
                        break;
                    }
                    matched.insert(c.size);
                }
                None => deferred.push((pos, c.size, c.root.0)),
            }
        }
        recent.push_back(tree.clone());
        if recent.len() > RECENT_TREES {
            recent.pop_front();
        }
        tree.push(le.leaf_hash);
        if tree.size().is_multiple_of(4096) {
            pb.set_position(tree.size());
        }
    }
    pb.set_position(tree.size());
    // Checkpoints cut long before their own entry: recompute those sizes in a second pass.
    if failure.is_none() && !deferred.is_empty() {
        deferred.sort_by_key(|d| d.1);
        let mut t = CompactTree::new();
        let mut next = 0usize;
        let mut it = reader.iter_from(Seq(0))?;
        'pass: loop {
            while let Some(&(seq, size, root)) = deferred.get(next) {
                if size != t.size() {
                    break;
                }
                next += 1;
                if !ct_eq(&t.root(), &root) {
                    failure = Some(VerifyFailure {
                        first_bad_seq: matched.range(..=size).next_back().copied().unwrap_or(0),
                        bad_before: Some(size),
                        why: format!(
                            "the checkpoint at seq {seq} signed root {} for {size} entries; \
                             the log now hashes to {}",
                            B64.encode(root),
                            B64.encode(t.root())
                        ),
                    });
                    break 'pass;
                }
                matched.insert(size);
            }
            if next == deferred.len() {
                break;
            }
            match it.next() {
                Some(item) => t.push(item?.leaf_hash),
                None => break,
            }
        }
    }
    let covered = matched.last().copied().unwrap_or(0);
    Ok(VerifyOutcome {
        entries: tree.size(),
        root: tree.root(),
        checkpoints,
        covered,
        latest,
        failure,
        elapsed: start.elapsed(),
    })
}

fn run_verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let keys = if a.no_signatures {
        Vec::new()
    } else {
        load_keys(&a.broker_key)?
    };
    let pb = progress(None, a.quiet, "verifying");
    let out = verify_log(&a.data, &keys, &pb)?;
    pb.finish_and_clear();
    let secs = out.elapsed.as_secs_f64();
    if let Some(f) = &out.failure {
        outln!("audit log {}: DOES NOT VERIFY", a.data.display());
        outln!("{f}");
        outln!(
            "read {} entries before the failure in {secs:.2} s ({:.0} entries/s)",
            out.entries,
            rate(out.entries, out.elapsed)
        );
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    outln!("audit log {}: verified", a.data.display());
    outln!(
        "{} entries, root {} (recomputed from every entry)",
        out.entries,
        B64.encode(out.root)
    );
    let signed = if keys.is_empty() {
        "roots checked; signatures NOT checked (--no-signatures)"
    } else {
        "signatures and roots checked"
    };
    outln!("{} checkpoints, {signed}", out.checkpoints);
    if let Some(cp) = &out.latest {
        outln!(
            "latest checkpoint: {} entries at {} ({}), signed by {}",
            cp.size,
            crate::wire::time::format(&cp.time),
            cp.origin,
            cp.key_name
        );
    }
    if out.covered < out.entries {
        let n = out.entries - out.covered;
        outln!(
            "{n} {} after the latest checkpoint's tree size (the checkpoint entry itself \
             included): covered by the next checkpoint",
            if n == 1 { "entry" } else { "entries" }
        );
    }
    outln!(
        "rate: {:.0} entries/s ({} entries in {secs:.2} s)",
        rate(out.entries, out.elapsed),
        out.entries
    );
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------
// prove

/// What `prove` found in the log for one envelope.
#[derive(Debug)]
pub struct ProveOutcome {
    pub bundle: Bundle,
    /// Entries about the envelope after the checkpoint (not in the bundle).
    pub uncovered: Vec<u64>,
}

/// Builds the evidence bundle of `envelope` from the log of `data_dir`, against the latest
/// checkpoint that `keys` verify. Two passes over the log; memory O(entries / 1024).
pub fn prove_envelope(
    data_dir: &Path,
    envelope: &EnvelopeId,
    keys: &[VerifyingKey],
) -> anyhow::Result<ProveOutcome> {
    let reader = LogReader::open(data_dir)?;
    // Pass 1: the entries about the envelope and the latest checkpoint.
    let mut about: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut latest: Option<BrokerCheckpoint> = None;
    for item in reader.iter_from(Seq(0))? {
        let le = item?;
        let entry = le
            .decode()
            .with_context(|| format!("entry {} (run `audit verify`)", le.seq))?;
        if entry.referral() == Some(envelope) || entry.envelope.as_ref() == Some(envelope) {
            about.push((le.seq.get(), le.bytes));
        }
        if let Event::Checkpoint(c) = &entry.event {
            let cp = verify_checkpoint(&c.note, keys)
                .map_err(|e| anyhow!("the checkpoint at seq {} does not verify: {e}", le.seq))?;
            latest = Some(cp);
        }
    }
    if about.is_empty() {
        bail!("no entry about envelope {envelope} in the log");
    }
    let Some(cp) = latest else {
        bail!("the log has no checkpoint yet: nothing to prove against");
    };
    let (covered, uncovered): (Vec<_>, Vec<_>) =
        about.into_iter().partition(|(seq, _)| *seq < cp.size);
    if covered.is_empty() {
        bail!(
            "every entry about {envelope} is after the latest checkpoint ({} entries): prove \
             again after the next one",
            cp.size
        );
    }
    // Pass 2: the tiles of the checkpoint's tree, keeping the blocks the proofs reach into.
    let level = TiledLeaves::DEFAULT_LEVEL;
    let keep: BTreeSet<u64> = covered
        .iter()
        .flat_map(|(seq, _)| TiledLeaves::blocks_for_inclusion(level, *seq, cp.size))
        .collect();
    let mut builder = TiledLeaves::builder(level, keep);
    for item in reader.iter_from(Seq(0))? {
        if builder.size() == cp.size {
            break;
        }
        builder.push(item?.leaf_hash);
    }
    let mut tiles = builder.finish();
    if tiles.size() != cp.size {
        bail!(
            "the log has {} entries, fewer than the checkpoint's {}",
            tiles.size(),
            cp.size
        );
    }
    if !ct_eq(&tiles.range_root(0, cp.size)?, &cp.root) {
        bail!("the log no longer matches its latest checkpoint: run `audit verify`");
    }
    let key = keys
        .iter()
        .find(|k| BrokerCheckpoint::verify(&cp.note, k, None).is_ok())
        .ok_or_else(|| anyhow!("no key verifies the checkpoint"))?;
    let bundle = Bundle::prove(envelope.clone(), &cp, key, covered, &mut tiles)?;
    Ok(ProveOutcome {
        bundle,
        uncovered: uncovered.into_iter().map(|(s, _)| s).collect(),
    })
}

fn run_prove(a: ProveArgs) -> anyhow::Result<ExitCode> {
    let keys = load_keys(&a.broker_key)?;
    if a.out.exists() {
        return Err(usage(format!(
            "{} exists; refusing to overwrite",
            a.out.display()
        )));
    }
    let out = prove_envelope(&a.data, &a.envelope, &keys)?;
    let bytes = out.bundle.to_bytes();
    // Check what we are about to hand over, exactly as it will be read.
    let mut checked = None;
    for key in &keys {
        if let Ok(r) = check_bundle(&bytes, key) {
            checked = Some(r);
            break;
        }
    }
    let Some(report) = checked else {
        bail!("the bundle built does not check; not writing it (run `audit verify`)");
    };
    write_new(&a.out, &bytes)?;
    outln!(
        "wrote {}: {} entries about {} against the checkpoint of {} entries ({})",
        a.out.display(),
        report.entries.len(),
        a.envelope,
        report.checkpoint.size,
        crate::wire::time::format(&report.checkpoint.time)
    );
    if !out.uncovered.is_empty() {
        outln!(
            "not included, after the latest checkpoint: seq {} (prove again after the next \
             checkpoint)",
            join(&out.uncovered)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn join(seqs: &[u64]) -> String {
    seqs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------
// check-bundle

fn run_check_bundle(a: CheckBundleArgs) -> anyhow::Result<ExitCode> {
    let keys = load_keys(&a.broker_key)?;
    let mut bytes = Vec::new();
    std::fs::File::open(&a.bundle)
        .and_then(|f| f.take(MAX_BUNDLE_BYTES as u64 + 1).read_to_end(&mut bytes))
        .with_context(|| format!("reading {}", a.bundle.display()))?;
    let mut first_err = None;
    for key in &keys {
        match check_bundle(&bytes, key) {
            Ok(report) => {
                out!("{}", describe_report(&report, key));
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    outln!("evidence bundle {}: DOES NOT CHECK", a.bundle.display());
    if let Some(e) = first_err {
        outln!("{e}");
    }
    Ok(ExitCode::from(EXIT_FAILED))
}

/// A checked bundle, in plain words.
pub fn describe_report(r: &BundleReport, key: &VerifyingKey) -> String {
    let cp = &r.checkpoint;
    let mut s = String::new();
    let _ = writeln!(s, "evidence bundle: VALID");
    let _ = writeln!(
        s,
        "It proves that the broker's audit log {:?} held, when the broker signed its \
         checkpoint at {}, {} entries with root {},",
        cp.origin,
        crate::wire::time::format(&cp.time),
        cp.size,
        B64.encode(cp.root)
    );
    let _ = writeln!(
        s,
        "(signed as {:?} by the key you gave, key id {}), and that these {} entries about \
         envelope {} are in it, exactly as shown:",
        cp.key_name,
        key_id_of(key),
        r.entries.len(),
        r.envelope
    );
    for e in &r.entries {
        let _ = writeln!(
            s,
            "  seq {:>8}  {}  {}",
            e.seq,
            e.time.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            describe_entry(e)
        );
    }
    let _ = writeln!(
        s,
        "It does not prove that the log holds no other entry about this envelope; `audit \
         verify` on the log does."
    );
    s
}

/// A wire enum's own spelling (`accepted`, `removed`, …).
fn wire_name<T: serde::Serialize + std::fmt::Debug>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{v:?}"),
    }
}

/// One entry in plain words.
pub fn describe_entry(e: &Entry) -> String {
    let who = |p: &Option<crate::ids::ParticipantId>| {
        p.as_ref()
            .map_or_else(|| "?".to_owned(), |p| p.as_str().to_owned())
    };
    let items = |v: &[u16]| v.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
    let sha = e
        .sha256
        .map(|d| format!(" (message SHA-256 {d})"))
        .unwrap_or_default();
    let env = e
        .envelope
        .as_ref()
        .map_or_else(String::new, |id| format!(" {id}"));
    match &e.event {
        Event::Received(r) => format!(
            "received {}{env} from {}{}{sha}",
            r.kind.as_str(),
            who(&e.participant),
            if r.items.is_empty() {
                String::new()
            } else {
                format!(", {} items", r.items.len())
            }
        ),
        Event::Rejected(r) => format!(
            "rejected{env} from {}: {}{}{sha}",
            who(&e.participant),
            r.code.as_str(),
            if r.quarantined { " (quarantined)" } else { "" }
        ),
        Event::Routed(r) => format!(
            "routed{env} to {}: items {} (reason {})",
            who(&e.destination),
            items(&r.items),
            r.reason
        ),
        Event::Duplicate(d) => format!(
            "duplicate at {}: items {} already open there (first: {})",
            who(&e.destination),
            d.items
                .iter()
                .map(|i| i.item.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            d.items
                .iter()
                .map(|i| i.first_referral.as_str())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Event::Delivered(d) => format!(
            "delivered{env} to {}'s inbox (publish confirmed): items {}",
            who(&e.destination),
            items(&d.items)
        ),
        Event::NoticeSent(n) => format!(
            "notice {} ({}) sent to {}",
            n.notice,
            n.code.as_str(),
            who(&e.destination)
        ),
        Event::Receipt(r) => format!(
            "receipt{env} from {} for referral {}: {}{sha}",
            who(&e.participant),
            r.referral,
            wire_name(&r.outcome)
        ),
        Event::Status(st) => format!(
            "status{env} from {} for referral {} item {}: {}{sha}",
            who(&e.participant),
            st.referral,
            st.item,
            wire_name(&st.state)
        ),
        Event::Retraction(r) => format!(
            "retraction{env} from {} of referral {} items {}{sha}",
            who(&e.participant),
            r.referral,
            items(&r.items)
        ),
        other => format!("{}{env}", other.name()),
    }
}

// ---------------------------------------------------------------------------------------
// consistency

/// A kept checkpoint file: the note itself, a checkpoint message (envelope JSON) or its body.
pub fn read_kept_checkpoint(path: &Path) -> anyhow::Result<String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(1 << 20).read_to_string(&mut text))
        .with_context(|| format!("reading {}", path.display()))?;
    if !text.trim_start().starts_with('{') {
        return Ok(text);
    }
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not JSON nor a signed note", path.display()))?;
    let note = v
        .pointer("/body/note")
        .or_else(|| v.pointer("/note"))
        .and_then(|n| n.as_str())
        .ok_or_else(|| anyhow!("{}: no checkpoint note in this JSON", path.display()))?;
    Ok(note.to_owned())
}

/// The result of `audit consistency`.
#[derive(Debug, Clone)]
pub struct ConsistencyOutcome {
    pub size1: u64,
    pub size2: u64,
    /// Recomputed from the log.
    pub root1: Hash,
    pub root2: Hash,
    pub proof: Vec<Hash>,
    /// Why the log does not extend the older tree (the kept checkpoint's, or a size larger
    /// than the log); None: it does.
    pub rewritten: Option<String>,
    pub log_entries: u64,
}

/// Computes the consistency proof from `size1` (or the kept checkpoint's size) to `size2`
/// (default: the whole log) and checks it against the kept checkpoint, if any.
pub fn check_consistency(
    data_dir: &Path,
    size1: Option<u64>,
    size2: Option<u64>,
    kept: Option<&BrokerCheckpoint>,
) -> anyhow::Result<ConsistencyOutcome> {
    let reader = LogReader::open(data_dir)?;
    let size1 = match (size1, kept) {
        (Some(s), Some(k)) if s != k.size => {
            return Err(usage(format!(
                "--from {s} but the checkpoint is of size {}",
                k.size
            )));
        }
        (Some(s), _) => s,
        (None, Some(k)) => k.size,
        (None, None) => return Err(usage("--from SIZE or --checkpoint FILE is needed")),
    };
    let log_entries = reader.size()?;
    let size2 = size2.unwrap_or(log_entries);
    if size2 > log_entries {
        return Err(usage(format!(
            "--to {size2}: the log has only {log_entries} entries"
        )));
    }
    if size1 > size2 {
        let why = format!(
            "the log has {size2} entries, fewer than the {size1} of the older tree: entries \
             were removed"
        );
        return Ok(ConsistencyOutcome {
            size1,
            size2,
            root1: [0; 32],
            root2: [0; 32],
            proof: Vec::new(),
            rewritten: Some(why),
            log_entries,
        });
    }
    let level = TiledLeaves::DEFAULT_LEVEL;
    let keep = TiledLeaves::blocks_for_consistency(level, size1, size2)
        .into_iter()
        .collect();
    let mut builder = TiledLeaves::builder(level, keep);
    for item in reader.iter_from(Seq(0))? {
        if builder.size() == size2 {
            break;
        }
        builder.push(item?.leaf_hash);
    }
    let mut tiles = builder.finish();
    let root = |t: &mut TiledLeaves, n: u64| -> anyhow::Result<Hash> {
        if n == 0 {
            Ok(crate::audit::merkle::EMPTY_ROOT)
        } else {
            Ok(t.range_root(0, n)?)
        }
    };
    let root1 = root(&mut tiles, size1)?;
    let root2 = root(&mut tiles, size2)?;
    let proof = consistency_proof(&mut tiles, size1, size2)?;
    let rewritten = kept.and_then(|k| {
        let verdict = verify_consistency(size1, size2, &proof, &k.root, &root2);
        match verdict {
            Ok(()) => None,
            Err(e) => Some(format!(
                "the log's first {size1} entries now hash to {}, not to the root {} the \
                 checkpoint of {} signed: the log was rewritten ({e})",
                B64.encode(root1),
                B64.encode(k.root),
                crate::wire::time::format(&k.time)
            )),
        }
    });
    Ok(ConsistencyOutcome {
        size1,
        size2,
        root1,
        root2,
        proof,
        rewritten,
        log_entries,
    })
}

fn run_consistency(a: ConsistencyArgs) -> anyhow::Result<ExitCode> {
    let keys = load_keys(&a.broker_key)?;
    let kept = match &a.checkpoint {
        None => None,
        Some(path) => {
            let note = read_kept_checkpoint(path)?;
            match verify_checkpoint(&note, &keys) {
                Ok(cp) => Some(cp),
                Err(e) => {
                    outln!(
                        "checkpoint {}: does not verify with the key(s) given: {e}",
                        path.display()
                    );
                    return Ok(ExitCode::from(EXIT_FAILED));
                }
            }
        }
    };
    let out = check_consistency(&a.data, a.from, a.to, kept.as_ref())?;
    if a.json {
        let v = serde_json::json!({
            "size1": out.size1,
            "size2": out.size2,
            "root1": B64.encode(out.root1),
            "root2": B64.encode(out.root2),
            "proof": out.proof.iter().map(|h| B64.encode(h)).collect::<Vec<_>>(),
            "consistent_with_checkpoint": kept.as_ref().map(|_| out.rewritten.is_none()),
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        outln!("log {}: {} entries", a.data.display(), out.log_entries);
        outln!(
            "older tree: {} entries, root {} (recomputed)",
            out.size1,
            B64.encode(out.root1)
        );
        outln!(
            "newer tree: {} entries, root {} (recomputed)",
            out.size2,
            B64.encode(out.root2)
        );
        outln!("consistency proof ({} hashes):", out.proof.len());
        for h in &out.proof {
            outln!("  {}", B64.encode(h));
        }
    }
    match (&kept, &out.rewritten) {
        (Some(_), Some(why)) => {
            outln!("NOT CONSISTENT with the kept checkpoint: {why}");
            Ok(ExitCode::from(EXIT_FAILED))
        }
        (None, Some(why)) => {
            outln!("NOT CONSISTENT: {why}");
            Ok(ExitCode::from(EXIT_FAILED))
        }
        (Some(k), None) => {
            if !a.json {
                outln!(
                    "consistent: the log still extends the checkpoint of {} entries signed \
                     at {} (root {})",
                    k.size,
                    crate::wire::time::format(&k.time),
                    B64.encode(k.root)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        (None, _) => Ok(ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::Signer;

    #[test]
    fn broker_key_in_every_accepted_form() {
        let signer = Signer::from_seed([5; 32]);
        let key = signer.verifying_key();
        let b64 = signer.public_key_b64();
        assert_eq!(load_broker_key(&b64).ok(), Some(key));
        let vkey = crate::audit::checkpoint::verifier_key_string("broker.example", &key)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(load_broker_key(&vkey).ok(), Some(key));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("broker.pub");
        std::fs::write(&file, format!("{b64}\n")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            load_broker_key(file.to_str().unwrap_or_default()).ok(),
            Some(key)
        );
        let bad = load_broker_key("not a key").expect_err("refused");
        assert!(bad.is::<UsageError>());
    }
}
