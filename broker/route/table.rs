//! The routing table: the `[routing]` section of `broker.toml` as written
//! ([`RoutingConfig`]) and, resolved against the registry, the table [`plan`](super::plan())
//! reads ([`RoutingTable`]).
//!
//! ```toml
//! [routing]
//! fallback = "int.fallback-hotline"   # optional: hotline for items of a country no hotline covers
//! fallback_lea = "int.police"         # optional: LEA for urgent items of a country with no LEA
//! [routing.countries]                 # optional: overrides the registry, per country
//! FR = ["fr.hotline"]
//! XX = []                             # no hotline covers XX: its items go to the fallback
//! [routing.lea]                       # optional: overrides the registry, per country
//! FR = "fr.police"
//! [[routing.copy]]                    # copy every item whose classification matches
//! legal_status = "baseline"           # conditions: legal_status, category, victim_age_group
//! to = "int.interpol"
//! ```
//!
//! What [`RoutingTable::resolve`] guarantees (anything else is a [`RoutingConfigError`] naming
//! the field, e.g. `routing.countries.FR[1]`):
//! - every participant named exists in the registry with a suitable role: `hotline` for
//!   `fallback` and `countries`, `lea` for `fallback_lea` and `lea`, `hotline` or `lea` for a
//!   copy rule's `to`;
//! - country keys are ISO 3166-1 alpha-2 in upper case (the wire's form); no list repeats a
//!   participant; every copy rule has at least one condition;
//! - a country whose LEA is derived from the registry has exactly one LEA participant there
//!   (several: name one in `[routing.lea]`).
//!
//! The table is a snapshot: a changed registry or config needs a new `resolve`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::ParticipantId;
use crate::registry::{Registry, Role};
use crate::wire::country::CountryCode;
use crate::wire::item::{AgeGroup, Category, Classification, LegalStatus};

/// `[routing]` as written in `broker.toml`. Unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Hotline for items of a country that no hotline covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<ParticipantId>,
    /// LEA for urgent items of a country that has no LEA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_lea: Option<ParticipantId>,
    /// Country → hotlines, overriding the registry for the countries listed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub countries: BTreeMap<String, Vec<ParticipantId>>,
    /// Country → LEA, overriding the registry for the countries listed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lea: BTreeMap<String, ParticipantId>,
    /// Copy rules on classification, `[[routing.copy]]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy: Vec<CopyRule>,
}

/// Copy every item whose classification matches all the given conditions to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legal_status: Option<LegalStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub victim_age_group: Option<AgeGroup>,
    pub to: ParticipantId,
}

impl CopyRule {
    /// Whether the rule has at least one condition (validated at load: an empty rule would
    /// copy everything, more likely a mistake than a wish).
    fn has_condition(&self) -> bool {
        self.legal_status.is_some() || self.category.is_some() || self.victim_age_group.is_some()
    }

    /// Whether every condition of the rule holds for `c`.
    pub fn matches(&self, c: &Classification) -> bool {
        self.legal_status.is_none_or(|s| s == c.legal_status)
            && self.category.is_none_or(|s| s == c.category)
            && self
                .victim_age_group
                .is_none_or(|s| s == c.victim_age_group)
    }
}

/// Why a routing configuration does not fit the registry. `field` is the TOML path, e.g.
/// `routing.countries.FR[1]` or `routing.copy[0].to`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RoutingConfigError {
    #[error("{field}: participant {id} is not in the registry")]
    UnknownParticipant { field: String, id: ParticipantId },
    #[error("{field}: participant {id} has role {actual}, expected {expected}")]
    WrongRole {
        field: String,
        id: ParticipantId,
        actual: Role,
        expected: &'static str,
    },
    #[error("{field}: {code:?} is not an ISO 3166-1 alpha-2 country code in upper case (e.g. FR)")]
    BadCountry { field: String, code: String },
    #[error("{field}: participant {id} is listed twice")]
    Repeated { field: String, id: ParticipantId },
    #[error(
        "{field}: a copy rule needs at least one condition \
         (legal_status, category or victim_age_group)"
    )]
    EmptyCopyRule { field: String },
    #[error(
        "routing.lea: country {country} has {} LEA participants in the registry ({}); \
         name the one that takes urgent copies in [routing.lea]",
        candidates.len(),
        list(candidates)
    )]
    AmbiguousLea {
        country: CountryCode,
        candidates: Vec<ParticipantId>,
    },
    /// The registry gave a participant a country this module cannot read (the registry checks
    /// the same form, so this means the two disagree).
    #[error("registry: participant {id} has country {code:?}, not an upper-case alpha-2 code")]
    RegistryCountry { id: ParticipantId, code: String },
}

