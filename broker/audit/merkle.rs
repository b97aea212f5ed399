//! RFC 9162 §2.1 Merkle tree hashing: leaf and node hashes, the tree head of any number of
//! leaves, and a compact tree that is appended to one leaf at a time.
//!
//! What this module guarantees:
//! - Leaf hash = SHA-256(0x00 ‖ entry bytes), node hash = SHA-256(0x01 ‖ left ‖ right), and
//!   MTH(D\[n\]) splits at the largest power of two smaller than `n`; the empty tree's hash is
//!   SHA-256 of nothing. Known answers from transparency-dev/merkle are in
//!   `tests/vectors/merkle/` and checked by the unit tests.
//! - [`CompactTree`] holds one hash per set bit of its size (at most 64), so the root of a log
//!   of any length is computed in O(log n) memory while streaming its entries once.
//! - [`LeafSource::range_root`] computes the head of any range of leaves by streaming their
//!   hashes through a [`CompactTree`]: O(range) hash operations and leaf reads, O(log n)
//!   memory. The proofs in [`super::proof`] read every leaf of the tree once (O(n) reads) and
//!   keep O(log n) hashes; a store that keeps subtree hashes can override
//!   [`LeafSource::range_root`] to make them O(log² n).
//! - [`TiledLeaves`] is such a source built in one streaming pass: the roots of blocks of
//!   2^10 leaves (32 bytes per 1024 entries: ~310 KiB for 10 million) plus the few blocks the
//!   wanted proofs reach into. `audit prove` and `audit consistency` use it, so a log of
//!   millions of entries is read once and never held in memory.
//!
//! No I/O, no tokio: the daemon, the CLI and an auditor share it.

use sha2::{Digest, Sha256};

/// A SHA-256 output: a leaf hash, a node hash or a tree head.
pub type Hash = [u8; 32];

/// Domain separation prefix of a leaf hash (RFC 9162 §2.1.1).
pub const LEAF_PREFIX: u8 = 0x00;
/// Domain separation prefix of an interior node hash (RFC 9162 §2.1.1).
pub const NODE_PREFIX: u8 = 0x01;

/// The head of the empty tree: SHA-256 of the empty string.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// The hash of one log entry: SHA-256(0x00 ‖ entry).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(entry);
    h.finalize().into()
}

/// The hash of an interior node: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    hash_children(left, right)
}

