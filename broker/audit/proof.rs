//! Inclusion and consistency proofs (RFC 9162 §2.1.3 and §2.1.4): generation from a
//! [`LeafSource`] and verification with typed errors.
//!
//! What this module guarantees:
//! - Generation follows the RFC's `PATH` and `SUBPROOF` definitions; proofs list hashes from
//!   the leaf (or the old tree's subtree) upwards. Generating any proof reads each leaf of the
//!   tree at most once and keeps O(log n) hashes in memory (see [`LeafSource::range_root`]).
//! - Verification is the RFC's algorithm, with the exact proof length checked first (so a
//!   proof with a hash too many or too few is refused by name, not by a mismatched root), and
//!   roots compared in constant time ([`ct_eq`]). It does no I/O and never panics.
//! - Edge cases follow transparency-dev/merkle: a tree is consistent with itself (empty proof,
//!   equal roots) and the empty tree is consistent with every tree (empty proof); an inclusion
//!   proof needs `index < size`.
//!
//! Known answers from transparency-dev/merkle and rozbb/ct-merkle (`tests/vectors/merkle/`)
//! and round trips over every index and pair of sizes up to 64 are in the unit tests.

use thiserror::Error;

use super::merkle::{Hash, LeafSource, ct_eq, node_hash, split_point};

/// Why a proof could not be generated.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProofError<E> {
    #[error("entry {index} is not in a tree of {size} entries")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("no consistency proof from tree size {size1} to the smaller size {size2}")]
    SizesOutOfOrder { size1: u64, size2: u64 },
    #[error("reading the log: {0}")]
    Source(E),
}

/// Why a proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VerifyError {
    #[error("entry {index} is not in a tree of {size} entries")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("tree size {size1} is larger than tree size {size2}: a log never shrinks")]
    SizesOutOfOrder { size1: u64, size2: u64 },
    #[error("the proof has {got} hashes; a proof for these sizes has exactly {expected}")]
    WrongProofLength { expected: usize, got: usize },
    #[error("the inclusion proof leads to a different root: the entry is not in that tree")]
    RootMismatch,
    #[error("two different roots for the same tree size {size}: the log was rewritten")]
    SameSizeRootsDiffer { size: u64 },
    #[error("the consistency proof does not lead to the old root: the log was rewritten")]
    OldRootMismatch,
    #[error("the consistency proof does not lead to the new root")]
    NewRootMismatch,
}

/// The inclusion proof of entry `index` in the tree of the first `size` leaves (RFC 9162
/// §2.1.3.1): sibling hashes from the leaf up. Reads `size - 1` leaves.
pub fn inclusion_proof<S: LeafSource>(
    source: &mut S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofError<S::Error>> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    // Walk down from the root: the subtree [lo, lo + n) holds the leaf at offset m.
    let (mut lo, mut n, mut m) = (0u64, size, index);
    let mut path = Vec::with_capacity(inclusion_proof_len(index, size));
    while n > 1 {
        let k = split_point(n);
        if m < k {
            path.push(
                source
                    .range_root(lo + k, lo + n)
                    .map_err(ProofError::Source)?,
            );
            n = k;
        } else {
            path.push(source.range_root(lo, lo + k).map_err(ProofError::Source)?);
            lo += k;
            m -= k;
            n -= k;
        }
    }
    path.reverse();
    Ok(path)
}

