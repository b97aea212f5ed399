//! The bounds of the message contract, in one place.
//!
//! Every bound here is also written in the JSON Schemas (`maxLength`, `maxItems`, `maximum`)
//! except [`MAX_BODY_BYTES`] and [`MAX_DEPTH`], which JSON Schema cannot express: the ingress
//! checks the size before anything else, and [`super::depth`] checks the depth before the JSON
//! parser runs. A test (`tests/contract.rs`) walks the schema examples through both the schemas
//! and these types, so the two cannot drift apart unnoticed.
//!
//! Text lengths are counted in Unicode code points, as JSON Schema's `maxLength` counts them,
//! so the schema and the types agree on every string. The one bound in bytes is the URL's:
//! the contract requires the URL's ASCII form, where characters and bytes are the same.

/// Largest AMQP body accepted: 256 KiB of UTF-8 JSON (checked by the ingress, before this module).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Deepest JSON nesting accepted; the envelope object itself is level 1.
pub const MAX_DEPTH: usize = 16;

/// Items in one referral: 1 ..= this.
pub const MAX_ITEMS: usize = 500;

/// Longest item URL, in bytes (the URL is ASCII, so also in characters).
pub const MAX_URL_BYTES: usize = 4096;

/// Hashes on one item: 0 ..= this, no repeats.
pub const MAX_HASHES: usize = 32;

/// Longest `referral.notes`, in characters (about 4 KiB of mostly-ASCII text).
pub const MAX_NOTES_CHARS: usize = 4096;

/// Longest `referral.reference` and `status.lea_case_number` (case ids), in characters.
pub const MAX_CASE_ID_CHARS: usize = 128;

/// Longest reason or note (`escalation_reason`, receipt/status/retraction `reason`, status
/// `note`, notice `detail`), in characters.
pub const MAX_REASON_CHARS: usize = 1024;

/// Longest notice `message`, in characters.
pub const MAX_MESSAGE_CHARS: usize = 512;

/// Longest name (`hosting.provider`, `hosting.cdn`, checkpoint `log`), in characters.
pub const MAX_NAME_CHARS: usize = 256;

/// Longest checkpoint `note` (the C2SP signed note), in characters.
pub const MAX_SIGNED_NOTE_CHARS: usize = 4096;

/// Longest `tmk_pdqf` hash value, in base64 characters (1536 bytes: the 1024-byte level-1
/// PDQF vector plus a header; a full TMK file, about 256 KiB, does not fit in a message).
pub const MAX_TMK_PDQF_CHARS: usize = 2048;

/// Size of a PhotoDNA hash, in bytes (192 base64 characters).
pub const PHOTODNA_BYTES: usize = 144;

/// Largest item index (`status.item`, `notice.items`): `MAX_ITEMS - 1`.
pub const MAX_ITEM_INDEX: u16 = (MAX_ITEMS - 1) as u16;

/// Largest checkpoint tree size: 2^53 - 1, the largest integer every JSON parser holds exactly.
pub const MAX_TREE_SIZE: u64 = (1 << 53) - 1;
