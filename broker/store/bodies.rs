//! (being written)
#[allow(dead_code)]
pub(super) struct Bodies;
