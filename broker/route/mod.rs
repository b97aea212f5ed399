//! Routing: which participants receive which items of a referral, and why.
//!
//! Pure code (no I/O, no tokio): the daemon calls [`plan()`] once per verified referral and
//! publishes the referral whole to each destination of the returned [`RoutePlan`], with an
//! attestation naming that destination's items and their [`RouteReason`]s.
//!
//! - [`table`]: the `[routing]` section of `broker.toml` ([`RoutingConfig`]) and the
//!   [`RoutingTable`] it resolves to against the registry, validated once at load.
//! - [`plan`](mod@plan): the decision itself, [`plan()`].
//!
//! # The contract
//!
//! Per item, a *primary* rule picks the participant(s) expected to act on it:
//! 1. the referral's explicit `to`, when the sender named one ([`RouteReason::Explicit`]);
//! 2. else the hotline(s) of the item's `hosting.country` ([`RouteReason::Country`]);
//! 3. else, only when no hotline covers that country, the configured `fallback` hotline
//!    ([`RouteReason::Fallback`]).
//!
//! Then, whatever the primary rule chose, *copies*:
//! - a referral with `priority: urgent` copies every item to the LEA of the item's hosting
//!   country, or to `fallback_lea` when that country has none ([`RouteReason::UrgentLea`]);
//! - each copy rule whose conditions match the item's classification copies it to the rule's
//!   participant ([`RouteReason::CopyRule`]).
//!
//! Decisions made here, with their reasons:
//! - **Country table: explicit overrides derived, per country.** Without configuration the
//!   table is derived from the registry (every `hotline` serves its `country`, every `lea` is
//!   its country's LEA), so adding a participant needs no second file edit. A country listed in
//!   `[routing.countries]` / `[routing.lea]` replaces the derived entry for that country only
//!   (delegation, a suspended hotline, several LEAs); an empty list (`XX = []`) says that no
//!   hotline covers `XX`, so its items go to the fallback.
//! - **The origin never receives its own referral, and removing it never moves an item to
//!   the next rule.** The origin is dropped from the destinations after every rule has run.
//!   A country whose only hotline is the origin *is* covered (by the origin, which already
//!   holds the item): its items do not go to the fallback, whose job is countries nobody
//!   covers. Such an item with no copy elsewhere is unroutable with
//!   [`UnroutableCause::OnlyOrigin`], so the sender is told that nothing was forwarded.
//! - **An explicit `to` that cannot receive referrals refuses the whole referral.** `to`
//!   names a participant that is not in the registry or is not a hotline or an LEA: every
//!   item is unroutable ([`UnroutableCause::NotAReceiver`]), with no copies either, rather
//!   than sending a referral the sender addressed elsewhere to someone it did not pick. The
//!   sender gets a notice and resends with a correct `to`.
//! - **Duplicates are merged, keeping every reason.** An item that reaches one destination by
//!   several rules is listed once for it, with the set of reasons (ordered strongest first:
//!   explicit, country, fallback, urgent_lea, copy_rule), so the attestation can say all of
//!   them and [`RoutedItem::reason`] gives the strongest.
//! - **An urgent item with no LEA anywhere is still routed**, and listed in
//!   [`RoutePlan::urgent_without_lea`] so the daemon can make the gap visible. The LEA being
//!   the origin is not such a gap (it holds the item), and does not move the copy to
//!   `fallback_lea`.
//! - Output is deterministic: destinations sorted by id, items by index, reasons by strength.
//!
//! Not decided here: URL deduplication per destination (a later step may drop items from a
//! destination's list), and anything about delivery.

pub mod plan;
pub mod table;

pub use plan::{RoutePlan, RouteReason, RoutedItem, Unroutable, UnroutableCause, plan};
pub use table::{CopyRule, RoutingConfig, RoutingConfigError, RoutingTable};
