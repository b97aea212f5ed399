//! The participant registry: who is on the network, in which role, with which signing keys.
//!
//! One TOML file, written by the operator:
//!
//! ```toml
//! # The broker's own participant entry (role operator): its keys sign notices and checkpoints.
//! broker = "net.refbroker"
//!
//! [[participant]]
//! id = "fr.hotline"          # ParticipantId; = certificate CN = RabbitMQ user
//! name = "Example hotline FR"
//! role = "hotline"           # hotline | lea | operator
//! country = "FR"             # ISO 3166-1 alpha-2, uppercase; required for hotline and lea
//! [[participant.key]]
//! public_key = "base64 of 32 bytes"
//! id = "…"                   # optional; if given must equal the derived key id
//! not_before = "2026-01-01T00:00:00Z"
//! not_after = "2027-01-01T00:00:00Z"   # optional
//! revoked_at = "2026-06-01T00:00:00Z"  # optional
//! ```
//!
//! What loading guarantees (anything else is an error naming the file, the entry — the
//! participant id, or `participant[i]` when the id itself is missing or wrong — and the
//! field):
//! - every field is known (no typo is silently ignored), present when required and of the
//!   right type; timestamps are RFC 3339 strings or TOML offset date-times;
//! - participant ids parse as [`ParticipantId`] and are unique; `name` is one non-empty line;
//! - `country` is two uppercase ASCII letters ([`CountryCode`], the wire schema's rule),
//!   required for `hotline` and `lea`;
//! - every public key is canonical base64 of a valid, non-weak ed25519 point; a given `id`
//!   equals the derived [`KeyId`]; no key is registered twice, within one participant or
//!   across participants; `not_after`, when given, is after `not_before`;
//! - `broker` names an entry with role `operator` that has at least one key.
//!
//! Not checked here: whether a country code is *assigned* by ISO (only its form), and whether
//! any key is valid at a given moment — that is [`RegisteredKey::state_at`], asked at the time
//! a message arrives. A participant may have no key at all (it can receive, not send).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::{KeyId, ParticipantId};
use crate::signing::{self, SigningError};
use crate::wire::CountryCode;

/// Longest participant `name` accepted, in characters.
pub const NAME_MAX: usize = 256;

/// Why a registry could not be loaded.
#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not valid TOML: {message}")]
    Syntax { file: String, message: String },
    /// `at` names the entry and the field, e.g. `participant "fr.hotline" key[0] public_key`.
    #[error("{file}: {at}: {problem}")]
    Invalid {
        file: String,
        at: String,
        problem: String,
    },
}

/// What a participant is on the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A national hotline: sends and receives referrals.
    Hotline,
    /// A law-enforcement agency: receives urgent copies.
    Lea,
    /// The network's operator, e.g. the broker itself.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Hotline => "hotline",
            Role::Lea => "lea",
            Role::Operator => "operator",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "hotline" => Ok(Role::Hotline),
            "lea" => Ok(Role::Lea),
            "operator" => Ok(Role::Operator),
            _ => Err(format!(
                "{s:?} is not a role (expected hotline, lea or operator)"
            )),
        }
    }
}

/// One participant of the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub id: ParticipantId,
    pub name: String,
    pub role: Role,
    /// ISO 3166-1 alpha-2, uppercase. Always present for hotlines and LEAs.
    pub country: Option<String>,
    /// In the order of the file.
    pub keys: Vec<RegisteredKey>,
}

impl Participant {
    /// The key with this id, if the participant has registered it (whatever its state).
    pub fn key(&self, key_id: &KeyId) -> Option<&RegisteredKey> {
        self.keys.iter().find(|k| &k.key_id == key_id)
    }
}