/// The consistency proof from the tree of the first `size1` leaves to the tree of the first
/// `size2` leaves (RFC 9162 §2.1.4.1). Empty when `size1` is 0 or equals `size2`. Reads the
/// leaves of the larger tree at most once.
pub fn consistency_proof<S: LeafSource>(
    source: &mut S,
    size1: u64,
    size2: u64,
) -> Result<Vec<Hash>, ProofError<S::Error>> {
    if size1 > size2 {
        return Err(ProofError::SizesOutOfOrder { size1, size2 });
    }
    if size1 == 0 || size1 == size2 {
        return Ok(Vec::new());
    }
    // SUBPROOF(m, D[lo : lo + n], b), unrolled from the top.
    let (mut lo, mut n, mut m, mut whole) = (0u64, size2, size1, true);
    let mut path = Vec::with_capacity(consistency_proof_len(size1, size2));
    loop {
        if m == n {
            if !whole {
                path.push(source.range_root(lo, lo + n).map_err(ProofError::Source)?);
            }
            break;
        }
        let k = split_point(n);
        if m <= k {
            path.push(
                source
                    .range_root(lo + k, lo + n)
                    .map_err(ProofError::Source)?,
            );
            n = k;
        } else {
            path.push(source.range_root(lo, lo + k).map_err(ProofError::Source)?);
            lo += k;
            m -= k;
            n -= k;
            whole = false;
        }
    }
    path.reverse();
    Ok(path)
}

/// Bit length of `x` (0 for 0).
fn bit_len(x: u64) -> u32 {
    64 - x.leading_zeros()
}

/// (inner, border) of the inclusion path of `index` in a tree of `size` (`index < size`): the
/// hashes below the point where the path leaves the right edge, and those along the edge.
fn decompose(index: u64, size: u64) -> (u32, u32) {
    let inner = bit_len(index ^ (size - 1));
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner, border)
}

/// Number of hashes in the inclusion proof of `index` in a tree of `size` (0 if out of range).
pub fn inclusion_proof_len(index: u64, size: u64) -> usize {
    if index >= size {
        return 0;
    }
    let (inner, border) = decompose(index, size);
    (inner + border) as usize
}

/// Number of hashes in the consistency proof from `size1` to `size2` (0 if none is needed or
/// the sizes are out of order).
pub fn consistency_proof_len(size1: u64, size2: u64) -> usize {
    if size1 == 0 || size1 >= size2 {
        return 0;
    }
    let (inner, border) = decompose(size1 - 1, size2);
    let shift = size1.trailing_zeros();
    let seed = usize::from(!size1.is_power_of_two());
    seed + (inner - shift + border) as usize
}

