//! (being written)
#[allow(dead_code)]
pub(super) struct Handle;