/// One signing key of a participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredKey {
    pub key_id: KeyId,
    pub public_key: VerifyingKey,
    /// First instant the key is valid (inclusive).
    pub not_before: DateTime<Utc>,
    /// First instant the key is no longer valid (exclusive end of the window).
    pub not_after: Option<DateTime<Utc>>,
    /// From this instant on (inclusive) the key is revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Whether a key may sign at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Valid,
    /// `now < not_before`.
    NotYetValid,
    /// `now >= not_after`.
    Expired,
    /// `now >= revoked_at`.
    Revoked,
}

impl RegisteredKey {
    /// The key's state at `now`. Checked in the order of the ingress checks: the validity
    /// window first (not yet valid, expired), then revocation.
    pub fn state_at(&self, now: DateTime<Utc>) -> KeyState {
        if now < self.not_before {
            KeyState::NotYetValid
        } else if self.not_after.is_some_and(|end| now >= end) {
            KeyState::Expired
        } else if self.revoked_at.is_some_and(|at| at <= now) {
            KeyState::Revoked
        } else {
            KeyState::Valid
        }
    }
}

/// The loaded, validated registry.
#[derive(Debug, Clone)]
pub struct Registry {
    broker: ParticipantId,
    participants: BTreeMap<ParticipantId, Participant>,
}

impl Registry {
    /// Reads and validates a registry file.
    pub fn load(path: &Path) -> Result<Registry, RegistryError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RegistryError::Io {
            file: file.clone(),
            source,
        })?;
        Registry::from_toml(&text, &file)
    }

    /// Validates a registry from its text; `source` names it in errors (usually the path).
    pub fn from_toml(text: &str, source: &str) -> Result<Registry, RegistryError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| RegistryError::Syntax {
            file: source.to_owned(),
            message: e.message().to_owned() + &line_of(text, e.span()),
        })?;
        Parser { file: source }.registry(table)
    }

    /// The broker's own entry (role operator; at least one key).
    pub fn broker(&self) -> &Participant {
        self.participants
            .get(&self.broker)
            .expect("validated at load: `broker` names an entry of the registry")
    }

    pub fn get(&self, id: &ParticipantId) -> Option<&Participant> {
        self.participants.get(id)
    }

    /// Every participant, the broker included, sorted by id.
    pub fn participants(&self) -> impl Iterator<Item = &Participant> {
        self.participants.values()
    }
}

fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(span) if span.start <= text.len() => {
            let line = text.as_bytes()[..span.start]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            format!(" (line {line})")
        }
        _ => String::new(),
    }
}

/// Walks the TOML tables, naming where each problem is.
struct Parser<'a> {
    file: &'a str,
}

/// The fields of one TOML table (all known), taken one by one.
struct Fields {
    table: toml::Table,
    at: String,
}

const TOP_FIELDS: &[&str] = &["broker", "participant"];
const PARTICIPANT_FIELDS: &[&str] = &["id", "name", "role", "country", "key"];
const KEY_FIELDS: &[&str] = &["public_key", "id", "not_before", "not_after", "revoked_at"];