/// The root that an inclusion proof leads to, from the entry's leaf hash (RFC 9162 §2.1.3.2).
/// Compare it with a trusted root in constant time, or use [`verify_inclusion`].
pub fn root_from_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
) -> Result<Hash, VerifyError> {
    if index >= size {
        return Err(VerifyError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_proof_len(index, size);
    if proof.len() != expected {
        return Err(VerifyError::WrongProofLength {
            expected,
            got: proof.len(),
        });
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(VerifyError::WrongProofLength {
                expected,
                got: proof.len(),
            });
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(VerifyError::WrongProofLength {
            expected,
            got: proof.len(),
        });
    }
    Ok(r)
}

/// Verifies that the entry whose leaf hash is `leaf` is entry `index` of the tree of `size`
/// entries whose head is `root`.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), VerifyError> {
    let computed = root_from_inclusion(leaf, index, size, proof)?;
    if ct_eq(&computed, root) {
        Ok(())
    } else {
        Err(VerifyError::RootMismatch)
    }
}

/// Verifies that the tree of `size2` entries with head `root2` extends the tree of `size1`
/// entries with head `root1` (RFC 9162 §2.1.4.2): the first `size1` entries are unchanged.
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
    root2: &Hash,
) -> Result<(), VerifyError> {
    if size1 > size2 {
        return Err(VerifyError::SizesOutOfOrder { size1, size2 });
    }
    let expected = consistency_proof_len(size1, size2);
    if proof.len() != expected {
        return Err(VerifyError::WrongProofLength {
            expected,
            got: proof.len(),
        });
    }
    if size1 == size2 {
        return if ct_eq(root1, root2) {
            Ok(())
        } else {
            Err(VerifyError::SameSizeRootsDiffer { size: size1 })
        };
    }
    if size1 == 0 {
        return Ok(());
    }
    // Step 1: when size1 is a power of two, the old root is the first node of the path.
    let (seed, rest) = if size1.is_power_of_two() {
        (root1, proof)
    } else {
        let Some((first, rest)) = proof.split_first() else {
            return Err(VerifyError::WrongProofLength { expected, got: 0 });
        };
        (first, rest)
    };
    let (mut fnode, mut snode) = (size1 - 1, size2 - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*seed, *seed);
    for c in rest {
        if snode == 0 {
            return Err(VerifyError::WrongProofLength {
                expected,
                got: proof.len(),
            });
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(VerifyError::WrongProofLength {
            expected,
            got: proof.len(),
        });
    }
    if !ct_eq(&fr, root1) {
        return Err(VerifyError::OldRootMismatch);
    }
    if !ct_eq(&sr, root2) {
        return Err(VerifyError::NewRootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::merkle::{EMPTY_ROOT, FnSource, MissingLeaf, leaf_hash, root_of};
    use super::*;
    use serde::Deserialize;

    fn hex32(s: &str) -> Hash {
        let v = hex::decode(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        v.try_into().unwrap_or_else(|_| panic!("{s}: not 32 bytes"))
    }

    /// Leaf hashes and roots of transparency-dev's 8-leaf reference tree.
    fn reference_tree() -> (Vec<Hash>, Vec<Hash>) {
        let v = super::super::merkle::tests::tree8();
        let leaves = v
            .leaf_inputs_hex
            .iter()
            .map(|h| leaf_hash(&hex::decode(h).unwrap_or_else(|e| panic!("{e}"))))
            .collect();
        let roots = v.root_hashes_by_size.iter().map(|h| hex32(h)).collect();
        (leaves, roots)
    }

    #[derive(Deserialize)]
    struct InclusionFile {
        vectors: Vec<InclusionVector>,
    }
    #[derive(Deserialize)]
    struct InclusionVector {
        from: String,
        leaf_index: u64,
        size: u64,
        proof: Vec<String>,
    }

    #[derive(Deserialize)]
    struct ConsistencyFile {
        vectors: Vec<ConsistencyVector>,
        edge_cases: EdgeCases,
    }
    #[derive(Deserialize)]
    struct ConsistencyVector {
        from: String,
        size1: u64,
        size2: u64,
        proof: Vec<String>,
    }
    #[derive(Deserialize)]
    struct EdgeCases {
        cases: Vec<EdgeCase>,
    }
    #[derive(Deserialize)]
    struct EdgeCase {
        size1: u64,
        size2: u64,
        root1: String,
        root2: String,
        proof: Vec<String>,
        want_err: bool,
    }

    /// transparency-dev's `sha256SomeHash` (proof/verify_test.go).
    fn some_hash() -> Hash {
        hex32("abacaba000000000000000000000000000000000000000000060061e00123456")
    }

    /// The mutations of transparency-dev's `corruptInclusionProof` that keep 32-byte hashes
    /// (our types cannot hold the source's empty or short "garbage" hashes, so a zero hash
    /// stands in for them); every one must be refused.
    fn corrupt_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) {
        let mut probes: Vec<(u64, u64, Hash, Hash, Vec<Hash>, String)> = vec![
            (
                index.wrapping_sub(1),
                size,
                *leaf,
                *root,
                proof.to_vec(),
                "index - 1".into(),
            ),
            (
                index + 1,
                size,
                *leaf,
                *root,
                proof.to_vec(),
                "index + 1".into(),
            ),
            (
                index ^ 2,
                size,
                *leaf,
                *root,
                proof.to_vec(),
                "index ^ 2".into(),
            ),
            (
                index,
                size * 2,
                *leaf,
                *root,
                proof.to_vec(),
                "size * 2".into(),
            ),
            (
                index,
                size / 2,
                *leaf,
                *root,
                proof.to_vec(),
                "size / 2".into(),
            ),
            (
                index,
                size,
                leaf_hash(b"WrongLeaf"),
                *root,
                proof.to_vec(),
                "wrong leaf".into(),
            ),
            (
                index,
                size,
                *leaf,
                EMPTY_ROOT,
                proof.to_vec(),
                "empty root".into(),
            ),
            (
                index,
                size,
                *leaf,
                some_hash(),
                proof.to_vec(),
                "random root".into(),
            ),
        ];
        let with = |p: Vec<Hash>, d: &str| (index, size, *leaf, *root, p, d.to_string());
        probes.push(with([proof, &[[0u8; 32]]].concat(), "trailing garbage"));
        probes.push(with([proof, &[*root]].concat(), "trailing root"));
        probes.push(with([&[[0u8; 32]], proof].concat(), "preceding garbage"));
        probes.push(with([&[*root], proof].concat(), "preceding root"));
        for i in 0..proof.len() {
            let mut p = proof.to_vec();
            p[i][0] ^= 8;
            probes.push(with(p, &format!("modified proof[{i}] bit 3")));
        }
        if let Some((_, rest)) = proof.split_last() {
            probes.push(with(rest.to_vec(), "removed component"));
        }
        if proof.len() > 1 {
            let p = [&[proof[0], some_hash()], &proof[1..]].concat();
            probes.push(with(p, "inserted component"));
        }
        for (i, s, l, r, p, desc) in probes {
            assert!(
                verify_inclusion(&l, i, s, &p, &r).is_err(),
                "{desc}: accepted (index {index}, size {size})"
            );
        }
    }

    /// transparency-dev's `corruptConsistencyProof`, 32-byte hashes only (see above).
    fn corrupt_consistency(size1: u64, size2: u64, root1: &Hash, root2: &Hash, proof: &[Hash]) {
        let wrong = leaf_hash(b"WrongRoot");
        let z = [0u8; 32];
        let base = |s1: u64, s2: u64, r1: Hash, r2: Hash, p: Vec<Hash>, d: &str| {
            (s1, s2, r1, r2, p, d.to_string())
        };
        let p = proof.to_vec();
        let mut probes = vec![
            base(size1 - 1, size2, *root1, *root2, p.clone(), "size1 - 1"),
            base(size1 + 1, size2, *root1, *root2, p.clone(), "size1 + 1"),
            base(size1 ^ 2, size2, *root1, *root2, p.clone(), "size1 ^ 2"),
            base(size1, size2 * 2, *root1, *root2, p.clone(), "size2 * 2"),
            base(size1, size2 / 2, *root1, *root2, p.clone(), "size2 / 2"),
            base(size1, size2, wrong, *root2, p.clone(), "wrong root1"),
            base(size1, size2, *root1, wrong, p.clone(), "wrong root2"),
            base(size1, size2, *root2, *root1, p.clone(), "swapped roots"),
            base(size1, size2, *root1, *root2, vec![], "empty proof"),
            base(
                size1,
                size2,
                *root1,
                *root2,
                [proof, &[z]].concat(),
                "trailing garbage",
            ),
            base(
                size1,
                size2,
                *root1,
                *root2,
                [proof, &[*root1]].concat(),
                "trailing root1",
            ),
            base(
                size1,
                size2,
                *root1,
                *root2,
                [proof, &[*root2]].concat(),
                "trailing root2",
            ),
            base(
                size1,
                size2,
                *root1,
                *root2,
                [&[z], proof].concat(),
                "preceding garbage",
            ),
            base(
                size1,
                size2,
                *root1,
                *root2,
                [&[*root1], proof].concat(),
                "preceding root1",
            ),
            base(
                size1,
                size2,
                *root1,
                *root2,
                [&[*root2], proof].concat(),
                "preceding root2",
            ),
            base(
                size1,
                size2,
                *root1,
                *root2,
                [&[proof[0]], proof].concat(),
                "preceding proof[0]",
            ),
        ];
        if let Some((_, rest)) = proof.split_last() {
            probes.push(base(
                size1,
                size2,
                *root1,
                *root2,
                rest.to_vec(),
                "truncated proof",
            ));
        }
        for i in 0..proof.len() {
            let mut p = proof.to_vec();
            p[i][0] ^= 16;
            probes.push(base(
                size1,
                size2,
                *root1,
                *root2,
                p,
                &format!("modified proof[{i}] bit 4"),
            ));
        }
        for (s1, s2, r1, r2, p, desc) in probes {
            assert!(
                verify_consistency(s1, s2, &p, &r1, &r2).is_err(),
                "{desc}: accepted ({size1} -> {size2})"
            );
        }
    }

    #[test]
    fn inclusion_known_answers() {
        let file: InclusionFile = serde_json::from_str(include_str!(
            "../../tests/vectors/merkle/inclusion-proofs.json"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let (leaves, roots) = reference_tree();
        assert_eq!(file.vectors.len(), 12);
        for v in &file.vectors {
            let want: Vec<Hash> = v.proof.iter().map(|h| hex32(h)).collect();
            let mut src: &[Hash] = &leaves[..v.size as usize];
            let got = inclusion_proof(&mut src, v.leaf_index, v.size);
            assert_eq!(
                got,
                Ok(want.clone()),
                "{} {}/{}",
                v.from,
                v.leaf_index,
                v.size
            );
            let leaf = leaves[v.leaf_index as usize];
            let root = roots[v.size as usize];
            assert_eq!(
                root_from_inclusion(&leaf, v.leaf_index, v.size, &want),
                Ok(root)
            );
            assert_eq!(
                verify_inclusion(&leaf, v.leaf_index, v.size, &want, &root),
                Ok(())
            );
            corrupt_inclusion(&leaf, v.leaf_index, v.size, &want, &root);
        }
    }

    #[test]
    fn consistency_known_answers() {
        let file: ConsistencyFile = serde_json::from_str(include_str!(
            "../../tests/vectors/merkle/consistency-proofs.json"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let (leaves, roots) = reference_tree();
        assert_eq!(file.vectors.len(), 9);
        for v in &file.vectors {
            let want: Vec<Hash> = v.proof.iter().map(|h| hex32(h)).collect();
            let mut src: &[Hash] = &leaves[..v.size2 as usize];
            let got = consistency_proof(&mut src, v.size1, v.size2);
            assert_eq!(
                got,
                Ok(want.clone()),
                "{} {} -> {}",
                v.from,
                v.size1,
                v.size2
            );
            let (r1, r2) = (roots[v.size1 as usize], roots[v.size2 as usize]);
            assert_eq!(
                verify_consistency(v.size1, v.size2, &want, &r1, &r2),
                Ok(())
            );
            if !want.is_empty() {
                corrupt_consistency(v.size1, v.size2, &r1, &r2, &want);
            }
        }
        // The verifier's edge cases. Named roots: the ASCII "don't care" roots padded with
        // zeros to 32 bytes (only their (in)equality matters), `empty` = SHA-256("").
        let named = |name: &str| -> Hash {
            let ascii: &[u8] = match name {
                "root1" => b"don't care 1",
                "root2" => b"don't care 2",
                "empty" => return EMPTY_ROOT,
                other => panic!("unknown root {other}"),
            };
            let mut h = [0u8; 32];
            h[..ascii.len()].copy_from_slice(ascii);
            h
        };
        assert_eq!(file.edge_cases.cases.len(), 13);
        for c in &file.edge_cases.cases {
            let proof: Vec<Hash> = c.proof.iter().map(|n| named(n)).collect();
            let got =
                verify_consistency(c.size1, c.size2, &proof, &named(&c.root1), &named(&c.root2));
            assert_eq!(
                got.is_err(),
                c.want_err,
                "{} -> {} ({} / {}, proof {:?}): {got:?}",
                c.size1,
                c.size2,
                c.root1,
                c.root2,
                c.proof
            );
        }
    }

    #[derive(Deserialize)]
    struct Shapes {
        inclusion: ShapeSet<InclusionShape, InclusionErr>,
        consistency: ShapeSet<ConsistencyShape, ConsistencyErr>,
    }
    #[derive(Deserialize)]
    struct ShapeSet<C, E> {
        errors: Vec<E>,
        cases: Vec<C>,
    }
    #[derive(Deserialize)]
    struct InclusionErr {
        size: u64,
        index: u64,
    }
    #[derive(Deserialize)]
    struct ConsistencyErr {
        size1: u64,
        size2: u64,
    }
    #[derive(Deserialize)]
    struct InclusionShape {
        size: u64,
        index: u64,
        nodes: Vec<[u64; 2]>,
        rehash: Option<[usize; 2]>,
    }
    #[derive(Deserialize)]
    struct ConsistencyShape {
        size1: u64,
        size2: u64,
        nodes: Vec<[u64; 2]>,
        rehash: Option<[usize; 2]>,
    }

    /// The proof transparency-dev's node list describes, over our leaves.
    fn proof_from_nodes(
        leaves: &[Hash],
        nodes: &[[u64; 2]],
        rehash: Option<[usize; 2]>,
    ) -> Vec<Hash> {
        let hashes: Vec<Hash> = nodes
            .iter()
            .map(|&[level, index]| {
                let start = (index << level) as usize;
                root_of(&leaves[start..start + (1usize << level)])
            })
            .collect();
        let (begin, end) = rehash.map_or((0, 0), |[b, e]| (b, e));
        let mut out = Vec::new();
        let mut i = 0;
        while i < hashes.len() {
            if i >= begin && i < end {
                let mut h = hashes[i];
                for next in &hashes[i + 1..end] {
                    h = node_hash(next, &h);
                }
                out.push(h);
                i = end;
            } else {
                out.push(hashes[i]);
                i += 1;
            }
        }
        out
    }

    #[test]
    fn proof_shapes_known_answers() {
        let shapes: Shapes =
            serde_json::from_str(include_str!("../../tests/vectors/merkle/proof-shapes.json"))
                .unwrap_or_else(|e| panic!("{e}"));
        let leaves: Vec<Hash> = (0u32..128).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut src: &[Hash] = &leaves;
        for e in &shapes.inclusion.errors {
            assert!(inclusion_proof(&mut src, e.index, e.size).is_err());
        }
        for c in &shapes.inclusion.cases {
            let want = proof_from_nodes(&leaves, &c.nodes, c.rehash);
            let got = inclusion_proof(&mut src, c.index, c.size);
            assert_eq!(got, Ok(want.clone()), "inclusion {}/{}", c.index, c.size);
            let root = root_of(&leaves[..c.size as usize]);
            assert_eq!(
                verify_inclusion(&leaves[c.index as usize], c.index, c.size, &want, &root),
                Ok(())
            );
        }
        for e in &shapes.consistency.errors {
            assert!(consistency_proof(&mut src, e.size1, e.size2).is_err());
        }
        for c in &shapes.consistency.cases {
            let want = proof_from_nodes(&leaves, &c.nodes, c.rehash);
            let got = consistency_proof(&mut src, c.size1, c.size2);
            assert_eq!(
                got,
                Ok(want.clone()),
                "consistency {} -> {}",
                c.size1,
                c.size2
            );
            let r1 = root_of(&leaves[..c.size1 as usize]);
            let r2 = root_of(&leaves[..c.size2 as usize]);
            assert_eq!(
                verify_consistency(c.size1, c.size2, &want, &r1, &r2),
                Ok(())
            );
        }
    }

    #[test]
    fn round_trips_all_sizes_to_64() {
        let leaves: Vec<Hash> = (0u32..64)
            .map(|i| leaf_hash(format!("entry {i}").as_bytes()))
            .collect();
        let roots: Vec<Hash> = (0..=64).map(|n| root_of(&leaves[..n])).collect();
        let mut src: &[Hash] = &leaves;
        for size in 1..=64u64 {
            let root = roots[size as usize];
            for index in 0..size {
                let proof =
                    inclusion_proof(&mut src, index, size).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(proof.len(), inclusion_proof_len(index, size));
                let leaf = leaves[index as usize];
                assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root), Ok(()));
                // Another leaf, another index or another root never verifies.
                for other in 0..size {
                    if other != index {
                        assert!(
                            verify_inclusion(&leaves[other as usize], index, size, &proof, &root)
                                .is_err()
                        );
                        assert!(verify_inclusion(&leaf, other, size, &proof, &root).is_err());
                    }
                }
                if size > 1 {
                    assert!(
                        verify_inclusion(&leaf, index, size, &proof, &roots[size as usize - 1])
                            .is_err()
                    );
                }
                for i in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[i][31] ^= 1;
                    assert_eq!(
                        verify_inclusion(&leaf, index, size, &bad, &root),
                        Err(VerifyError::RootMismatch)
                    );
                }
            }
            assert_eq!(
                inclusion_proof(&mut src, size, size),
                Err(ProofError::IndexOutOfRange { index: size, size })
            );
        }
        for size2 in 0..=64u64 {
            for size1 in 0..=size2 {
                let (r1, r2) = (roots[size1 as usize], roots[size2 as usize]);
                let proof =
                    consistency_proof(&mut src, size1, size2).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(proof.len(), consistency_proof_len(size1, size2));
                assert_eq!(
                    verify_consistency(size1, size2, &proof, &r1, &r2),
                    Ok(()),
                    "{size1} -> {size2}"
                );
                if size1 > 0 && size1 < size2 {
                    // A different old tree of the same size (one entry rewritten) is exposed.
                    for changed in 0..size1 {
                        let mut rewritten = leaves[..size2 as usize].to_vec();
                        rewritten[changed as usize] = leaf_hash(b"rewritten");
                        let forged_r2 = root_of(&rewritten);
                        let mut forged_src: &[Hash] = &rewritten;
                        let forged = consistency_proof(&mut forged_src, size1, size2)
                            .unwrap_or_else(|e| panic!("{e}"));
                        assert!(
                            verify_consistency(size1, size2, &forged, &r1, &forged_r2).is_err()
                        );
                    }
                    for i in 0..proof.len() {
                        let mut bad = proof.clone();
                        bad[i][0] ^= 0x40;
                        assert!(verify_consistency(size1, size2, &bad, &r1, &r2).is_err());
                    }
                }
            }
        }
        assert_eq!(
            consistency_proof(&mut src, 5, 4),
            Err(ProofError::SizesOutOfOrder { size1: 5, size2: 4 })
        );
        assert_eq!(
            verify_consistency(3, 3, &[], &roots[3], &roots[4]),
            Err(VerifyError::SameSizeRootsDiffer { size: 3 })
        );
    }

    #[test]
    fn streaming_source_and_missing_leaves() {
        let leaves: Vec<Hash> = (0u32..1000).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut reads = 0u64;
        let mut src = FnSource(|i: u64| {
            reads += 1;
            Ok::<_, ()>(leaves[i as usize])
        });
        let proof = inclusion_proof(&mut src, 617, 1000).unwrap_or_else(|_| panic!("read error"));
        assert_eq!(reads, 999, "one read per leaf other than the proven one");
        let root = root_of(&leaves);
        assert_eq!(
            verify_inclusion(&leaves[617], 617, 1000, &proof, &root),
            Ok(())
        );
        let mut short: &[Hash] = &leaves[..10];
        assert_eq!(
            inclusion_proof(&mut short, 3, 20),
            Err(ProofError::Source(MissingLeaf { index: 19, len: 10 }))
        );
    }

    #[test]
    fn large_sizes_do_not_overflow() {
        // Length arithmetic near 2^63 (no leaves are read).
        for (index, size) in [
            (0, u64::MAX),
            (u64::MAX - 1, u64::MAX),
            (1 << 62, (1 << 63) + 5),
        ] {
            let n = inclusion_proof_len(index, size);
            assert!(n <= 128);
            let junk = vec![[7u8; 32]; n];
            assert_eq!(
                verify_inclusion(&[1; 32], index, size, &junk, &[2; 32]),
                Err(VerifyError::RootMismatch)
            );
        }
        let n = consistency_proof_len(u64::MAX - 3, u64::MAX);
        let junk = vec![[7u8; 32]; n];
        assert!(verify_consistency(u64::MAX - 3, u64::MAX, &junk, &[1; 32], &[2; 32]).is_err());
        assert!(verify_inclusion(&[1; 32], 0, 0, &[], &EMPTY_ROOT).is_err());
    }
}
