//! What the broker says in its own name: a `notice` (or `checkpoint`) envelope (origin = the registry's broker
//! id), signed with the broker's key exactly like a participant's message, ready to publish.
//!
//! Guarantees: every notice built here passes the notice schema (`Envelope::validate` runs
//! before signing); free text taken from elsewhere (a rejection's detail) is cleaned of
//! control characters and cut to the schema's length, so a hostile detail can neither break
//! the notice nor be refused by it.

use crate::ids::{EnvelopeId, KeyId, ParticipantId};
use crate::reason::ReasonCode;
use crate::signing::Signer;
use crate::wire::error::FieldError;
use crate::wire::limits::MAX_REASON_CHARS;
use crate::wire::{Body, Envelope, Kind, Notice};

/// A broker-signed envelope, ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub id: EnvelopeId,
    pub kind: Kind,
    pub bytes: Vec<u8>,
    pub sig_b64: String,
    pub key_id: KeyId,
}

/// `text` as a notice `detail`: control characters become spaces, at most
/// [`MAX_REASON_CHARS`] characters (cut with `…`), never empty.
pub fn clean_detail(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let trimmed = cleaned.trim();
    if trimmed.is_empty() {
        return "-".to_owned();
    }
    if trimmed.chars().count() <= MAX_REASON_CHARS {
        return trimmed.to_owned();
    }
    let mut cut: String = trimmed.chars().take(MAX_REASON_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// A notice with `code`, about envelope `about`, with a detail.
pub fn notice(code: ReasonCode, about: Option<&EnvelopeId>, detail: &str) -> Notice {
    let mut n = Notice::new(code);
    n.about = about.cloned();
    n.detail = Some(clean_detail(detail));
    n
}

/// Wraps `body` in an envelope from `broker`, checks it against the contract, signs it.
pub fn sign(broker: &ParticipantId, signer: &Signer, body: Notice) -> Result<Signed, FieldError> {
    sign_envelope(signer, Envelope::new(broker.clone(), Body::Notice(body)))
}

/// Checks a broker envelope (a notice, a checkpoint) against the contract and signs it.
pub fn sign_envelope(signer: &Signer, envelope: Envelope) -> Result<Signed, FieldError> {
    envelope.validate()?;
    let bytes = envelope.to_bytes();
    let sig_b64 = signer.sign_b64(&bytes);
    Ok(Signed {
        id: envelope.id,
        kind: envelope.kind,
        bytes,
        sig_b64,
        key_id: signer.key_id().clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_notice_decodes_and_verifies() {
        let signer = Signer::from_seed([3; 32]);
        let broker: ParticipantId = "net.broker".parse().expect("id");
        let about: EnvelopeId = "019ab9a4-8c00-7000-8000-000000000001".parse().expect("id");
        let hostile = format!("bad\u{0}\u{1b}[31m{}", "x".repeat(5000));
        let n = notice(ReasonCode::SchemaViolation, Some(&about), &hostile);
        let s = sign(&broker, &signer, n).expect("valid");
        let e = crate::wire::decode(&s.bytes).expect("decodes");
        assert_eq!(e.origin, broker);
        assert_eq!(e.id, s.id);
        let sig = crate::signing::decode_signature_b64(&s.sig_b64).expect("sig");
        crate::signing::verify(&signer.verifying_key(), &s.bytes, &sig).expect("verifies");
        match e.body {
            Body::Notice(n) => {
                assert_eq!(n.about, Some(about));
                let d = n.detail.expect("detail");
                assert_eq!(d.chars().count(), MAX_REASON_CHARS);
                assert!(!d.chars().any(char::is_control));
            }
            other => panic!("not a notice: {other:?}"),
        }
    }

    #[test]
    fn empty_detail_is_a_dash() {
        assert_eq!(clean_detail(" \u{7} "), "-");
    }
}
