//! One item of a referral: a URL with its hashes, classification and hosting facts
//! (`$defs/item`, `$defs/hash`, `$defs/classification`, `$defs/hosting` of
//! `schemas/referral/1.schema.json`).
//!
//! Guarantees: deserialisation refuses unknown fields and `null` for optional ones;
//! [`Item::validate`] checks every bound and pattern the schema checks, plus that the URL
//! parses as a WHATWG URL.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::check;
use super::country::CountryCode;
use super::error::FieldError;
use super::json::present;
use super::limits::{
    MAX_HASHES, MAX_NAME_CHARS, MAX_TMK_PDQF_CHARS, MAX_URL_BYTES, PHOTODNA_BYTES,
};
use super::time;

/// One URL to act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// Absolute http(s) URL in its ASCII form, at most [`MAX_URL_BYTES`].
    pub url: String,
    pub site_type: SiteType,
    /// The material is embedded from another host than the URL's.
    pub third_party_hosted: bool,
    pub media_type: MediaType,
    /// May be empty (a forum thread, a conversation, material that could not be fetched).
    pub hashes: Vec<Hash>,
    pub classification: Classification,
    pub hosting: Hosting,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::optional"
    )]
    pub first_seen: Option<DateTime<Utc>>,
    #[serde(with = "time::required")]
    pub assessed_at: DateTime<Utc>,
}

/// What kind of service the URL is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteType {
    ImageHost,
    FileHost,
    ImageBoard,
    Forum,
    SocialNetwork,
    Website,
    Blog,
    VideoChannel,
    Chat,
    Banner,
    Redirector,
    SearchProvider,
    Other,
}

/// What the material is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaType {
    Image,
    Video,
    Archive,
    Text,
    Other,
}

/// One content hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hash {
    pub algorithm: HashAlgorithm,
    /// Lowercase hex (sha256, sha1, md5, pdq) or canonical standard base64 (photodna, tmk_pdqf).
    pub value: String,
}

/// Hash algorithms hotlines exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashAlgorithm {
    /// 64 lowercase hex characters.
    Sha256,
    /// 40 lowercase hex characters.
    Sha1,
    /// 32 lowercase hex characters.
    Md5,
    /// PDQ perceptual image hash: 256 bits, 64 lowercase hex characters.
    Pdq,
    /// PhotoDNA: 144 bytes, 192 base64 characters (no padding needed).
    Photodna,
    /// TMK+PDQF video hash, level-1 vector: canonical padded base64, 4 to 2048 characters.
    TmkPdqf,
}

impl HashAlgorithm {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha1 => "sha1",
            Self::Md5 => "md5",
            Self::Pdq => "pdq",
            Self::Photodna => "photodna",
            Self::TmkPdqf => "tmk_pdqf",
        }
    }

    /// Whether `value` is well-formed for this algorithm (length and alphabet).
    pub fn accepts(self, value: &str) -> bool {
        match self {
            Self::Sha256 | Self::Pdq => check::lower_hex(value, 64),
            Self::Sha1 => check::lower_hex(value, 40),
            Self::Md5 => check::lower_hex(value, 32),
            // 144 bytes encode to 192 characters with no padding.
            Self::Photodna => {
                value.len() == PHOTODNA_BYTES / 3 * 4
                    && !value.contains('=')
                    && check::canonical_base64(value)
            }
            Self::TmkPdqf => {
                (4..=MAX_TMK_PDQF_CHARS).contains(&value.len()) && check::canonical_base64(value)
            }
        }
    }
}

/// The origin analyst's assessment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Classification {
    pub legal_status: LegalStatus,
    /// Whose law the assessment applied.
    pub assessing_jurisdiction: CountryCode,
    pub category: Category,
    pub victim_age_group: AgeGroup,
    pub victim_gender: Gender,
    /// Absent: not assessed.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub ai_generated: Option<AiGenerated>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub computer_generated: Option<bool>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub self_generated: Option<bool>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub live_streaming: Option<bool>,
}

/// Legal status of the material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegalStatus {
    /// Illegal in every jurisdiction (the international baseline).
    Baseline,
    /// Illegal under the law of the assessing jurisdiction.
    National,
    /// Not illegal; referred for information.
    NotIllegal,
}

/// What the material is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Child sexual abuse material.
    Csam,
    /// Child sexual exploitation material.
    Csem,
    /// Grooming or solicitation of a child.
    GroomingSolicitation,
    Other,
}

/// Apparent age group of the victim(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgeGroup {
    InfantToddler,
    Prepubescent,
    Pubescent,
    Unknown,
}

/// Gender of the victim(s); `both` when several victims of both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gender {
    Female,
    Male,
    Both,
    Unknown,
}

/// Whether the material is (thought to be) made by generative AI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AiGenerated {
    Unknown,
    Suspected,
    Confirmed,
}

/// Where the material is hosted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hosting {
    pub ip: IpAddr,
    /// Routes the item when the referral names no `to`.
    pub country: CountryCode,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub asn: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub provider: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub cdn: Option<String>,
}

impl Item {
    /// Check every bound of the schema; `at` is this item's JSON pointer.
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        let p = |field: &str| format!("{at}/{field}");
        if self.url.len() > MAX_URL_BYTES {
            return Err(FieldError::new(
                p("url"),
                format!("longer than {MAX_URL_BYTES} bytes"),
            ));
        }
        if !check::url_shape(&self.url) {
            return Err(FieldError::new(
                p("url"),
                "not an absolute http(s) URL in ASCII form (host, optional port, then /, ? or #)",
            ));
        }
        if url::Url::parse(&self.url).is_err() {
            return Err(FieldError::new(p("url"), "does not parse as a WHATWG URL"));
        }
        check::count(&p("hashes"), self.hashes.len(), 0, MAX_HASHES)?;
        for (i, h) in self.hashes.iter().enumerate() {
            if !h.algorithm.accepts(&h.value) {
                return Err(FieldError::new(
                    format!("{at}/hashes/{i}/value"),
                    format!("not a well-formed {} value", h.algorithm.as_str()),
                ));
            }
            if self.hashes[..i].contains(h) {
                return Err(FieldError::new(
                    format!("{at}/hashes/{i}"),
                    "repeats an earlier hash",
                ));
            }
        }
        let host = |field: &str| format!("{at}/hosting/{field}");
        if let Some(provider) = &self.hosting.provider {
            check::line(&host("provider"), provider, 1, MAX_NAME_CHARS)?;
        }
        if let Some(cdn) = &self.hosting.cdn {
            check::line(&host("cdn"), cdn, 1, MAX_NAME_CHARS)?;
        }
        if let Some(t) = &self.first_seen {
            check::timestamp(&p("first_seen"), t)?;
        }
        check::timestamp(&p("assessed_at"), &self.assessed_at)
    }
}