/// [`node_hash`] over children of any length (the RFC's definition; the known-answer vectors
/// use short ASCII children). Tree code always passes 32-byte hashes.
pub fn hash_children(left: &[u8], right: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([NODE_PREFIX]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two strictly smaller than `n` (the RFC's `k`); `n` must be at least 2.
pub(crate) fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Compares two hashes in time independent of where they differ (the fold reads every byte and
/// `black_box` keeps the compiler from short-circuiting it).
pub fn ct_eq(a: &Hash, b: &Hash) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    std::hint::black_box(diff) == 0
}

/// MTH of a slice of leaf hashes (RFC 9162 §2.1.1), in O(n) time and O(log n) memory.
pub fn root_of(leaves: &[Hash]) -> Hash {
    let mut tree = CompactTree::new();
    for leaf in leaves {
        tree.push(*leaf);
    }
    tree.root()
}

/// A Merkle tree reduced to what appending needs: the roots of its perfect subtrees, left to
/// right, one per set bit of its size, largest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactTree {
    size: u64,
    /// Perfect subtree roots, largest (leftmost) first.
    subtrees: Vec<Hash>,
}

/// Why a [`CompactTree`] cannot be rebuilt from stored parts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a compact tree of size {size} has {expected} subtree hashes, not {got}")]
pub struct CompactTreeError {
    pub size: u64,
    pub expected: usize,
    pub got: usize,
}

impl CompactTree {
    /// The empty tree.
    pub fn new() -> CompactTree {
        CompactTree::default()
    }

    /// Resumes a tree from its size and its perfect subtree roots (as [`CompactTree::subtrees`]
    /// returns them), e.g. stored next to a checkpoint.
    pub fn from_parts(size: u64, subtrees: Vec<Hash>) -> Result<CompactTree, CompactTreeError> {
        let expected = size.count_ones() as usize;
        if subtrees.len() != expected {
            return Err(CompactTreeError {
                size,
                expected,
                got: subtrees.len(),
            });
        }
        Ok(CompactTree { size, subtrees })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Perfect subtree roots, largest (leftmost) first.
    pub fn subtrees(&self) -> &[Hash] {
        &self.subtrees
    }

    /// Appends the entry's leaf and returns its leaf hash.
    pub fn push_entry(&mut self, entry: &[u8]) -> Hash {
        let leaf = leaf_hash(entry);
        self.push(leaf);
        leaf
    }

    /// Appends a leaf hash. Panics only if the tree already holds 2^64 − 1 leaves.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = leaf;
        // Each trailing one bit of the old size is a perfect subtree of the same height as the
        // new node: merge them, right to left.
        let mut merges = self.size.trailing_ones();
        while merges > 0 {
            let left = self
                .subtrees
                .pop()
                .expect("a set bit of the size always has its subtree on the stack");
            node = node_hash(&left, &node);
            merges -= 1;
        }
        self.subtrees.push(node);
        self.size = self
            .size
            .checked_add(1)
            .expect("a log cannot hold 2^64 entries");
    }

    /// The tree head MTH of the leaves so far ([`EMPTY_ROOT`] when empty).
    pub fn root(&self) -> Hash {
        let mut iter = self.subtrees.iter().rev();
        let Some(last) = iter.next() else {
            return EMPTY_ROOT;
        };
        iter.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

/// Leaf hashes by index, for computing proofs without holding the whole tree in memory.
///
/// Implement [`LeafSource::leaf_hash`]; [`LeafSource::range_root`] then streams the leaves of a
/// range through a [`CompactTree`] (O(range) reads and hash operations, O(log n) memory).
/// A store that keeps the hashes of perfect subtrees can override `range_root` to answer in
/// O(log n).
pub trait LeafSource {
    /// Why a leaf could not be read (I/O, a missing entry...).
    type Error;

    /// The leaf hash of entry `index`. Proof functions only ask for `index < size`.
    fn leaf_hash(&mut self, index: u64) -> Result<Hash, Self::Error>;

    /// MTH of the leaves `[start, end)`, taken as a tree of their own (`start < end`).
    fn range_root(&mut self, start: u64, end: u64) -> Result<Hash, Self::Error> {
        let mut tree = CompactTree::new();
        for index in start..end {
            tree.push(self.leaf_hash(index)?);
        }
        Ok(tree.root())
    }
}

/// A leaf asked of a [`LeafSource`] that does not have it (a tree size beyond the source).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no leaf {index}: the source holds {len} leaves")]
pub struct MissingLeaf {
    pub index: u64,
    pub len: u64,
}

/// Leaf hashes held in memory (tests, small logs).
impl LeafSource for &[Hash] {
    type Error = MissingLeaf;

    fn leaf_hash(&mut self, index: u64) -> Result<Hash, MissingLeaf> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.get(i))
            .copied()
            .ok_or(MissingLeaf {
                index,
                len: self.len() as u64,
            })
    }

    fn range_root(&mut self, start: u64, end: u64) -> Result<Hash, MissingLeaf> {
        let missing = MissingLeaf {
            index: end.saturating_sub(1),
            len: self.len() as u64,
        };
        let s = usize::try_from(start).map_err(|_| missing)?;
        let e = usize::try_from(end).map_err(|_| missing)?;
        self.get(s..e).map(root_of).ok_or(missing)
    }
}

/// Leaf hashes from a closure (e.g. reading the log's segment files by sequence number).
pub struct FnSource<F>(pub F);

impl<F, E> LeafSource for FnSource<F>
where
    F: FnMut(u64) -> Result<Hash, E>,
{
    type Error = E;

    fn leaf_hash(&mut self, index: u64) -> Result<Hash, E> {
        (self.0)(index)
    }
}

/// Leaf hashes of a large log reduced to what a few proofs need: the root of every full block
/// of 2^`level` leaves, plus the leaf hashes of the few blocks the proofs reach into.
///
/// Built by streaming the leaf hashes once ([`TiledLeavesBuilder::push`]), it answers
/// [`LeafSource::range_root`] for any range whose partial blocks were kept, in
/// O(range / 2^level + 2^level) hash operations, with memory of 32 bytes per block plus the
/// kept blocks. With `level` 10, a log of 10 million entries costs about 310 KiB, and an
/// inclusion or consistency proof reads no leaf again. Which blocks to keep:
/// [`TiledLeaves::blocks_for_inclusion`] / [`TiledLeaves::blocks_for_consistency`].
#[derive(Debug, Clone)]
pub struct TiledLeaves {
    level: u32,
    size: u64,
    /// Roots of the full blocks, in order.
    blocks: Vec<Hash>,
    /// Leaf hashes of the kept blocks (the last one may be partial).
    kept: std::collections::BTreeMap<u64, Vec<Hash>>,
}

/// Streams leaf hashes into a [`TiledLeaves`].
#[derive(Debug)]
pub struct TiledLeavesBuilder {
    tiled: TiledLeaves,
    keep: std::collections::BTreeSet<u64>,
    current: CompactTree,
    current_leaves: Vec<Hash>,
}

impl TiledLeavesBuilder {
    /// Appends the next leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let t = &mut self.tiled;
        let block = t.size >> t.level;
        self.current.push(leaf);
        if self.keep.contains(&block) {
            self.current_leaves.push(leaf);
        }
        t.size += 1;
        if t.size & ((1u64 << t.level) - 1) == 0 {
            t.blocks.push(self.current.root());
            self.current = CompactTree::new();
            if !self.current_leaves.is_empty() {
                t.kept
                    .insert(block, std::mem::take(&mut self.current_leaves));
            }
        }
    }

    /// Leaves pushed so far.
    pub fn size(&self) -> u64 {
        self.tiled.size
    }

    /// The tiles of the leaves pushed.
    pub fn finish(mut self) -> TiledLeaves {
        if !self.current_leaves.is_empty() {
            let block = self.tiled.size >> self.tiled.level;
            self.tiled.kept.insert(block, self.current_leaves);
        }
        self.tiled
    }
}

impl TiledLeaves {
    /// Block size used by the `audit` commands: 2^10 leaves.
    pub const DEFAULT_LEVEL: u32 = 10;

    /// A builder with blocks of 2^`level` leaves (`level` at most 32) that keeps the leaf
    /// hashes of the blocks in `keep`.
    pub fn builder(level: u32, keep: std::collections::BTreeSet<u64>) -> TiledLeavesBuilder {
        let level = level.min(32);
        TiledLeavesBuilder {
            tiled: TiledLeaves {
                level,
                size: 0,
                blocks: Vec::new(),
                kept: Default::default(),
            },
            keep,
            current: CompactTree::new(),
            current_leaves: Vec::new(),
        }
    }

    /// Leaves covered.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The blocks an inclusion proof of `index` in a tree of `size` reaches into.
    pub fn blocks_for_inclusion(level: u32, index: u64, size: u64) -> [u64; 2] {
        let level = level.min(32);
        [index >> level, size.saturating_sub(1) >> level]
    }

    /// The blocks a consistency proof from `size1` to `size2` reaches into.
    pub fn blocks_for_consistency(level: u32, size1: u64, size2: u64) -> [u64; 2] {
        let level = level.min(32);
        [
            size1.saturating_sub(1) >> level,
            size2.saturating_sub(1) >> level,
        ]
    }

    fn missing(&self, index: u64) -> MissingLeaf {
        MissingLeaf {
            index,
            len: self.size,
        }
    }
}

impl LeafSource for TiledLeaves {
    type Error = MissingLeaf;

    fn leaf_hash(&mut self, index: u64) -> Result<Hash, MissingLeaf> {
        let mask = (1u64 << self.level) - 1;
        if index >= self.size {
            return Err(self.missing(index));
        }
        self.kept
            .get(&(index >> self.level))
            .and_then(|leaves| leaves.get(usize::try_from(index & mask).ok()?))
            .copied()
            .ok_or(self.missing(index))
    }

    fn range_root(&mut self, start: u64, end: u64) -> Result<Hash, MissingLeaf> {
        if start >= end || end > self.size {
            return Err(self.missing(end.saturating_sub(1)));
        }
        let n = end - start;
        let block = 1u64 << self.level;
        // A perfect, aligned subtree of whole blocks: the MTH of their roots.
        if n.is_power_of_two() && n >= block && start.is_multiple_of(n) {
            let (first, last) = (start >> self.level, end >> self.level);
            let roots = usize::try_from(first)
                .ok()
                .zip(usize::try_from(last).ok())
                .and_then(|(f, l)| self.blocks.get(f..l))
                .ok_or(self.missing(end - 1))?;
            return Ok(root_of(roots));
        }
        // Inside one block: from its kept leaves.
        if start >> self.level == (end - 1) >> self.level {
            let mask = block - 1;
            let (s, e) = (start & mask, ((end - 1) & mask) + 1);
            return self
                .kept
                .get(&(start >> self.level))
                .and_then(|leaves| leaves.get(usize::try_from(s).ok()?..usize::try_from(e).ok()?))
                .map(root_of)
                .ok_or(self.missing(start));
        }
        let k = split_point(n);
        let left = self.range_root(start, start + k)?;
        let right = self.range_root(start + k, end)?;
        Ok(node_hash(&left, &right))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde::Deserialize;

    fn hex32(s: &str) -> Hash {
        let v = hex::decode(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        v.try_into().unwrap_or_else(|_| panic!("{s}: not 32 bytes"))
    }

    #[derive(Deserialize)]
    struct HasherVectors {
        empty_root: String,
        leaves: Vec<LeafVector>,
        nodes: Vec<NodeVector>,
    }
    #[derive(Deserialize)]
    struct LeafVector {
        input_hex: Option<String>,
        input_ascii: Option<String>,
        hash: String,
    }
    #[derive(Deserialize)]
    struct NodeVector {
        left_ascii: String,
        right_ascii: String,
        hash: String,
    }

    #[test]
    fn rfc6962_hasher_known_answers() {
        let v: HasherVectors = serde_json::from_str(include_str!(
            "../../tests/vectors/merkle/rfc6962-hasher.json"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(EMPTY_ROOT, hex32(&v.empty_root));
        assert_eq!(CompactTree::new().root(), EMPTY_ROOT);
        for leaf in &v.leaves {
            let input = match (&leaf.input_hex, &leaf.input_ascii) {
                (Some(h), None) => hex::decode(h).unwrap_or_else(|e| panic!("{e}")),
                (None, Some(a)) => a.as_bytes().to_vec(),
                _ => panic!("a leaf vector has exactly one input"),
            };
            assert_eq!(leaf_hash(&input), hex32(&leaf.hash));
        }
        for node in &v.nodes {
            assert_eq!(
                hash_children(node.left_ascii.as_bytes(), node.right_ascii.as_bytes()),
                hex32(&node.hash)
            );
        }
        // The empty tree's head is not the hash of an empty leaf.
        assert_ne!(EMPTY_ROOT, leaf_hash(b""));
    }

    #[derive(Deserialize)]
    pub(crate) struct Tree8 {
        pub leaf_inputs_hex: Vec<String>,
        pub node_hashes_by_level: Vec<Vec<String>>,
        pub root_hashes_by_size: Vec<String>,
        pub compact_trees_by_size: Vec<Vec<[usize; 2]>>,
    }

    pub(crate) fn tree8() -> Tree8 {
        serde_json::from_str(include_str!(
            "../../tests/vectors/merkle/tree-8-leaves.json"
        ))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn tree_8_roots_nodes_and_compact_states() {
        let v = tree8();
        let leaves: Vec<Vec<u8>> = v
            .leaf_inputs_hex
            .iter()
            .map(|h| hex::decode(h).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let mut tree = CompactTree::new();
        let node = |level: usize, index: usize| hex32(&v.node_hashes_by_level[level][index]);
        assert_eq!(tree.root(), hex32(&v.root_hashes_by_size[0]));
        for (i, leaf) in leaves.iter().enumerate() {
            let lh = tree.push_entry(leaf);
            assert_eq!(lh, node(0, i));
            let size = i + 1;
            assert_eq!(tree.size(), size as u64);
            assert_eq!(
                tree.root(),
                hex32(&v.root_hashes_by_size[size]),
                "size {size}"
            );
            let want: Vec<Hash> = v.compact_trees_by_size[size]
                .iter()
                .map(|&[l, i]| node(l, i))
                .collect();
            assert_eq!(tree.subtrees(), &want[..], "compact tree of size {size}");
        }
        // Every listed interior node is the head of its leaves.
        let hashes: Vec<Hash> = leaves.iter().map(|l| leaf_hash(l)).collect();
        for (level, row) in v.node_hashes_by_level.iter().enumerate() {
            for (index, h) in row.iter().enumerate() {
                let width = 1usize << level;
                assert_eq!(
                    root_of(&hashes[index * width..(index + 1) * width]),
                    hex32(h)
                );
            }
        }
        for size in 0..=8 {
            assert_eq!(
                root_of(&hashes[..size]),
                hex32(&v.root_hashes_by_size[size])
            );
        }
    }

    /// The RFC's recursive definition, for comparison.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => EMPTY_ROOT,
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    #[test]
    fn compact_tree_agrees_with_recursive_definition() {
        let leaves: Vec<Hash> = (0u32..300).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut tree = CompactTree::new();
        for (i, leaf) in leaves.iter().enumerate() {
            tree.push(*leaf);
            assert_eq!(tree.root(), mth(&leaves[..=i]));
            assert_eq!(tree.subtrees().len(), (i + 1).count_ones() as usize);
            let resumed = CompactTree::from_parts(tree.size(), tree.subtrees().to_vec());
            assert_eq!(resumed.as_ref(), Ok(&tree));
        }
        assert!(CompactTree::from_parts(3, vec![EMPTY_ROOT]).is_err());
    }

    #[test]
    fn split_points() {
        for (n, k) in [
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 4),
            (8, 4),
            (9, 8),
            (1 << 40, 1 << 39),
        ] {
            assert_eq!(split_point(n), k, "n = {n}");
        }
        assert_eq!(split_point(u64::MAX), 1 << 63);
    }

    #[test]
    fn constant_time_compare() {
        let a = leaf_hash(b"a");
        let mut b = a;
        assert!(ct_eq(&a, &b));
        for i in 0..32 {
            b[i] ^= 0x80;
            assert!(!ct_eq(&a, &b));
            b[i] ^= 0x80;
        }
    }

    #[test]
    fn range_root_streaming_matches_slice() {
        let leaves: Vec<Hash> = (0u32..40).map(|i| leaf_hash(&i.to_le_bytes())).collect();
        let mut slice: &[Hash] = &leaves;
        let mut streamed = FnSource(|i: u64| Ok::<_, ()>(leaves[i as usize]));
        for start in 0..40 {
            for end in start + 1..=40 {
                assert_eq!(
                    slice.range_root(start, end),
                    Ok(root_of(&leaves[start as usize..end as usize]))
                );
                assert_eq!(
                    streamed.range_root(start, end),
                    Ok(root_of(&leaves[start as usize..end as usize]))
                );
            }
        }
    }

    #[test]
    fn tiled_leaves_give_the_same_proofs() {
        use crate::audit::proof::{consistency_proof, inclusion_proof};
        let leaves: Vec<Hash> = (0u32..70).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut full: &[Hash] = &leaves;
        for level in 0..4 {
            for size in 1..=70u64 {
                for index in 0..size {
                    let keep = TiledLeaves::blocks_for_inclusion(level, index, size);
                    let mut b = TiledLeaves::builder(level, keep.into_iter().collect());
                    for leaf in &leaves[..size as usize] {
                        b.push(*leaf);
                    }
                    let mut tiled = b.finish();
                    assert_eq!(tiled.size(), size);
                    assert_eq!(
                        inclusion_proof(&mut tiled, index, size).ok(),
                        inclusion_proof(&mut full, index, size).ok(),
                        "level {level}, {index}/{size}"
                    );
                }
                for size1 in 0..=size {
                    let keep = TiledLeaves::blocks_for_consistency(level, size1, size);
                    let mut b = TiledLeaves::builder(level, keep.into_iter().collect());
                    for leaf in &leaves[..size as usize] {
                        b.push(*leaf);
                    }
                    let mut tiled = b.finish();
                    assert_eq!(
                        consistency_proof(&mut tiled, size1, size).ok(),
                        consistency_proof(&mut full, size1, size).ok(),
                        "level {level}, {size1} -> {size}"
                    );
                    assert_eq!(
                        tiled.range_root(0, size).ok(),
                        Some(root_of(&leaves[..size as usize]))
                    );
                }
            }
        }
        // Without the needed blocks: a typed error, not a wrong proof.
        let mut b = TiledLeaves::builder(2, Default::default());
        for leaf in &leaves[..30] {
            b.push(*leaf);
        }
        let mut tiled = b.finish();
        assert!(inclusion_proof(&mut tiled, 5, 30).is_err());
    }
}
