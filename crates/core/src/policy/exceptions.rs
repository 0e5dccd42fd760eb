//! Exceptions that expire: an image kept as `excepted` until an instant, then decided as
//! usual. Two sources, read by one function ([`Policy::exception_for`]) that the planner
//! calls for the live sweep and the offline `plan` alike: the image's own tag
//! `ami-sweeper:keep-until` (with `ami-sweeper:keep-reason`), and the policy's
//! `exceptions` list (image ids, or tags matched like `exclude_tags`). Pure.

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{excluded, unique_keys, Glob, Policy, PolicyError};
use crate::model::{Image, Timestamp};
use crate::time::{days_after, format_instant, parse_until};

/// The tag that keeps an image until a date (through the end of that UTC day) or an
/// RFC 3339 instant. In ami-sweeper's own namespace, so the rules never see it: only
/// [`Policy::exception_for`] reads it.
pub const KEEP_UNTIL_TAG: &str = "ami-sweeper:keep-until";

/// The tag saying why an image carries `ami-sweeper:keep-until` (optional).
pub const KEEP_REASON_TAG: &str = "ami-sweeper:keep-reason";

/// The `source` of an exception read from the image's tag.
pub const TAG_SOURCE: &str = "tag";

/// One entry of the policy's `exceptions`: the images it names are kept (`excepted`)
/// until `until`, then decided as usual.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [{"required": ["image_ids"]}, {"required": ["tags"]}]))]
pub struct Exception {
    /// The images it keeps, by id (`ami-...`). Give this or `tags`, not both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_ids: Vec<String>,
    /// The images it keeps, by tag: an image carrying any of these keys with a value the
    /// glob matches (as `exclude_tags` match). Give this or `image_ids`, not both.
    #[serde(
        default,
        deserialize_with = "unique_keys",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub tags: BTreeMap<String, Glob>,
    /// When it lapses: an ISO date (`2027-03-31`, kept through the end of that UTC day) or
    /// an RFC 3339 instant. Refused beyond `limits.max_exception_days` from the run's instant.
    pub until: Until,
    /// Why the images are kept (a ticket, a person): reports and the lapsing list show it.
    pub reason: String,
}

impl Exception {
    /// Whether the entry names `img` (by id, or by one of its tags).
    pub fn names(&self, img: &Image) -> bool {
        self.image_ids.contains(&img.id) || excluded(&self.tags, &img.tags)
    }
}

/// An exception's end as written, and the instant it means ([`parse_until`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Until {
    /// As written in the policy (serialized back unchanged).
    pub text: String,
    /// The first instant the exception no longer holds.
    pub at: Timestamp,
}

impl<'de> Deserialize<'de> for Until {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let at = parse_until(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is neither an ISO date (2027-03-31) nor an RFC 3339 instant"
            ))
        })?;
        Ok(Self { text, at })
    }
}

impl Serialize for Until {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl JsonSchema for Until {
    fn schema_name() -> Cow<'static, str> {
        "Until".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "An ISO date (kept through the end of that UTC day) or an RFC 3339 instant."
        })
    }
}

/// What keeps an image as `excepted`: the exception with the latest end among those that
/// hold (an unreadable tag holds for ever), where it comes from, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExceptionNote {
    /// `tag` (`ami-sweeper:keep-until`) or `exceptions[i]` (the policy's entry).
    pub source: String,
    /// The first instant it no longer holds; null when the tag is unreadable.
    #[serde(serialize_with = "crate::time::ser_opt_instant")]
    pub until: Option<Timestamp>,
    /// `ami-sweeper:keep-reason`, or the entry's `reason`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why the report mentions it: an unreadable tag (kept: fail closed), or a tag beyond
    /// `limits.max_exception_days` (still kept, reported).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl ExceptionNote {
    /// One line for tables: `excepted until 2027-04-01T00:00:00Z (tag: OPS-1)`, or
    /// `excepted, date unreadable (tag)`.
    pub fn describe(&self) -> String {
        let until = self.until.map_or_else(
            || ", date unreadable".to_string(),
            |t| format!(" until {}", format_instant(t)),
        );
        let reason = self
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        format!("excepted{until} ({}{reason})", self.source)
    }

    /// Whether it lapses within `[now, horizon]`: what the summaries list as lapsing.
    pub fn lapses_between(&self, now: Timestamp, horizon: Timestamp) -> bool {
        self.until.is_some_and(|t| now <= t && t <= horizon)
    }
}