fn list(ids: &[ParticipantId]) -> String {
    ids.iter()
        .map(ParticipantId::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The resolved routing table; see the module documentation for what it guarantees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingTable {
    hotlines: BTreeMap<CountryCode, Vec<ParticipantId>>,
    lea: BTreeMap<CountryCode, ParticipantId>,
    fallback: Option<ParticipantId>,
    fallback_lea: Option<ParticipantId>,
    copy: Vec<CopyRule>,
    /// Every hotline and LEA of the registry: who an explicit `to` may name.
    receivers: BTreeSet<ParticipantId>,
}

/// Which roles a field accepts.
#[derive(Clone, Copy)]
enum Want {
    Hotline,
    Lea,
    Receiver,
}

impl Want {
    fn accepts(self, role: Role) -> bool {
        match self {
            Want::Hotline => role == Role::Hotline,
            Want::Lea => role == Role::Lea,
            Want::Receiver => matches!(role, Role::Hotline | Role::Lea),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Want::Hotline => "hotline",
            Want::Lea => "lea",
            Want::Receiver => "hotline or lea",
        }
    }
}

fn check(
    registry: &Registry,
    field: impl FnOnce() -> String,
    id: &ParticipantId,
    want: Want,
) -> Result<(), RoutingConfigError> {
    match registry.get(id) {
        None => Err(RoutingConfigError::UnknownParticipant {
            field: field(),
            id: id.clone(),
        }),
        Some(p) if !want.accepts(p.role) => Err(RoutingConfigError::WrongRole {
            field: field(),
            id: id.clone(),
            actual: p.role,
            expected: want.name(),
        }),
        Some(_) => Ok(()),
    }
}

fn country(field: impl FnOnce() -> String, code: &str) -> Result<CountryCode, RoutingConfigError> {
    code.parse().map_err(|_| RoutingConfigError::BadCountry {
        field: field(),
        code: code.to_owned(),
    })
}

impl RoutingTable {
    /// Checks `config` against `registry` and merges it with what the registry implies:
    /// explicit entries override the derived ones, per country.
    pub fn resolve(
        config: &RoutingConfig,
        registry: &Registry,
    ) -> Result<Self, RoutingConfigError> {
        if let Some(id) = &config.fallback {
            check(registry, || "routing.fallback".into(), id, Want::Hotline)?;
        }
        if let Some(id) = &config.fallback_lea {
            check(registry, || "routing.fallback_lea".into(), id, Want::Lea)?;
        }

        // Derived from the registry.
        let mut hotlines: BTreeMap<CountryCode, Vec<ParticipantId>> = BTreeMap::new();
        let mut leas: BTreeMap<CountryCode, Vec<ParticipantId>> = BTreeMap::new();
        let mut receivers = BTreeSet::new();
        for p in registry.participants() {
            let derived = match p.role {
                Role::Hotline => &mut hotlines,
                Role::Lea => &mut leas,
                Role::Operator => continue,
            };
            receivers.insert(p.id.clone());
            if let Some(code) = &p.country {
                let code = code
                    .parse()
                    .map_err(|_| RoutingConfigError::RegistryCountry {
                        id: p.id.clone(),
                        code: code.clone(),
                    })?;
                derived.entry(code).or_default().push(p.id.clone());
            }
        }

        // Explicit entries replace the derived ones, country by country.
        for (code, ids) in &config.countries {
            let at = |suffix: &str| format!("routing.countries.{code}{suffix}");
            let code = country(|| at(""), code)?;
            for (i, id) in ids.iter().enumerate() {
                let field = || at(&format!("[{i}]"));
                check(registry, field, id, Want::Hotline)?;
                if ids[..i].contains(id) {
                    return Err(RoutingConfigError::Repeated {
                        field: field(),
                        id: id.clone(),
                    });
                }
            }
            hotlines.insert(code, ids.clone());
        }
        let mut lea = BTreeMap::new();
        for (code, id) in &config.lea {
            let field = || format!("routing.lea.{code}");
            let code = country(field, code)?;
            check(registry, field, id, Want::Lea)?;
            lea.insert(code, id.clone());
        }
        for (code, candidates) in leas {
            if lea.contains_key(&code) {
                continue;
            }
            match <[ParticipantId; 1]>::try_from(candidates) {
                Ok([one]) => {
                    lea.insert(code, one);
                }
                Err(candidates) => {
                    return Err(RoutingConfigError::AmbiguousLea {
                        country: code,
                        candidates,
                    });
                }
            }
        }

        for (i, rule) in config.copy.iter().enumerate() {
            if !rule.has_condition() {
                return Err(RoutingConfigError::EmptyCopyRule {
                    field: format!("routing.copy[{i}]"),
                });
            }
            check(
                registry,
                || format!("routing.copy[{i}].to"),
                &rule.to,
                Want::Receiver,
            )?;
        }

        Ok(Self {
            hotlines,
            lea,
            fallback: config.fallback.clone(),
            fallback_lea: config.fallback_lea.clone(),
            copy: config.copy.clone(),
            receivers,
        })
    }

    /// The hotlines covering `country`, or `None` when no hotline covers it (no hotline of
    /// that country in the registry, or an explicit empty list).
    pub fn hotlines(&self, country: &CountryCode) -> Option<&[ParticipantId]> {
        self.hotlines
            .get(country)
            .map(Vec::as_slice)
            .filter(|ids| !ids.is_empty())
    }

    /// The LEA taking urgent copies for `country`, if it has one.
    pub fn lea(&self, country: &CountryCode) -> Option<&ParticipantId> {
        self.lea.get(country)
    }

    pub fn fallback(&self) -> Option<&ParticipantId> {
        self.fallback.as_ref()
    }

    pub fn fallback_lea(&self) -> Option<&ParticipantId> {
        self.fallback_lea.as_ref()
    }

    pub fn copy_rules(&self) -> &[CopyRule] {
        &self.copy
    }

    /// Whether `id` may be named by a referral's explicit `to`: a hotline or an LEA of the
    /// registry.
    pub fn is_receiver(&self, id: &ParticipantId) -> bool {
        self.receivers.contains(id)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::signing::Signer;

    /// A registry with the broker, hotlines in FR (one), DE (two), BE, an international
    /// fallback hotline, LEAs in FR and DE, an international LEA, and a receive-only
    /// international LEA (`int.interpol`).
    pub(crate) fn registry_with(extra: &str) -> Registry {
        let mut text = format!(
            r#"
broker = "net.broker"
[[participant]]
id = "net.broker"
name = "Broker"
role = "operator"
[[participant.key]]
public_key = "{}"
not_before = "2026-01-01T00:00:00Z"
"#,
            Signer::from_seed([1; 32]).public_key_b64()
        );
        for (id, role, country) in [
            ("fr.hotline", "hotline", "FR"),
            ("de.hotline-a", "hotline", "DE"),
            ("de.hotline-b", "hotline", "DE"),
            ("be.hotline", "hotline", "BE"),
            ("int.fallback-hotline", "hotline", "NL"),
            ("fr.police", "lea", "FR"),
            ("de.police", "lea", "DE"),
            ("int.police", "lea", "FR"),
            ("int.interpol", "lea", "AT"),
        ] {
            text += &format!(
                "[[participant]]\nid = \"{id}\"\nname = \"{id} (example)\"\nrole = \"{role}\"\n\
                 country = \"{country}\"\n"
            );
        }
        text += extra;
        Registry::from_toml(&text, "registry.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    pub(crate) fn id(s: &str) -> ParticipantId {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    pub(crate) fn cc(s: &str) -> CountryCode {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn config(text: &str) -> RoutingConfig {
        #[derive(Deserialize)]
        struct File {
            routing: RoutingConfig,
        }
        toml::from_str::<File>(text)
            .unwrap_or_else(|e| panic!("{e}"))
            .routing
    }

    /// The table of the module documentation's example, adapted to [`registry_with`]. FR has
    /// two LEAs in that registry (fr.police, int.police), so FR's LEA is named explicitly.
    pub(crate) const EXAMPLE: &str = r#"
[routing]
fallback = "int.fallback-hotline"
fallback_lea = "int.police"
[routing.countries]
FR = ["fr.hotline"]
XX = []
[routing.lea]
FR = "fr.police"
[[routing.copy]]
legal_status = "baseline"
to = "int.interpol"
"#;

    pub(crate) fn example_table() -> RoutingTable {
        RoutingTable::resolve(&config(EXAMPLE), &registry_with(""))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn fails(text: &str) -> RoutingConfigError {
        match RoutingTable::resolve(&config(text), &registry_with("")) {
            Ok(t) => panic!("expected an error, resolved {t:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn explicit_overrides_derived_per_country() {
        let t = example_table();
        assert_eq!(t.hotlines(&cc("FR")), Some(&[id("fr.hotline")][..]));
        // Derived: both DE hotlines, in id order; NL from the fallback's own country.
        assert_eq!(
            t.hotlines(&cc("DE")),
            Some(&[id("de.hotline-a"), id("de.hotline-b")][..])
        );
        assert_eq!(t.hotlines(&cc("BE")), Some(&[id("be.hotline")][..]));
        // Explicit empty list and absent country: nobody covers them.
        assert_eq!(t.hotlines(&cc("XX")), None);
        assert_eq!(t.hotlines(&cc("IT")), None);
        assert_eq!(t.lea(&cc("FR")), Some(&id("fr.police")));
        assert_eq!(t.lea(&cc("DE")), Some(&id("de.police")));
        assert_eq!(t.lea(&cc("BE")), None);
        assert_eq!(t.fallback(), Some(&id("int.fallback-hotline")));
        assert_eq!(t.fallback_lea(), Some(&id("int.police")));
        assert_eq!(t.copy_rules().len(), 1);
        assert!(t.is_receiver(&id("de.police")) && t.is_receiver(&id("be.hotline")));
        assert!(!t.is_receiver(&id("net.broker")) && !t.is_receiver(&id("zz.nobody")));
    }

    #[test]
    fn an_explicit_country_may_delegate_to_another_countrys_hotline() {
        let t = RoutingTable::resolve(
            &config("[routing.countries]\nLU = [\"be.hotline\", \"fr.hotline\"]\n[routing.lea]\nFR = \"fr.police\""),
            &registry_with(""),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            t.hotlines(&cc("LU")),
            Some(&[id("be.hotline"), id("fr.hotline")][..])
        );
        assert_eq!(t.fallback(), None);
    }

    #[test]
    fn an_empty_config_derives_everything_but_needs_one_lea_per_country() {
        // FR has two LEAs in the registry (fr.police, int.police): ambiguous until named.
        let e = fails("[routing]");
        assert_eq!(
            e.to_string(),
            "routing.lea: country FR has 2 LEA participants in the registry (fr.police, \
             int.police); name the one that takes urgent copies in [routing.lea]"
        );
        let t = RoutingTable::resolve(
            &config("[routing.lea]\nFR = \"int.police\""),
            &registry_with(""),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.lea(&cc("FR")), Some(&id("int.police")));
        assert_eq!(t.lea(&cc("AT")), Some(&id("int.interpol")));
        assert!(t.copy_rules().is_empty());
    }

    #[test]
    fn errors_name_the_field() {
        let lea_fr = "[routing.lea]\nFR = \"fr.police\"\n";
        let cases: &[(&str, &str)] = &[
            (
                "[routing]\nfallback = \"zz.nobody\"",
                "routing.fallback: participant zz.nobody is not in the registry",
            ),
            (
                "[routing]\nfallback = \"fr.police\"",
                "routing.fallback: participant fr.police has role lea, expected hotline",
            ),
            (
                "[routing]\nfallback_lea = \"fr.hotline\"",
                "routing.fallback_lea: participant fr.hotline has role hotline, expected lea",
            ),
            (
                "[routing.countries]\nFR = [\"fr.hotline\", \"net.broker\"]",
                "routing.countries.FR[1]: participant net.broker has role operator, expected hotline",
            ),
            (
                "[routing.countries]\nFR = [\"fr.hotline\", \"fr.hotline\"]",
                "routing.countries.FR[1]: participant fr.hotline is listed twice",
            ),
            (
                "[routing.countries]\nfr = [\"fr.hotline\"]",
                "routing.countries.fr: \"fr\" is not an ISO 3166-1 alpha-2 country code in upper case (e.g. FR)",
            ),
            (
                "[routing.lea]\nFRA = \"fr.police\"",
                "routing.lea.FRA: \"FRA\" is not an ISO 3166-1 alpha-2 country code in upper case (e.g. FR)",
            ),
            (
                "[routing.lea]\nFR = \"de.hotline-a\"",
                "routing.lea.FR: participant de.hotline-a has role hotline, expected lea",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(fails(text).to_string(), *want, "{text}");
        }
        let copy_cases: &[(&str, &str)] = &[
            (
                "[[routing.copy]]\nlegal_status = \"baseline\"\nto = \"zz.nobody\"",
                "routing.copy[0].to: participant zz.nobody is not in the registry",
            ),
            (
                "[[routing.copy]]\ncategory = \"csam\"\nto = \"int.interpol\"\n\
                 [[routing.copy]]\nlegal_status = \"baseline\"\nto = \"net.broker\"",
                "routing.copy[1].to: participant net.broker has role operator, expected hotline or lea",
            ),
            (
                "[[routing.copy]]\nto = \"int.interpol\"",
                "routing.copy[0]: a copy rule needs at least one condition \
                 (legal_status, category or victim_age_group)",
            ),
        ];
        for (text, want) in copy_cases {
            assert_eq!(
                fails(&format!("{lea_fr}{text}")).to_string(),
                *want,
                "{text}"
            );
        }
    }

    #[test]
    fn typos_are_refused_when_parsing() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct File {
            routing: RoutingConfig,
        }
        for bad in [
            "[routing]\nfalback = \"int.fallback-hotline\"",
            "[[routing.copy]]\nlegal_status = \"basline\"\nto = \"int.interpol\"",
            "[[routing.copy]]\nlegal = \"baseline\"\nto = \"int.interpol\"",
            "[routing.countries]\nFR = [\"FR.Hotline\"]",
        ] {
            assert!(toml::from_str::<File>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn copy_rule_conditions_all_hold() {
        let rule = CopyRule {
            legal_status: Some(LegalStatus::Baseline),
            category: None,
            victim_age_group: Some(AgeGroup::InfantToddler),
            to: id("int.interpol"),
        };
        let mut c: Classification = serde_json::from_value(serde_json::json!({
            "legal_status": "baseline",
            "assessing_jurisdiction": "FR",
            "category": "csam",
            "victim_age_group": "infant_toddler",
            "victim_gender": "unknown",
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(rule.matches(&c));
        c.victim_age_group = AgeGroup::Pubescent;
        assert!(!rule.matches(&c));
        c.victim_age_group = AgeGroup::InfantToddler;
        c.legal_status = LegalStatus::National;
        assert!(!rule.matches(&c));
    }
}
