//! The tree's right edge as the store keeps it: the audit code's
//! [`CompactTree`](crate::audit::merkle::CompactTree) (one perfect subtree hash per set bit
//! of the size), with a serialised form so sled can hold it next to the `applied` marker.
//! Extending by a leaf and the root at the current size are O(log n); older roots and
//! proofs come from leaf hashes through [`crate::audit::merkle`].

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::audit::merkle::CompactTree;

/// The tree of the first `size()` entries, reduced to its right edge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Frontier(CompactTree);

impl Frontier {
    pub fn size(&self) -> u64 {
        self.0.size()
    }

    /// Adds the next leaf hash.
    pub fn push(&mut self, leaf: [u8; 32]) {
        self.0.push(leaf);
    }

    /// RFC 9162 root at the current size.
    pub fn root(&self) -> [u8; 32] {
        self.0.root()
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    size: u64,
    subtrees: Vec<String>,
}

impl Serialize for Frontier {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Stored {
            size: self.0.size(),
            subtrees: self.0.subtrees().iter().map(hex::encode).collect(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Frontier {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let st = Stored::deserialize(d)?;
        let hashes = st
            .subtrees
            .iter()
            .map(|h| {
                let mut out = [0u8; 32];
                hex::decode_to_slice(h, &mut out).map(|()| out)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(serde::de::Error::custom)?;
        CompactTree::from_parts(st.size, hashes)
            .map(Frontier)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::merkle::root_of;
    use crate::store::entry::leaf_hash;

    #[test]
    fn frontier_root_is_the_rfc_root_at_every_size_and_survives_storage() {
        let leaves: Vec<[u8; 32]> = (0u32..70).map(|i| leaf_hash(&i.to_le_bytes())).collect();
        let mut f = Frontier::default();
        assert_eq!(f.root(), root_of(&[]));
        for (i, l) in leaves.iter().enumerate() {
            f.push(*l);
            assert_eq!(f.root(), root_of(&leaves[..=i]), "size {}", i + 1);
            let back: Frontier = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
            assert_eq!(back, f);
        }
        assert!(serde_json::from_str::<Frontier>(r#"{"size":3,"subtrees":[]}"#).is_err());
    }
}