impl Policy {
    /// The exception that keeps `img` at `now`, if one does: its `ami-sweeper:keep-until`
    /// tag (read from the image as it is: the rules never see `ami-sweeper:` tags) or an
    /// entry of `exceptions` that names it, whichever holds longest. A tag that is not a
    /// date keeps the image and says so (fail closed); one beyond `max_exception_days`
    /// keeps it too, reported. At and after its instant an exception no longer holds.
    pub fn exception_for(&self, img: &Image, now: Timestamp) -> Option<ExceptionNote> {
        let mut best: Option<ExceptionNote> = None;
        if let Some(raw) = img.tags.get(KEEP_UNTIL_TAG) {
            let reason = img
                .tags
                .get(KEEP_REASON_TAG)
                .filter(|r| !r.trim().is_empty())
                .map(str::to_string);
            let note = |until, problem| ExceptionNote {
                source: TAG_SOURCE.to_string(),
                until,
                reason: reason.clone(),
                problem,
            };
            match parse_until(raw) {
                None => {
                    return Some(note(
                        None,
                        Some(format!(
                            "{KEEP_UNTIL_TAG} {raw:?} is neither an ISO date nor an RFC 3339 \
                             instant: the image is kept until the tag is corrected"
                        )),
                    ))
                }
                Some(t) if now < t => {
                    let problem = self.beyond_horizon(t, now).map(|days| {
                        format!(
                            "{KEEP_UNTIL_TAG} {raw:?} is beyond limits.max_exception_days \
                             ({days}): the image is kept, shorten the tag"
                        )
                    });
                    best = Some(note(Some(t), problem));
                }
                Some(_) => {}
            }
        }
        for (i, e) in self.exceptions.iter().enumerate() {
            let longer = best.as_ref().is_none_or(|b| b.until < Some(e.until.at));
            if longer && now < e.until.at && e.names(img) {
                best = Some(ExceptionNote {
                    source: format!("exceptions[{i}]"),
                    until: Some(e.until.at),
                    reason: Some(e.reason.clone()),
                    problem: None,
                });
            }
        }
        best
    }

    /// `limits.max_exception_days` when `until` lies beyond it from `now` (more than that
    /// many whole days later): the one horizon test of the run, the tags and `lint`.
    pub(super) fn beyond_horizon(&self, until: Timestamp, now: Timestamp) -> Option<u64> {
        self.limits
            .max_exception_days
            .filter(|d| until > days_after(now, *d))
    }

    /// The policy's exceptions against the run's instant: an entry whose `until` lies
    /// beyond `limits.max_exception_days` from `now` is refused with its path. Every run
    /// (live sweep, Lambda, offline `plan`) calls this once its instant is known.
    pub fn check_exceptions_at(&self, now: Timestamp) -> Result<(), PolicyError> {
        for (i, e) in self.exceptions.iter().enumerate() {
            if let Some(days) = self.beyond_horizon(e.until.at, now) {
                return Err(PolicyError::new(
                    format!("exceptions[{i}].until"),
                    format!(
                        "{:?} is more than limits.max_exception_days ({days}) after the run's \
                         instant {}; shorten the exception or raise the limit",
                        e.until.text,
                        format_instant(now)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The entries' own checks, with their paths: `image_ids` or `tags` (one, not empty),
    /// ids that are AMI ids, tag keys that are neither empty nor ami-sweeper's own, a reason.
    pub(super) fn validate_exceptions(&self) -> Result<(), PolicyError> {
        for (i, e) in self.exceptions.iter().enumerate() {
            let at = |f: &str| format!("exceptions[{i}]{f}");
            match (e.image_ids.is_empty(), e.tags.is_empty()) {
                (true, true) => {
                    return Err(PolicyError::new(
                        at(""),
                        "names no image: give `image_ids` or `tags`",
                    ))
                }
                (false, false) => {
                    return Err(PolicyError::new(
                        at(""),
                        "give `image_ids` or `tags`, not both (two entries if both are meant)",
                    ))
                }
                _ => {}
            }
            // Lower-case hex only: AMI ids are written so, and ids compare exactly, so an
            // `ami-0A` would be accepted yet name no image (and keep nothing).
            let is_ami = |id: &str| {
                id.strip_prefix("ami-").is_some_and(|h| {
                    !h.is_empty()
                        && h.bytes()
                            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                })
            };
            if let Some((j, id)) = e.image_ids.iter().enumerate().find(|(_, id)| !is_ami(id)) {
                return Err(PolicyError::new(
                    at(&format!(".image_ids[{j}]")),
                    format!("{id:?} is not an AMI id like \"ami-0123456789abcdef0\" (lower-case)"),
                ));
            }
            if e.tags.contains_key("") {
                return Err(PolicyError::new(at(".tags"), "tag keys must not be empty"));
            }
            if let Some(k) = e.tags.keys().find(|k| super::is_own_tag(k)) {
                return Err(PolicyError::new(at(".tags"), super::own_tag_error(k)));
            }
            if e.reason.trim().is_empty() {
                return Err(PolicyError::new(
                    at(".reason"),
                    "must say why the images are kept",
                ));
            }
        }
        Ok(())
    }
}
