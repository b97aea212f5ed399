//! A received message for people and for programs: [`text`] writes it as an analyst reads it
//! (who sent it, whether the signatures verified, why it came here, each item with its URL,
//! hosting country and classification, duplicates and known hashes); [`json`] writes it as one
//! JSON object (the envelope exactly as signed, plus what was verified).
//!
//! Pure: no I/O. Text from the network is printed with control characters other than line feed
//! and tab replaced, so a message cannot drive the analyst's terminal.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Value, json};

use super::inbox::Received;
use crate::registry::Registry;
use crate::route::RouteReason;
use crate::wire::attestation::Attestation;
use crate::wire::{self, Body, Item, Priority, Referral};

/// Longest hash value shown in full in text output (`--json` always has everything).
const HASH_SHOWN: usize = 64;

/// The wire word of a serde enum (`csam`, `image_host`, …).
fn word<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".to_owned(),
    }
}

/// `s` on one line, with every control character replaced: for text from the network that
/// was not checked by the contract (property values, error details).
pub fn clean_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// `s` without control characters other than line feed and tab; continuation lines indented.
fn clean(s: &str, indent: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => {
                out.push('\n');
                out.push_str(indent);
            }
            '\t' => out.push('\t'),
            '\r' => {}
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
    wire::time::format(t)
}

/// What a route reason means, in words.
pub fn reason_words(reason: RouteReason) -> &'static str {
    match reason {
        RouteReason::Explicit => "the sender named you (to)",
        RouteReason::Country => "hosted in your country",
        RouteReason::Fallback => "fallback: no hotline covers the hosting country",
        RouteReason::UrgentLea => "urgent: copied to law enforcement",
        RouteReason::CopyRule => "copy rule on the classification",
    }
}

/// Who `id` is, from the registry: `fr.hotline — Example hotline (hotline, FR)`.
fn who(registry: &Registry, id: &crate::ids::ParticipantId) -> String {
    match registry.get(id) {
        Some(p) => match &p.country {
            Some(c) => format!("{id} — {} ({}, {c})", clean(&p.name, ""), p.role),
            None => format!("{id} — {} ({})", clean(&p.name, ""), p.role),
        },
        None => id.to_string(),
    }
}

/// The message as an analyst reads it: several lines, ending with a blank line.
pub fn text(message: &Received, registry: &Registry) -> String {
    let e = &message.envelope;
    let mut out = String::new();
    let title = match &e.body {
        Body::Referral(r) if r.priority == Priority::Urgent => "URGENT REFERRAL".to_owned(),
        _ => e.kind.as_str().to_uppercase(),
    };
    let _ = writeln!(out, "━━ {title} {} ━━", e.id);
    let _ = writeln!(
        out,
        "From:      {}\n           origin's signature verified (key {})",
        who(registry, &e.origin),
        message.key_id
    );
    let _ = writeln!(out, "Sent:      {}", time(&e.created_at));
    if let Some(a) = &message.attestation {
        let _ = writeln!(
            out,
            "Broker:    forwarded to you at {} — audit entry #{}, attestation verified",
            time(&a.attested_at),
            a.audit_seq
        );
    }
    if message.redelivered {
        let _ = writeln!(
            out,
            "Note:      redelivered (not acknowledged before; first time handed over here)"
        );
    }
    match &e.body {
        Body::Referral(r) => referral(&mut out, r, message.attestation.as_ref()),
        Body::Receipt(r) => {
            let _ = writeln!(
                out,
                "Referral:  {} — {}",
                r.referral,
                word(&r.outcome).to_uppercase()
            );
            if let Some(t) = &r.received_at {
                let _ = writeln!(out, "Received:  {}", time(t));
            }
            if let Some(reason) = &r.reason {
                let _ = writeln!(out, "Reason:    {}", clean(reason, "           "));
            }
        }
        Body::Status(s) => {
            let _ = writeln!(
                out,
                "Referral:  {}, item {}: {} at {}",
                s.referral,
                s.item,
                word(&s.state).to_uppercase().replace('_', " "),
                time(&s.at)
            );
            if let Some(reason) = &s.reason {
                let _ = writeln!(out, "Reason:    {}", clean(reason, "           "));
            }
            if let Some(n) = &s.lea_case_number {
                let _ = writeln!(out, "LEA case:  {}", clean(n, ""));
            }
            if let Some(note) = &s.note {
                let _ = writeln!(out, "Note:      {}", clean(note, "           "));
            }
        }
        Body::Retraction(r) => {
            let _ = writeln!(
                out,
                "Referral:  {} WITHDRAWN by its origin — stop acting on it",
                r.referral
            );
            let _ = writeln!(out, "Reason:    {}", clean(&r.reason, "           "));
        }
        Body::Notice(n) => {
            let _ = writeln!(
                out,
                "Code:      {} — {}",
                n.code,
                clean(&n.message, "           ")
            );
            if let Some(about) = &n.about {
                let _ = writeln!(out, "About:     {about}");
            }
            if let Some(items) = &n.items {
                let list: Vec<String> = items.iter().map(u16::to_string).collect();
                let _ = writeln!(out, "Items:     {}", list.join(", "));
            }
            if let Some(first) = &n.first_referral {
                let _ = writeln!(out, "First:     already referred in {first}");
            }
            if let Some(detail) = &n.detail {
                let _ = writeln!(out, "Detail:    {}", clean(detail, "           "));
            }
        }
        Body::Checkpoint(c) => {
            let _ = writeln!(
                out,
                "Log:       {} — {} entries at {}",
                clean(&c.log, ""),
                c.size,
                time(&c.time)
            );
            let _ = writeln!(out, "Root:      {}", hex::encode(c.root));
            let _ = writeln!(
                out,
                "           keep it: a log rewritten later no longer matches it"
            );
        }
    }
    out.push('\n');
    out
}

