//! The routing decision: [`plan()`] turns one verified referral, its origin and the
//! [`RoutingTable`] into a [`RoutePlan`] — for each destination, the items routed to it and
//! why; and the items that reach nobody. The rules and the choices behind them are in the
//! [module documentation](super).
//!
//! Guarantees: pure and deterministic (same input, same plan, same order); never panics; the
//! origin is never a destination; every item index appears either under at least one
//! destination or in `unroutable`, never both; an item appears at most once per destination.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::table::RoutingTable;
use crate::ids::ParticipantId;
use crate::wire::country::CountryCode;
use crate::wire::referral::{Priority, Referral};

/// Why an item goes to a destination. The order is strength, strongest first: the primary
/// rules (explicit, country, fallback) before the copies. Serialised in snake_case, as the
/// attestation carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteReason {
    /// The referral's `to` names this destination.
    Explicit,
    /// A hotline covering the item's hosting country.
    Country,
    /// The fallback hotline: no hotline covers the item's hosting country.
    Fallback,
    /// An urgent referral, copied to the LEA of the hosting country or the fallback LEA.
    UrgentLea,
    /// A copy rule on classification matched the item.
    CopyRule,
}

impl RouteReason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Explicit => "explicit",
            Self::Country => "country",
            Self::Fallback => "fallback",
            Self::UrgentLea => "urgent_lea",
            Self::CopyRule => "copy_rule",
        }
    }
}

/// One item routed to one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutedItem {
    /// Index in the referral's `items`.
    pub index: usize,
    /// Every rule that sent the item to this destination; never empty.
    pub reasons: BTreeSet<RouteReason>,
}

impl RoutedItem {
    /// The strongest reason (the first in [`RouteReason`] order).
    pub fn reason(&self) -> Option<RouteReason> {
        self.reasons.first().copied()
    }
}

/// Why an item reaches no destination at all (the daemon sends the origin an `unroutable`
/// notice).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "cause")]
pub enum UnroutableCause {
    /// The referral's `to` names a participant that is not a hotline or an LEA of the
    /// registry: the whole referral is refused, copies included.
    NotAReceiver { to: ParticipantId },
    /// No hotline covers the hosting country, no fallback is configured and no copy applies.
    NoDestination { country: CountryCode },
    /// The rules chose only the origin itself (it is the hotline of the hosting country, the
    /// fallback, or its own `to`), and no copy applies: nothing is forwarded.
    OnlyOrigin { country: CountryCode },
}

/// One item that reaches no destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unroutable {
    /// Index in the referral's `items`.
    pub index: usize,
    #[serde(flatten)]
    pub cause: UnroutableCause,
}

/// What to do with one referral.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutePlan {
    /// Destination → the items routed to it, by index. The referral is forwarded whole to
    /// each destination; the attestation names these items. No empty lists.
    pub destinations: BTreeMap<ParticipantId, Vec<RoutedItem>>,
    /// Items that reach nobody, by index.
    pub unroutable: Vec<Unroutable>,
    /// Indexes of the items of an urgent referral for which there is no LEA: the hosting
    /// country has none and no `fallback_lea` is configured. They are still routed by the
    /// other rules; the daemon should make this visible. (An item whose LEA is the origin
    /// itself is not listed: that LEA already holds it.)
    pub urgent_without_lea: Vec<usize>,
}

impl RoutePlan {
    /// The items routed to `destination` (empty if it is not one).
    pub fn items_for(&self, destination: &ParticipantId) -> &[RoutedItem] {
        self.destinations
            .get(destination)
            .map_or(&[], Vec::as_slice)
    }
}

