//! Staged retirement: a condemned image may be deprecated, then disabled for a while, and
//! only then deregistered, each stage a later sweep's work, so that a mistake costs a
//! re-enable, not a rebuild. The stage an image is in is read from the tags ami-sweeper
//! writes on it; a disabled image is deregistered only if the full rules still condemn it
//! when its wait is over. Pure.

use crate::model::{Tags, Timestamp};
use crate::policy::Retire;
use crate::time::{days_after, parse_instant};

/// Written on an image when ami-sweeper disables it: the instant it did (RFC 3339). Part of
/// the documented contract.
pub const DISABLED_AT: &str = "ami-sweeper:disabled-at";
/// Written on an image when ami-sweeper deprecates it: the instant it did.
pub const DEPRECATED_AT: &str = "ami-sweeper:deprecated-at";

/// One retirement call on an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetireStep {
    /// Set its `DeprecationTime`, and tag it [`DEPRECATED_AT`].
    Deprecate,
    /// Tag it [`DISABLED_AT`] (first: a disable that fails is retried), then disable it.
    Disable,
    /// Undo what ami-sweeper did to an image the rules no longer condemn: `EnableImage`
    /// when it is disabled, `DisableImageDeprecation` when ami-sweeper deprecated it, then
    /// remove both of ami-sweeper's tags, so that a later wait starts from ami-sweeper's
    /// own next disable, never from this old one.
    Enable {
        /// The image is disabled now.
        disabled: bool,
        /// ami-sweeper deprecated it ([`DEPRECATED_AT`]).
        deprecated: bool,
    },
}

/// What to do next with an image the rules condemn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Set its `DeprecationTime` (`retire.deprecate`); it may go on at the next sweep.
    Deprecate,
    /// Disable it (`retire.disable_for_days`); it may be deregistered after the wait.
    Disable {
        /// When the wait will be over.
        eligible: Timestamp,
    },
    /// Disabled by an earlier sweep, still waiting.
    Wait {
        /// When the wait will be over.
        eligible: Timestamp,
    },
    /// Every stage is done: deregister.
    Deregister,
}

/// The next stage of a condemned image with these tags, under the policy's `retire`.
/// Whether it is disabled now matters: an image re-enabled by hand starts its wait again.
pub fn stage(retire: &Retire, tags: &Tags, disabled: bool, now: Timestamp) -> Stage {
    if retire.deprecate && !tags.contains_key(DEPRECATED_AT) {
        return Stage::Deprecate;
    }
    let Some(days) = retire.disable_for_days else {
        return Stage::Deregister;
    };
    let since = tags
        .get(DISABLED_AT)
        .and_then(parse_instant)
        .filter(|_| disabled);
    match since {
        None => Stage::Disable {
            eligible: days_after(now, days),
        },
        Some(t) if days_after(t, days) > now => Stage::Wait {
            eligible: days_after(t, days),
        },
        Some(_) => Stage::Deregister,
    }
}

/// Whether ami-sweeper retired this image (its tags say so): if the rules no longer condemn
/// it, the retirement is undone and the tags removed (a tag left behind on an image enabled
/// again would let a later, manual disable count as ami-sweeper's old one).
pub fn retired_by_us(tags: &Tags) -> bool {
    tags.contains_key(DISABLED_AT) || tags.contains_key(DEPRECATED_AT)
}

/// The step that undoes ami-sweeper's retirement of an image in this state with these tags.
pub fn undo(tags: &Tags, disabled: bool) -> RetireStep {
    RetireStep::Enable {
        disabled: disabled && tags.contains_key(DISABLED_AT),
        deprecated: tags.contains_key(DEPRECATED_AT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        parse_instant(s).unwrap()
    }

    #[test]
    fn stages_follow_the_tags_and_the_clock() {
        let now = at("2026-11-26T00:00:00Z");
        let both = Retire {
            deprecate: true,
            disable_for_days: Some(7),
        };
        let mut tags = Tags::new();
        assert_eq!(stage(&both, &tags, false, now), Stage::Deprecate);
        tags.insert(DEPRECATED_AT, "2026-11-25T00:00:00Z");
        assert_eq!(
            stage(&both, &tags, false, now),
            Stage::Disable {
                eligible: at("2026-12-03T00:00:00Z")
            }
        );
        tags.insert(DISABLED_AT, "2026-11-20T00:00:00Z");
        assert_eq!(
            stage(&both, &tags, true, now),
            Stage::Wait {
                eligible: at("2026-11-27T00:00:00Z")
            }
        );
        // Re-enabled by hand: the wait starts again.
        assert!(matches!(
            stage(&both, &tags, false, now),
            Stage::Disable { .. }
        ));
        assert_eq!(
            stage(&both, &tags, true, at("2026-11-27T00:00:00Z")),
            Stage::Deregister
        );
        assert_eq!(
            stage(&Retire::default(), &Tags::new(), false, now),
            Stage::Deregister
        );
        assert!(retired_by_us(&tags) && !retired_by_us(&Tags::new()));
        assert_eq!(
            undo(&tags, true),
            RetireStep::Enable {
                disabled: true,
                deprecated: true
            }
        );
        let mut by_hand = Tags::new();
        by_hand.insert(DEPRECATED_AT, "2026-11-25T00:00:00Z");
        assert_eq!(
            undo(&by_hand, true),
            RetireStep::Enable {
                disabled: false,
                deprecated: true
            },
            "an image disabled by someone else is not enabled by ami-sweeper"
        );
    }
}
