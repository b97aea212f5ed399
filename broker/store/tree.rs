//! The Merkle tree's right edge (a compact range from 0): one perfect subtree hash per set
//! bit of the size, enough to extend the tree by a leaf and to compute the RFC 9162 root at
//! the current size in O(log n). Older roots and proofs are computed from leaf hashes by
//! the audit code.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// RFC 9162 interior node hash: SHA-256(0x01 || left || right).
pub(super) fn node(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The right edge of a tree of `size` leaves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Frontier {
    size: u64,
    /// Perfect subtree roots, largest (leftmost) first; heights are the set bits of `size`.
    #[serde(with = "hexes")]
    hashes: Vec<[u8; 32]>,
}

impl Frontier {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Adds the next leaf.
    pub fn push(&mut self, leaf: [u8; 32]) {
        let mut h = leaf;
        // Merge while the lowest bits of the size are set (binary carry).
        let mut s = self.size;
        while s & 1 == 1 {
            // One subtree per set bit, so there is one to pop.
            let left = self.hashes.pop().expect("a set bit has its subtree");
            h = node(&left, &h);
            s >>= 1;
        }
        self.hashes.push(h);
        self.size += 1;
    }

    /// The root at the current size (SHA-256 of nothing for the empty tree).
    pub fn root(&self) -> [u8; 32] {
        let mut it = self.hashes.iter().rev();
        let Some(last) = it.next() else {
            return Sha256::digest([]).into();
        };
        it.fold(*last, |acc, left| node(left, &acc))
    }
}

mod hexes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(hex::encode))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        v.iter()
            .map(|s| {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).map_err(serde::de::Error::custom)?;
                Ok(out)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::entry::leaf_hash;

    /// RFC 9162 §2.1.1 MTH, straight from the definition.
    fn mth(leaves: &[[u8; 32]]) -> [u8; 32] {
        match leaves.len() {
            0 => Sha256::digest([]).into(),
            1 => leaves[0],
            n => {
                // The largest power of two smaller than n.
                let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
                node(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    #[test]
    fn frontier_root_is_the_rfc_root_at_every_size() {
        let leaves: Vec<[u8; 32]> = (0u32..70).map(|i| leaf_hash(&i.to_le_bytes())).collect();
        let mut f = Frontier::default();
        assert_eq!(f.root(), mth(&[]));
        for (i, l) in leaves.iter().enumerate() {
            f.push(*l);
            assert_eq!(f.root(), mth(&leaves[..=i]), "size {}", i + 1);
        }
        let back: Frontier = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn known_answer_rfc6962_empty_and_one() {
        // transparency-dev/merkle rfc6962 tests: empty root and leaf hash of "".
        assert_eq!(
            hex::encode(Frontier::default().root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex::encode(leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }
}