/// Routes every item of `referral`, sent by `origin`, by the rules of the
/// [module documentation](super).
pub fn plan(referral: &Referral, origin: &ParticipantId, table: &RoutingTable) -> RoutePlan {
    let mut out = RoutePlan::default();

    if let Some(to) = &referral.to
        && !table.is_receiver(to)
    {
        out.unroutable = (0..referral.items.len())
            .map(|index| Unroutable {
                index,
                cause: UnroutableCause::NotAReceiver { to: to.clone() },
            })
            .collect();
        return out;
    }

    let urgent = referral.priority == Priority::Urgent;
    for (index, item) in referral.items.iter().enumerate() {
        let country = item.hosting.country;
        // Every (destination, reason) the rules give, origin included for now.
        let mut found: Vec<(&ParticipantId, RouteReason)> = Vec::new();

        match (&referral.to, table.hotlines(&country)) {
            (Some(to), _) => found.push((to, RouteReason::Explicit)),
            (None, Some(hotlines)) => {
                found.extend(hotlines.iter().map(|h| (h, RouteReason::Country)))
            }
            (None, None) => found.extend(table.fallback().map(|f| (f, RouteReason::Fallback))),
        }
        if urgent {
            match table.lea(&country).or(table.fallback_lea()) {
                Some(lea) => found.push((lea, RouteReason::UrgentLea)),
                None => out.urgent_without_lea.push(index),
            }
        }
        for rule in table.copy_rules() {
            if rule.matches(&item.classification) {
                found.push((&rule.to, RouteReason::CopyRule));
            }
        }

        let mut mine: BTreeMap<&ParticipantId, BTreeSet<RouteReason>> = BTreeMap::new();
        for (destination, reason) in &found {
            if *destination != origin {
                mine.entry(destination).or_default().insert(*reason);
            }
        }
        if mine.is_empty() {
            let cause = if found.is_empty() {
                UnroutableCause::NoDestination { country }
            } else {
                UnroutableCause::OnlyOrigin { country }
            };
            out.unroutable.push(Unroutable { index, cause });
        }
        for (destination, reasons) in mine {
            out.destinations
                .entry(destination.clone())
                .or_default()
                .push(RoutedItem { index, reasons });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::RouteReason::*;
    use super::*;
    use crate::route::table::tests::registry_with;
    use crate::route::table::tests::{cc, example_table, id};
    use crate::route::table::{RoutingConfig, RoutingTable};

    /// A referral with one item per `(country, legal_status)`; synthetic URLs and IPs only.
    fn referral(priority: &str, to: Option<&str>, items: &[(&str, &str)]) -> Referral {
        let items: Vec<serde_json::Value> = items
            .iter()
            .enumerate()
            .map(|(i, (country, legal_status))| {
                serde_json::json!({
                    "url": format!("https://img{i}.example/a/{i}.jpg"),
                    "site_type": "image_host",
                    "third_party_hosted": false,
                    "media_type": "image",
                    "hashes": [],
                    "classification": {
                        "legal_status": legal_status,
                        "assessing_jurisdiction": "FR",
                        "category": "csam",
                        "victim_age_group": "prepubescent",
                        "victim_gender": "unknown",
                    },
                    "hosting": { "ip": "192.0.2.10", "country": country },
                    "assessed_at": "2026-03-01T10:00:00Z",
                })
            })
            .collect();
        let mut body = serde_json::json!({
            "reference": "case-1",
            "public_report_received_at": "2026-03-01T09:00:00Z",
            "priority": priority,
            "items": items,
        });
        if priority == "urgent" {
            body["escalation_reason"] = "a child may be in danger".into();
        }
        if let Some(to) = to {
            body["to"] = to.into();
        }
        let r: Referral = serde_json::from_value(body).unwrap_or_else(|e| panic!("{e}"));
        r.validate("/body").unwrap_or_else(|e| panic!("{e}"));
        r
    }

    fn normal(items: &[(&str, &str)]) -> Referral {
        referral("normal", None, items)
    }

    /// One destination and its `(index, [reasons])`.
    type Dest = (String, Vec<(usize, Vec<RouteReason>)>);

    /// The plan as `destination → [(index, [reasons])]`, for compact assertions.
    fn shape(p: &RoutePlan) -> Vec<Dest> {
        p.destinations
            .iter()
            .map(|(d, items)| {
                (
                    d.to_string(),
                    items
                        .iter()
                        .map(|i| (i.index, i.reasons.iter().copied().collect()))
                        .collect(),
                )
            })
            .collect()
    }

    fn dest(d: &str, items: &[(usize, &[RouteReason])]) -> Dest {
        (
            d.to_owned(),
            items.iter().map(|(i, r)| (*i, r.to_vec())).collect(),
        )
    }

    fn from(origin: &str, r: &Referral) -> RoutePlan {
        let p = plan(r, &id(origin), &example_table());
        assert!(
            !p.destinations.contains_key(&id(origin)),
            "self-delivery: {p:?}"
        );
        p
    }

    #[test]
    fn country() {
        let p = from("be.hotline", &normal(&[("FR", "national")]));
        assert_eq!(shape(&p), [dest("fr.hotline", &[(0, &[Country])])]);
        assert!(p.unroutable.is_empty() && p.urgent_without_lea.is_empty());
        // A country with two hotlines: both.
        let p = from("be.hotline", &normal(&[("DE", "national")]));
        assert_eq!(
            shape(&p),
            [
                dest("de.hotline-a", &[(0, &[Country])]),
                dest("de.hotline-b", &[(0, &[Country])])
            ]
        );
    }

    #[test]
    fn explicit_to_wins_over_country() {
        let r = referral(
            "normal",
            Some("be.hotline"),
            &[("FR", "national"), ("DE", "national")],
        );
        let p = from("fr.hotline", &r);
        assert_eq!(
            shape(&p),
            [dest("be.hotline", &[(0, &[Explicit]), (1, &[Explicit])])]
        );
        // An LEA may be named too.
        let r = referral("normal", Some("de.police"), &[("FR", "national")]);
        assert_eq!(
            shape(&from("fr.hotline", &r)),
            [dest("de.police", &[(0, &[Explicit])])]
        );
    }

    #[test]
    fn explicit_to_that_cannot_receive_refuses_the_whole_referral() {
        for to in ["zz.nobody", "net.broker"] {
            // Urgent and baseline: neither the LEA copy nor the copy rule goes out.
            let r = referral(
                "urgent",
                Some(to),
                &[("FR", "baseline"), ("DE", "national")],
            );
            let p = from("be.hotline", &r);
            assert!(p.destinations.is_empty(), "{p:?}");
            let cause = UnroutableCause::NotAReceiver { to: id(to) };
            assert_eq!(
                p.unroutable,
                [
                    Unroutable {
                        index: 0,
                        cause: cause.clone()
                    },
                    Unroutable { index: 1, cause }
                ]
            );
        }
    }

    #[test]
    fn fallback_when_no_hotline_covers_the_country() {
        // IT: no hotline in the registry; XX: an explicit empty list.
        let p = from(
            "fr.hotline",
            &normal(&[("IT", "national"), ("XX", "national")]),
        );
        assert_eq!(
            shape(&p),
            [dest(
                "int.fallback-hotline",
                &[(0, &[Fallback]), (1, &[Fallback])]
            )]
        );
        assert!(p.unroutable.is_empty());
    }

    #[test]
    fn urgent_copies_to_the_country_lea_or_the_fallback_lea() {
        let r = referral("urgent", None, &[("FR", "national"), ("BE", "national")]);
        let p = from("de.hotline-a", &r);
        assert_eq!(
            shape(&p),
            [
                dest("be.hotline", &[(1, &[Country])]),
                dest("fr.hotline", &[(0, &[Country])]),
                dest("fr.police", &[(0, &[UrgentLea])]),
                // BE has no LEA: the fallback LEA.
                dest("int.police", &[(1, &[UrgentLea])]),
            ]
        );
        assert!(p.urgent_without_lea.is_empty());
        // Normal priority: no LEA.
        let p = from("de.hotline-a", &normal(&[("FR", "national")]));
        assert_eq!(shape(&p), [dest("fr.hotline", &[(0, &[Country])])]);
    }

    #[test]
    fn urgent_with_explicit_to_still_copies_to_the_lea() {
        let r = referral("urgent", Some("be.hotline"), &[("DE", "national")]);
        let p = from("fr.hotline", &r);
        assert_eq!(
            shape(&p),
            [
                dest("be.hotline", &[(0, &[Explicit])]),
                dest("de.police", &[(0, &[UrgentLea])])
            ]
        );
    }

    #[test]
    fn urgent_without_any_lea_is_reported_and_still_routed() {
        let config: RoutingConfig =
            toml::from_str("[lea]\nFR = \"fr.police\"").unwrap_or_else(|e| panic!("{e}"));
        let table =
            RoutingTable::resolve(&config, &registry_with("")).unwrap_or_else(|e| panic!("{e}"));
        // BE: no LEA, no fallback LEA. FR: its LEA is the origin, which holds the item.
        let r = referral("urgent", None, &[("BE", "national"), ("FR", "national")]);
        let p = plan(&r, &id("fr.police"), &table);
        assert_eq!(
            shape(&p),
            [
                dest("be.hotline", &[(0, &[Country])]),
                dest("fr.hotline", &[(1, &[Country])])
            ]
        );
        assert_eq!(p.urgent_without_lea, [0]);
    }

    #[test]
    fn multi_country_split() {
        let r = normal(&[
            ("DE", "national"),
            ("BE", "national"),
            ("DE", "national"),
            ("IT", "national"),
        ]);
        let p = from("fr.hotline", &r);
        assert_eq!(
            shape(&p),
            [
                dest("be.hotline", &[(1, &[Country])]),
                dest("de.hotline-a", &[(0, &[Country]), (2, &[Country])]),
                dest("de.hotline-b", &[(0, &[Country]), (2, &[Country])]),
                dest("int.fallback-hotline", &[(3, &[Fallback])]),
            ]
        );
    }

    #[test]
    fn copy_rule_on_classification() {
        let p = from(
            "fr.hotline",
            &normal(&[("BE", "baseline"), ("BE", "national")]),
        );
        assert_eq!(
            shape(&p),
            [
                dest("be.hotline", &[(0, &[Country]), (1, &[Country])]),
                dest("int.interpol", &[(0, &[CopyRule])]),
            ]
        );
    }

    #[test]
    fn no_self_delivery() {
        // The origin is FR's only hotline: the FR item is not sent back, nor to the fallback.
        let p = from(
            "fr.hotline",
            &normal(&[("FR", "national"), ("BE", "national")]),
        );
        assert_eq!(shape(&p), [dest("be.hotline", &[(1, &[Country])])]);
        assert_eq!(
            p.unroutable,
            [Unroutable {
                index: 0,
                cause: UnroutableCause::OnlyOrigin { country: cc("FR") }
            }]
        );
        // One of two DE hotlines: the other still gets it.
        let p = from("de.hotline-a", &normal(&[("DE", "national")]));
        assert_eq!(shape(&p), [dest("de.hotline-b", &[(0, &[Country])])]);
        // The fallback itself reporting an uncovered country: not sent to itself.
        let p = from("int.fallback-hotline", &normal(&[("IT", "national")]));
        assert!(p.destinations.is_empty());
        assert_eq!(
            p.unroutable[0].cause,
            UnroutableCause::OnlyOrigin { country: cc("IT") }
        );
        // Explicit `to` naming the origin.
        let r = referral("normal", Some("be.hotline"), &[("FR", "national")]);
        let p = from("be.hotline", &r);
        assert_eq!(
            p.unroutable[0].cause,
            UnroutableCause::OnlyOrigin { country: cc("FR") }
        );
        // The origin's own item still goes to the LEA and the copy rule.
        let p = from(
            "fr.hotline",
            &referral("urgent", None, &[("FR", "baseline")]),
        );
        assert_eq!(
            shape(&p),
            [
                dest("fr.police", &[(0, &[UrgentLea])]),
                dest("int.interpol", &[(0, &[CopyRule])])
            ]
        );
        assert!(p.unroutable.is_empty());
        // The copy target sending a matching item: not copied to itself.
        let p = from("int.interpol", &normal(&[("BE", "baseline")]));
        assert_eq!(shape(&p), [dest("be.hotline", &[(0, &[Country])])]);
    }

    #[test]
    fn unroutable_when_nothing_applies() {
        let table = RoutingTable::resolve(
            &toml::from_str("fallback_lea = \"int.police\"\n[lea]\nFR = \"fr.police\"")
                .unwrap_or_else(|e| panic!("{e}")),
            &registry_with(""),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        // No hotline in IT, no fallback, no copy rule: item 0 reaches nobody.
        let p = plan(
            &normal(&[("IT", "baseline"), ("BE", "national")]),
            &id("fr.hotline"),
            &table,
        );
        assert_eq!(shape(&p), [dest("be.hotline", &[(1, &[Country])])]);
        assert_eq!(
            p.unroutable,
            [Unroutable {
                index: 0,
                cause: UnroutableCause::NoDestination { country: cc("IT") }
            }]
        );
        // Copies alone make an item routable: urgent, the fallback LEA takes it.
        let p = plan(
            &referral("urgent", None, &[("IT", "national")]),
            &id("fr.hotline"),
            &table,
        );
        assert_eq!(shape(&p), [dest("int.police", &[(0, &[UrgentLea])])]);
        assert!(p.unroutable.is_empty() && p.urgent_without_lea.is_empty());
    }

    #[test]
    fn duplicates_are_merged_with_every_reason() {
        // int.interpol: explicit `to`, and the copy rule for a baseline item.
        let r = referral(
            "urgent",
            Some("int.interpol"),
            &[("BE", "baseline"), ("DE", "national")],
        );
        let p = from("fr.hotline", &r);
        assert_eq!(
            shape(&p),
            [
                dest("de.police", &[(1, &[UrgentLea])]),
                dest(
                    "int.interpol",
                    &[(0, &[Explicit, CopyRule]), (1, &[Explicit])]
                ),
                dest("int.police", &[(0, &[UrgentLea])]),
            ]
        );
        let first = &p.items_for(&id("int.interpol"))[0];
        assert_eq!(first.reason(), Some(Explicit));
        // Two copy rules to the same destination: listed once.
        let config: RoutingConfig = toml::from_str(
            "[lea]\nFR = \"fr.police\"\n[[copy]]\nlegal_status = \"baseline\"\nto = \"int.interpol\"\n\
             [[copy]]\ncategory = \"csam\"\nto = \"int.interpol\"",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let table =
            RoutingTable::resolve(&config, &registry_with("")).unwrap_or_else(|e| panic!("{e}"));
        let p = plan(&normal(&[("BE", "baseline")]), &id("fr.hotline"), &table);
        assert_eq!(p.items_for(&id("int.interpol")).len(), 1);
    }

    #[test]
    fn serialised_forms() {
        let p = from(
            "fr.hotline",
            &normal(&[("FR", "baseline"), ("IT", "national")]),
        );
        assert_eq!(
            serde_json::to_value(&p).unwrap_or_else(|e| panic!("{e}")),
            serde_json::json!({
                "destinations": {
                    "int.fallback-hotline": [{ "index": 1, "reasons": ["fallback"] }],
                    "int.interpol": [{ "index": 0, "reasons": ["copy_rule"] }],
                },
                "unroutable": [],
                "urgent_without_lea": [],
            })
        );
        let u = Unroutable {
            index: 3,
            cause: UnroutableCause::OnlyOrigin { country: cc("FR") },
        };
        assert_eq!(
            serde_json::to_value(&u).unwrap_or_else(|e| panic!("{e}")),
            serde_json::json!({ "index": 3, "cause": "only_origin", "country": "FR" })
        );
        for r in [Explicit, Country, Fallback, UrgentLea, CopyRule] {
            assert_eq!(serde_json::to_value(r).ok(), Some(r.as_str().into()));
        }
    }

    const COUNTRIES: [&str; 7] = ["FR", "DE", "BE", "IT", "XX", "NL", "AT"];
    const PARTICIPANTS: [&str; 10] = [
        "fr.hotline",
        "de.hotline-a",
        "de.hotline-b",
        "be.hotline",
        "int.fallback-hotline",
        "fr.police",
        "de.police",
        "int.police",
        "int.interpol",
        "net.broker",
    ];

    proptest::proptest! {
        /// The guarantees of this file's documentation, on random referrals.
        #[test]
        fn plan_invariants(
            items in proptest::collection::vec((0..COUNTRIES.len(), proptest::bool::ANY), 1..12),
            urgent in proptest::bool::ANY,
            to in proptest::option::of(0..PARTICIPANTS.len() + 1),
            origin in 0..PARTICIPANTS.len() - 1,
        ) {
            let items: Vec<(&str, &str)> = items
                .iter()
                .map(|&(c, b)| (COUNTRIES[c], if b { "baseline" } else { "national" }))
                .collect();
            let to = to.map(|i| PARTICIPANTS.get(i).copied().unwrap_or("zz.nobody"));
            let r = referral(if urgent { "urgent" } else { "normal" }, to, &items);
            let origin = id(PARTICIPANTS[origin]);
            let table = example_table();
            let p = plan(&r, &origin, &table);
            proptest::prop_assert_eq!(&p, &plan(&r, &origin, &table));
            proptest::prop_assert!(!p.destinations.contains_key(&origin));
            for index in 0..items.len() {
                let routed = p
                    .destinations
                    .values()
                    .filter(|list| list.iter().any(|i| i.index == index))
                    .count();
                let unroutable = p.unroutable.iter().filter(|u| u.index == index).count();
                proptest::prop_assert!(unroutable <= 1);
                proptest::prop_assert!((routed > 0) != (unroutable == 1), "item {}: {:?}", index, p);
            }
            for list in p.destinations.values() {
                proptest::prop_assert!(!list.is_empty());
                proptest::prop_assert!(list.windows(2).all(|w| w[0].index < w[1].index));
                proptest::prop_assert!(list.iter().all(|i| !i.reasons.is_empty()));
            }
        }
    }
}