fn referral(out: &mut String, r: &Referral, attestation: Option<&Attestation>) {
    let _ = writeln!(out, "Reference: {}", clean(&r.reference, ""));
    let _ = writeln!(
        out,
        "Reported:  public report received {}",
        time(&r.public_report_received_at)
    );
    match (&r.priority, &r.escalation_reason) {
        (Priority::Urgent, Some(why)) => {
            let _ = writeln!(out, "Priority:  URGENT — {}", clean(why, "           "));
        }
        _ => {
            let _ = writeln!(out, "Priority:  normal");
        }
    }
    if let Some(notes) = &r.notes {
        let _ = writeln!(out, "Notes:     {}", clean(notes, "           "));
    }
    let routed: BTreeMap<u16, &[RouteReason]> = attestation
        .map(|a| {
            a.items
                .iter()
                .map(|i| (i.index, i.reasons.as_slice()))
                .collect()
        })
        .unwrap_or_default();
    let duplicates: BTreeMap<u16, &crate::ids::EnvelopeId> = attestation
        .map(|a| {
            a.duplicates
                .iter()
                .map(|d| (d.index, &d.first_referral))
                .collect()
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "Items:     {} for you to act on, of {} in the referral{}",
        if attestation.is_some() {
            routed.len()
        } else {
            r.items.len()
        },
        r.items.len(),
        if duplicates.is_empty() {
            String::new()
        } else {
            format!(
                "; {} already open here (duplicates: do not act again)",
                duplicates.len()
            )
        }
    );
    for (index, item) in r.items.iter().enumerate() {
        let index = u16::try_from(index).unwrap_or(u16::MAX);
        match (attestation, routed.get(&index), duplicates.get(&index)) {
            (Some(_), None, Some(first)) => {
                let _ = writeln!(
                    out,
                    "  [{index}] {}\n      DUPLICATE: already open here since referral {first} — do not act again",
                    item.url
                );
            }
            (Some(_), None, None) => {
                let _ = writeln!(
                    out,
                    "  [{index}] not for you (routed elsewhere): {}",
                    item.url
                );
            }
            (_, reasons, _) => {
                let why = reasons
                    .map(|rs| {
                        rs.iter()
                            .map(|r| reason_words(*r))
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .filter(|s| !s.is_empty());
                item_text(out, index, item, why, attestation);
            }
        }
    }
    if attestation.is_some_and(|a| a.known_hashes_truncated) {
        let _ = writeln!(
            out,
            "  (the broker knows more of these hashes than it lists)"
        );
    }
}

fn item_text(
    out: &mut String,
    index: u16,
    item: &Item,
    why: Option<String>,
    attestation: Option<&Attestation>,
) {
    let pad = "      ";
    let _ = writeln!(out, "  [{index}] {}", item.url);
    if let Some(why) = why {
        let _ = writeln!(out, "{pad}Why you:  {why}");
    }
    let h = &item.hosting;
    let mut hosting = vec![h.country.to_string(), h.ip.to_string()];
    if let Some(asn) = h.asn {
        hosting.push(format!("AS{asn}"));
    }
    if let Some(p) = &h.provider {
        hosting.push(clean(p, ""));
    }
    if let Some(cdn) = &h.cdn {
        hosting.push(format!("behind CDN {}", clean(cdn, "")));
    }
    let _ = writeln!(out, "{pad}Hosting:  {}", hosting.join(" · "));
    let c = &item.classification;
    let _ = writeln!(
        out,
        "{pad}Assessed: {} · {} · victim {} / {} · under {} law · {}",
        word(&c.legal_status),
        word(&c.category),
        word(&c.victim_age_group).replace('_', " "),
        word(&c.victim_gender),
        c.assessing_jurisdiction,
        time(&item.assessed_at)
    );
    let mut flags = Vec::new();
    if let Some(ai) = &c.ai_generated {
        flags.push(format!("AI-generated: {}", word(ai)));
    }
    for (flag, name) in [
        (c.computer_generated, "computer-generated"),
        (c.self_generated, "self-generated"),
        (c.live_streaming, "live-streamed"),
    ] {
        if let Some(v) = flag {
            flags.push(format!("{name}: {}", if v { "yes" } else { "no" }));
        }
    }
    if !flags.is_empty() {
        let _ = writeln!(out, "{pad}          {}", flags.join(" · "));
    }
    let _ = writeln!(
        out,
        "{pad}Site:     {}, {}{}",
        word(&item.site_type).replace('_', " "),
        word(&item.media_type),
        if item.third_party_hosted {
            " (embedded from a third-party host)"
        } else {
            ""
        }
    );
    if let Some(t) = &item.first_seen {
        let _ = writeln!(out, "{pad}First seen: {}", time(t));
    }
    if item.hashes.is_empty() {
        let _ = writeln!(out, "{pad}Hashes:   none");
    }
    for (i, hash) in item.hashes.iter().enumerate() {
        let value = if hash.value.len() > HASH_SHOWN {
            format!(
                "{}… ({} chars)",
                &hash.value[..HASH_SHOWN],
                hash.value.len()
            )
        } else {
            hash.value.clone()
        };
        let known = attestation
            .and_then(|a| {
                a.known_hashes
                    .iter()
                    .find(|k| k.item == index && usize::from(k.hash) == i)
            })
            .map(|k| format!("  ← known: first in referral {}", k.first_referral))
            .unwrap_or_default();
        let label = if i == 0 { "Hashes:  " } else { "         " };
        let _ = writeln!(
            out,
            "{pad}{label} {} {value}{known}",
            hash.algorithm.as_str()
        );
    }
}

/// The message as one JSON object: `event`, the envelope (parsed from the bytes received),
/// `signed_bytes_base64` (the exact bytes the origin signed, to keep as evidence or verify
/// again), the attestation, and what was verified.
pub fn json(message: &Received) -> Value {
    use base64::Engine as _;
    let envelope: Value = serde_json::from_slice(&message.bytes).unwrap_or(Value::Null);
    json!({
        "signed_bytes_base64": base64::engine::general_purpose::STANDARD.encode(&message.bytes),
        "event": "message",
        "kind": message.envelope.kind,
        "id": message.envelope.id,
        "origin": message.envelope.origin,
        "redelivered": message.redelivered,
        "verified": {
            "origin_signature": true,
            "origin_key_id": message.key_id,
            "attestation": message.attestation.is_some(),
        },
        "envelope": envelope,
        "attestation": message.attestation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_neutralised() {
        assert_eq!(clean("a\u{1b}[31mb", ""), "a\u{fffd}[31mb");
        assert_eq!(clean("a\u{9b}b", ""), "a\u{fffd}b");
        assert_eq!(clean("one\ntwo", "  "), "one\n  two");
    }

    #[test]
    fn words_are_wire_names() {
        assert_eq!(
            word(&wire::Category::GroomingSolicitation),
            "grooming_solicitation"
        );
        assert_eq!(word(&wire::State::ForwardedToLea), "forwarded_to_lea");
    }
}