impl Parser<'_> {
    fn err(&self, at: &str, field: &str, problem: impl Into<String>) -> RegistryError {
        let at = match (at.is_empty(), field.is_empty()) {
            (true, _) => field.to_owned(),
            (false, true) => at.to_owned(),
            (false, false) => format!("{at} {field}"),
        };
        RegistryError::Invalid {
            file: self.file.to_owned(),
            at,
            problem: problem.into(),
        }
    }

    fn take(&self, f: &mut Fields, name: &str) -> Option<toml::Value> {
        f.table.remove(name)
    }

    fn opt_str(&self, f: &mut Fields, name: &str) -> Result<Option<String>, RegistryError> {
        match self.take(f, name) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.err(
                &f.at,
                name,
                format!("expected a string, found {}", other.type_str()),
            )),
        }
    }

    fn req_str(&self, f: &mut Fields, name: &str) -> Result<String, RegistryError> {
        self.opt_str(f, name)?
            .ok_or_else(|| self.err(&f.at, name, "missing (required)"))
    }

    fn opt_time(&self, f: &mut Fields, name: &str) -> Result<Option<DateTime<Utc>>, RegistryError> {
        let text = match self.take(f, name) {
            None => return Ok(None),
            Some(toml::Value::String(s)) => s,
            Some(toml::Value::Datetime(d)) => d.to_string(),
            Some(other) => {
                return Err(self.err(
                    &f.at,
                    name,
                    format!("expected an RFC 3339 timestamp, found {}", other.type_str()),
                ));
            }
        };
        DateTime::parse_from_rfc3339(&text)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| {
                self.err(
                    &f.at,
                    name,
                    format!(
                        "{text:?} is not an RFC 3339 timestamp with a time zone \
                         (e.g. 2026-01-01T00:00:00Z)"
                    ),
                )
            })
    }

    fn req_time(&self, f: &mut Fields, name: &str) -> Result<DateTime<Utc>, RegistryError> {
        self.opt_time(f, name)?
            .ok_or_else(|| self.err(&f.at, name, "missing (required)"))
    }

    /// An array of tables (`[[name]]`), each with its index.
    fn tables(
        &self,
        f: &mut Fields,
        name: &str,
    ) -> Result<Vec<(usize, toml::Table)>, RegistryError> {
        let Some(value) = self.take(f, name) else {
            return Ok(Vec::new());
        };
        let toml::Value::Array(items) = value else {
            return Err(self.err(
                &f.at,
                name,
                format!("expected [[{name}]] tables, found {}", value.type_str()),
            ));
        };
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                toml::Value::Table(t) => Ok((i, t)),
                other => Err(self.err(
                    &f.at,
                    &format!("{name}[{i}]"),
                    format!("expected a table, found {}", other.type_str()),
                )),
            })
            .collect()
    }

    /// The fields of a table, refusing any field not in `allowed` before reading any other.
    fn fields(
        &self,
        table: toml::Table,
        at: String,
        allowed: &[&str],
    ) -> Result<Fields, RegistryError> {
        if let Some(unknown) = table.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(self.err(
                &at,
                unknown,
                format!("unknown field (expected one of: {})", allowed.join(", ")),
            ));
        }
        Ok(Fields { table, at })
    }

    fn registry(&self, table: toml::Table) -> Result<Registry, RegistryError> {
        let mut top = self.fields(table, String::new(), TOP_FIELDS)?;
        let broker_text = self.req_str(&mut top, "broker")?;
        let broker: ParticipantId = broker_text
            .parse()
            .map_err(|e: crate::ids::IdError| self.err("", "broker", e.to_string()))?;
        let entries = self.tables(&mut top, "participant")?;

        let mut participants = BTreeMap::new();
        // Every registered key id, with its owner: a key belongs to one participant only.
        let mut key_owner: BTreeMap<KeyId, ParticipantId> = BTreeMap::new();
        for (index, table) in entries {
            let participant = self.participant(index, table)?;
            if participants.contains_key(&participant.id) {
                return Err(self.err(
                    &format!("participant[{index}]"),
                    "id",
                    format!(
                        "{:?} is already the id of an earlier participant",
                        participant.id.as_str()
                    ),
                ));
            }
            let at = format!("participant {:?}", participant.id.as_str());
            for (k, key) in participant.keys.iter().enumerate() {
                if let Some(owner) = key_owner.get(&key.key_id) {
                    let problem = if owner == &participant.id {
                        format!("key {} is registered twice", key.key_id)
                    } else {
                        format!(
                            "key {} is already registered for participant {:?}",
                            key.key_id,
                            owner.as_str()
                        )
                    };
                    return Err(self.err(&at, &format!("key[{k}] public_key"), problem));
                }
                key_owner.insert(key.key_id.clone(), participant.id.clone());
            }
            participants.insert(participant.id.clone(), participant);
        }

        match participants.get(&broker) {
            None => Err(self.err(
                "",
                "broker",
                format!("{:?} names no [[participant]] entry", broker.as_str()),
            )),
            Some(p) if p.role != Role::Operator => Err(self.err(
                "",
                "broker",
                format!(
                    "{:?} has role {}; the broker's entry must have role operator",
                    broker.as_str(),
                    p.role
                ),
            )),
            Some(p) if p.keys.is_empty() => Err(self.err(
                &format!("participant {:?}", broker.as_str()),
                "key",
                "the broker's entry needs at least one key (it signs notices and checkpoints)",
            )),
            Some(_) => Ok(Registry {
                broker,
                participants,
            }),
        }
    }

    fn participant(&self, index: usize, table: toml::Table) -> Result<Participant, RegistryError> {
        // Name the entry by its id when that id is usable, by its position otherwise.
        let named = table
            .get("id")
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse::<ParticipantId>().ok());
        let at = match &named {
            Some(id) => format!("participant {:?}", id.as_str()),
            None => format!("participant[{index}]"),
        };
        let mut f = self.fields(table, at, PARTICIPANT_FIELDS)?;

        let id_text = self.req_str(&mut f, "id")?;
        let id: ParticipantId = id_text
            .parse()
            .map_err(|e: crate::ids::IdError| self.err(&f.at, "id", e.to_string()))?;

        let name = self.req_str(&mut f, "name")?;
        if name.trim().is_empty() {
            return Err(self.err(&f.at, "name", "empty"));
        }
        if name.chars().count() > NAME_MAX || name.chars().any(char::is_control) {
            return Err(self.err(
                &f.at,
                "name",
                format!("must be one line of at most {NAME_MAX} characters"),
            ));
        }

        let role_text = self.req_str(&mut f, "role")?;
        let role: Role = role_text.parse().map_err(|e| self.err(&f.at, "role", e))?;

        let country = self.opt_str(&mut f, "country")?;
        if let Some(c) = &country {
            c.parse::<CountryCode>()
                .map_err(|e| self.err(&f.at, "country", e.to_string()))?;
        }
        if country.is_none() && matches!(role, Role::Hotline | Role::Lea) {
            return Err(self.err(
                &f.at,
                "country",
                format!("missing (required for role {role})"),
            ));
        }

        let key_tables = self.tables(&mut f, "key")?;
        let mut keys = Vec::with_capacity(key_tables.len());
        for (k, table) in key_tables {
            keys.push(self.key(&f.at, k, table)?);
        }
        Ok(Participant {
            id,
            name,
            role,
            country,
            keys,
        })
    }

    fn key(
        &self,
        owner: &str,
        k: usize,
        table: toml::Table,
    ) -> Result<RegisteredKey, RegistryError> {
        let mut f = self.fields(table, format!("{owner} key[{k}]"), KEY_FIELDS)?;
        let text = self.req_str(&mut f, "public_key")?;
        let public_key = signing::decode_public_key_b64(text.trim()).map_err(|e| {
            let problem = match e {
                SigningError::MalformedPublicKey => "not 32 bytes of base64",
                SigningError::InvalidPublicKey => "not a valid ed25519 public key",
                SigningError::WeakPublicKey => "a weak (small-order) ed25519 key, unusable",
                _ => "not a usable ed25519 public key",
            };
            self.err(&f.at, "public_key", problem)
        })?;
        let key_id = signing::key_id_of(&public_key);
        if let Some(given) = self.opt_str(&mut f, "id")?
            && given != key_id.as_str()
        {
            return Err(self.err(
                &f.at,
                "id",
                format!(
                    "{given:?} is not the id of this public key (derived: {key_id}); \
                     the id is hex of the first 8 bytes of SHA-256 over the public key"
                ),
            ));
        }
        let not_before = self.req_time(&mut f, "not_before")?;
        let not_after = self.opt_time(&mut f, "not_after")?;
        if let Some(end) = not_after
            && end <= not_before
        {
            return Err(self.err(&f.at, "not_after", "must be after not_before"));
        }
        let revoked_at = self.opt_time(&mut f, "revoked_at")?;
        Ok(RegisteredKey {
            key_id,
            public_key,
            not_before,
            not_after,
            revoked_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::Signer;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn pk(seed: u8) -> String {
        Signer::from_seed([seed; 32]).public_key_b64()
    }

    fn good() -> String {
        format!(
            r#"
# The broker's own entry.
broker = "net.refbroker"

[[participant]]
id = "net.refbroker"
name = "Referral broker"
role = "operator"
[[participant.key]]
public_key = "{broker}"
not_before = "2026-01-01T00:00:00Z"

[[participant]]
id = "fr.hotline"
name = "Example hotline FR"
role = "hotline"
country = "FR"
[[participant.key]]
public_key = "{fr}"
id = "{fr_id}"
not_before = "2026-01-01T00:00:00Z"
not_after = "2027-01-01T00:00:00Z"
[[participant.key]]
public_key = "{fr2}"
not_before = 2026-01-01T00:00:00+01:00
revoked_at = "2026-06-01T00:00:00Z"

[[participant]]
id = "de.lea"
name = "Example LEA DE"
role = "lea"
country = "DE"
"#,
            broker = pk(1),
            fr = pk(2),
            fr_id = Signer::from_seed([2; 32]).key_id(),
            fr2 = pk(3),
        )
    }

    fn load(text: &str) -> Result<Registry, RegistryError> {
        Registry::from_toml(text, "registry.toml")
    }

    /// Loads `text`, expects an `Invalid` error at `at`, returns the whole message.
    fn fails_at(text: &str, at: &str) -> String {
        match load(text) {
            Err(e @ RegistryError::Invalid { .. }) => {
                let RegistryError::Invalid { at: got, .. } = &e else {
                    unreachable!()
                };
                assert_eq!(got, at, "{e}");
                e.to_string()
            }
            Err(e) => panic!("expected an error at {at}, got {e}"),
            Ok(_) => panic!("expected an error at {at}, the registry loaded"),
        }
    }

    #[test]
    fn loads_a_good_registry() {
        let reg = load(&good()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reg.broker().id.as_str(), "net.refbroker");
        assert_eq!(reg.broker().role, Role::Operator);
        let ids: Vec<&str> = reg.participants().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["de.lea", "fr.hotline", "net.refbroker"]);
        let fr = reg
            .get(&"fr.hotline".parse().unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|| panic!("fr.hotline"));
        assert_eq!(fr.role, Role::Hotline);
        assert_eq!(fr.country.as_deref(), Some("FR"));
        assert_eq!(fr.keys.len(), 2);
        let k0 = &fr.keys[0];
        assert_eq!(&k0.key_id, Signer::from_seed([2; 32]).key_id());
        assert_eq!(fr.key(&k0.key_id), Some(k0));
        assert_eq!(k0.not_after, Some(t("2027-01-01T00:00:00Z")));
        // A TOML native offset date-time is accepted and converted to UTC.
        assert_eq!(fr.keys[1].not_before, t("2025-12-31T23:00:00Z"));
        assert!(
            reg.get(&"xx.nobody".parse().unwrap_or_else(|e| panic!("{e}")))
                .is_none()
        );
        let lea = reg
            .get(&"de.lea".parse().unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|| panic!("de.lea"));
        assert!(lea.keys.is_empty());
    }

    #[test]
    fn key_states() {
        let reg = load(&good()).unwrap_or_else(|e| panic!("{e}"));
        let fr = reg
            .get(&"fr.hotline".parse().unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|| panic!("fr.hotline"));
        let (k0, k1) = (&fr.keys[0], &fr.keys[1]);
        assert_eq!(
            k0.state_at(t("2025-12-31T23:59:59Z")),
            KeyState::NotYetValid
        );
        assert_eq!(k0.state_at(t("2026-01-01T00:00:00Z")), KeyState::Valid);
        assert_eq!(k0.state_at(t("2026-12-31T23:59:59Z")), KeyState::Valid);
        assert_eq!(k0.state_at(t("2027-01-01T00:00:00Z")), KeyState::Expired);
        assert_eq!(k1.state_at(t("2026-05-31T23:59:59Z")), KeyState::Valid);
        assert_eq!(k1.state_at(t("2026-06-01T00:00:00Z")), KeyState::Revoked);
    }

    #[test]
    fn the_example_error_message() {
        let text = good().replace(&pk(2), "c2hvcnQ=");
        let msg = fails_at(&text, "participant \"fr.hotline\" key[0] public_key");
        assert_eq!(
            msg,
            "registry.toml: participant \"fr.hotline\" key[0] public_key: not 32 bytes of base64"
        );
    }

    #[test]
    fn syntax_errors_name_the_file_and_line() {
        let err = load("broker = \"net.refbroker\"\n[[participant]\n").map(|_| ());
        match err {
            Err(e @ RegistryError::Syntax { .. }) => {
                let msg = e.to_string();
                assert!(msg.starts_with("registry.toml: not valid TOML"), "{msg}");
                assert!(msg.contains("line 2"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn duplicate_participant_ids() {
        let text = format!(
            "{}\n[[participant]]\nid = \"fr.hotline\"\nname = \"Again\"\nrole = \"hotline\"\ncountry = \"FR\"\n",
            good()
        );
        let msg = fails_at(&text, "participant[3] id");
        assert!(msg.contains("already the id"), "{msg}");
    }

    #[test]
    fn unknown_fields_everywhere() {
        fails_at(&format!("brokers = 1\n{}", good()), "brokers");
        fails_at(
            &good().replace("name = \"Example hotline FR\"", "nmae = \"x\""),
            "participant \"fr.hotline\" nmae",
        );
        let msg = fails_at(
            &good().replace(
                "not_after = \"2027-01-01T00:00:00Z\"",
                "not_afterr = \"2027-01-01T00:00:00Z\"",
            ),
            "participant \"fr.hotline\" key[0] not_afterr",
        );
        assert!(msg.contains("unknown field"), "{msg}");
    }

    #[test]
    fn broker_must_name_an_operator_with_a_key() {
        let msg = fails_at(
            &good().replace("broker = \"net.refbroker\"", "broker = \"net.other\""),
            "broker",
        );
        assert!(msg.contains("names no [[participant]] entry"), "{msg}");
        let msg = fails_at(
            &good().replace("broker = \"net.refbroker\"", "broker = \"fr.hotline\""),
            "broker",
        );
        assert!(msg.contains("role operator"), "{msg}");
        fails_at(
            &good().replace("broker = \"net.refbroker\"", "broker = \"Net\""),
            "broker",
        );
        fails_at(
            &good().replace("broker = \"net.refbroker\"\n", ""),
            "broker",
        );
        let no_key = good().replacen(
            &format!(
                "[[participant.key]]\npublic_key = \"{}\"\nnot_before = \"2026-01-01T00:00:00Z\"\n",
                pk(1)
            ),
            "",
            1,
        );
        fails_at(&no_key, "participant \"net.refbroker\" key");
    }

    #[test]
    fn countries() {
        for bad in ["fr", "FRA", "F1", "", "ÉF"] {
            let msg = fails_at(
                &good().replace("country = \"FR\"", &format!("country = \"{bad}\"")),
                "participant \"fr.hotline\" country",
            );
            assert!(msg.contains("ISO 3166-1"), "{msg}");
        }
        fails_at(
            &good().replace("country = \"FR\"\n", ""),
            "participant \"fr.hotline\" country",
        );
        fails_at(
            &good().replace("country = \"DE\"\n", ""),
            "participant \"de.lea\" country",
        );
        fails_at(
            &good().replace("country = \"FR\"", "country = 33"),
            "participant \"fr.hotline\" country",
        );
    }

    #[test]
    fn participant_fields() {
        fails_at(
            &good().replace("id = \"fr.hotline\"", "id = \"FR.hotline\""),
            "participant[1] id",
        );
        fails_at(
            &good().replace("id = \"fr.hotline\"\n", ""),
            "participant[1] id",
        );
        fails_at(
            &good().replace("name = \"Example hotline FR\"", "name = \" \""),
            "participant \"fr.hotline\" name",
        );
        fails_at(
            &good().replace("name = \"Example hotline FR\"", "name = \"a\\nb\""),
            "participant \"fr.hotline\" name",
        );
        let msg = fails_at(
            &good().replace("role = \"hotline\"", "role = \"police\""),
            "participant \"fr.hotline\" role",
        );
        assert!(msg.contains("hotline, lea or operator"), "{msg}");
        fails_at(
            &good().replace("role = \"hotline\"\n", ""),
            "participant \"fr.hotline\" role",
        );
        fails_at(
            &format!("{}\nparticipant = 3\n", "broker = \"net.refbroker\""),
            "participant",
        );
    }

    #[test]
    fn key_fields() {
        let at = "participant \"fr.hotline\" key[0]";
        fails_at(&good().replace(&pk(2), "!!!"), &format!("{at} public_key"));
        // The identity point: weak.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        use base64::Engine as _;
        let weak = base64::engine::general_purpose::STANDARD.encode(identity);
        let msg = fails_at(&good().replace(&pk(2), &weak), &format!("{at} public_key"));
        assert!(msg.contains("weak"), "{msg}");
        let msg = fails_at(
            &good().replace(
                Signer::from_seed([2; 32]).key_id().as_str(),
                "0000000000000000",
            ),
            &format!("{at} id"),
        );
        assert!(msg.contains("derived"), "{msg}");
        fails_at(
            &good().replacen(
                "not_before = \"2026-01-01T00:00:00Z\"\nnot_after",
                "not_after",
                1,
            ),
            &format!("{at} not_before"),
        );
        fails_at(
            &good().replace(
                "not_after = \"2027-01-01T00:00:00Z\"",
                "not_after = \"2025-01-01T00:00:00Z\"",
            ),
            &format!("{at} not_after"),
        );
        fails_at(
            &good().replace(
                "not_after = \"2027-01-01T00:00:00Z\"",
                "not_after = \"2027-01-01\"",
            ),
            &format!("{at} not_after"),
        );
        // A local date-time (no offset) is ambiguous: refused.
        fails_at(
            &good().replace(
                "not_after = \"2027-01-01T00:00:00Z\"",
                "not_after = 2027-01-01T00:00:00",
            ),
            &format!("{at} not_after"),
        );
    }

    #[test]
    fn a_key_belongs_to_one_participant() {
        // The LEA registers the hotline's key.
        let text = format!(
            "{}[[participant.key]]\npublic_key = \"{}\"\nnot_before = \"2026-01-01T00:00:00Z\"\n",
            good(),
            pk(2)
        );
        let msg = fails_at(&text, "participant \"de.lea\" key[0] public_key");
        assert!(
            msg.contains("already registered for participant \"fr.hotline\""),
            "{msg}"
        );
        // The same key twice in one entry.
        let text = good().replace(&pk(3), &pk(2));
        let msg = fails_at(&text, "participant \"fr.hotline\" key[1] public_key");
        assert!(msg.contains("registered twice"), "{msg}");
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("registry.toml");
        let missing = Registry::load(&path).map(|_| ()).unwrap_err();
        assert!(missing.to_string().contains("registry.toml"), "{missing}");
        std::fs::write(&path, good()).unwrap_or_else(|e| panic!("{e}"));
        assert!(Registry::load(&path).is_ok());
    }
}
