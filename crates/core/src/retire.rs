//! Staged retirement: a condemned image may be deprecated, then disabled for a while, and
//! only then deregistered, each stage a later sweep's work, so that a mistake costs a
//! re-enable, not a rebuild. The stage an image is in is read from the tags ami-sweeper
//! writes on it; a disabled image is deregistered only if the full rules still condemn it
//! when its wait is over. What ami-sweeper did to an image never changes how the rules
//! see it ([`as_it_was`]), so a retiring image stays with the rule that began its
//! retirement. Pure.

use std::borrow::Cow;

use crate::model::{Image, ImageState, Tags, Timestamp};
use crate::policy::Retire;
use crate::time::{days_after, parse_instant};

/// Written on an image when ami-sweeper disables it: the instant it did (RFC 3339). Part of
/// the documented contract.
pub const DISABLED_AT: &str = "ami-sweeper:disabled-at";
/// Written on an image when ami-sweeper deprecates it: the instant it did.
pub const DEPRECATED_AT: &str = "ami-sweeper:deprecated-at";
/// Written on an image, with [`DISABLED_AT`], when ami-sweeper disables it: what the image
/// was before ([`Before`]). `DisableImage` makes an image private, and an image someone
/// else disabled is not ami-sweeper's to enable; the rules judge it as it was.
pub const DISABLED_FROM: &str = "ami-sweeper:disabled-from";
/// The prefix of every tag ami-sweeper writes: none is visible to the rules.
pub use crate::model::OWN_TAG_PREFIX;
/// The tags ami-sweeper writes on an image while retiring it, removed when it undoes the
/// retirement.
pub const RETIREMENT_TAGS: [&str; 3] = [DEPRECATED_AT, DISABLED_AT, DISABLED_FROM];

/// One retirement call on an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetireStep {
    /// Set its `DeprecationTime`, and tag it [`DEPRECATED_AT`].
    Deprecate,
    /// Tag it [`DISABLED_AT`] and [`DISABLED_FROM`] (first: a disable that fails is
    /// retried), then disable it.
    Disable {
        /// What it is now, recorded in [`DISABLED_FROM`].
        from: Before,
    },
    /// Undo what ami-sweeper did to an image the rules no longer condemn: `EnableImage`
    /// when it is disabled, `DisableImageDeprecation` when ami-sweeper deprecated it, then
    /// remove ami-sweeper's [`RETIREMENT_TAGS`], so that a later wait starts from ami-sweeper's
    /// own next disable, never from this old one.
    Enable {
        /// The image is disabled now.
        disabled: bool,
        /// ami-sweeper deprecated it ([`DEPRECATED_AT`]).
        deprecated: bool,
    },
}

/// What an image was when ami-sweeper disabled it: the value of [`DISABLED_FROM`], its
/// state (`available`, `failed`, `error`, or `disabled` when someone else had disabled it:
/// ami-sweeper only started its wait, and never enables it) and ` public` when it was
/// (`DisableImage` made it private).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Before {
    /// Its state: one of the settled ones, the only ones a condemned image has.
    pub state: Settled,
    /// It was public.
    pub public: bool,
}

/// A settled state (see [`ImageState::is_settled`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// `available`.
    Available,
    /// `failed`.
    Failed,
    /// `error`.
    Error,
    /// `disabled`.
    Disabled,
}

impl Settled {
    fn state(self) -> ImageState {
        match self {
            Self::Available => ImageState::Available,
            Self::Failed => ImageState::Failed,
            Self::Error => ImageState::Error,
            Self::Disabled => ImageState::Disabled,
        }
    }
}

impl Before {
    /// What `img` is now (a condemned image is settled; any other state reads `available`).
    pub fn of(img: &Image) -> Self {
        let state = match img.state {
            ImageState::Failed => Settled::Failed,
            ImageState::Error => Settled::Error,
            ImageState::Disabled => Settled::Disabled,
            _ => Settled::Available,
        };
        Self {
            state,
            public: img.public,
        }
    }

    /// The tag's value, e.g. `available public`.
    pub fn tag_value(self) -> String {
        let state = self.state.state();
        if self.public {
            format!("{state} public")
        } else {
            state.to_string()
        }
    }

    /// What the tag says; absent (a disable by an earlier version) or unreadable: available
    /// and private, the image such a version disabled.
    pub fn recorded(tags: &Tags) -> Self {
        let value = tags.get(DISABLED_FROM).unwrap_or_default();
        let mut words = value.split(' ');
        let state = match words.next() {
            Some("failed") => Settled::Failed,
            Some("error") => Settled::Error,
            Some("disabled") => Settled::Disabled,
            _ => Settled::Available,
        };
        Self {
            state,
            public: words.next() == Some("public"),
        }
    }
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

/// The step that undoes ami-sweeper's retirement of an image in this state with these tags:
/// it enables only an image it disabled itself, never one someone else had disabled.
pub fn undo(tags: &Tags, disabled: bool) -> RetireStep {
    RetireStep::Enable {
        disabled: disabled
            && tags.contains_key(DISABLED_AT)
            && Before::recorded(tags).state != Settled::Disabled,
        deprecated: tags.contains_key(DEPRECATED_AT),
    }
}

/// What a retirement step leaves on an image: the tags ami-sweeper writes (stamped `now`)
/// and what EC2 does (`DisableImage`: disabled and private, its launch permissions gone;
/// `EnableImage`: available again). The in-memory account applies it, and the planner's
/// properties check plans against it.
pub fn take_step(img: &mut Image, step: RetireStep, now: Timestamp) {
    let stamp = crate::time::format_instant(now);
    match step {
        RetireStep::Deprecate => img.tags.insert(DEPRECATED_AT, stamp),
        RetireStep::Disable { from } => {
            img.tags.insert(DISABLED_AT, stamp);
            img.tags.insert(DISABLED_FROM, from.tag_value());
            img.state = ImageState::Disabled;
            img.public = false;
            img.shared_with.clear();
        }
        RetireStep::Enable { disabled, .. } => {
            if disabled {
                img.state = ImageState::Available;
            }
            for tag in RETIREMENT_TAGS {
                img.tags.remove(tag);
            }
        }
    }
}

/// Whether ami-sweeper disabled the image and it is still disabled: its own
/// [`DISABLED_AT`] tag, the `disabled` state, and it was not disabled already
/// ([`DISABLED_FROM`]). Such an image is one the sweeper is retiring, not one disabled by
/// hand or by someone else.
pub fn disabled_by_us(img: &Image) -> bool {
    img.state == ImageState::Disabled
        && img.tags.contains_key(DISABLED_AT)
        && Before::recorded(&img.tags).state != Settled::Disabled
}

/// The image as the rules see it: as it was before ami-sweeper's own calls. While
/// ami-sweeper's own disable holds, its state and publicity read as they were
/// ([`DISABLED_FROM`]); none of the `ami-sweeper:*` tags is visible. So what the sweep did
/// to an image never moves it to another rule, never changes its lineage, and an image
/// the sweeper is retiring counts for `keep_count` as an available one. Borrowed (no
/// copy) for an image without ami-sweeper's tags.
pub fn as_it_was(img: &Image) -> Cow<'_, Image> {
    if !img.tags.iter().any(|(k, _)| k.starts_with(OWN_TAG_PREFIX)) {
        return Cow::Borrowed(img);
    }
    let mut was = img.clone();
    // Its state and publicity when ami-sweeper's DisableImage (or its wait on an image
    // someone else disabled) began, while that holds.
    if img.state == ImageState::Disabled && img.tags.contains_key(DISABLED_AT) {
        let before = Before::recorded(&img.tags);
        was.state = before.state.state();
        was.public = before.public;
    }
    was.tags = img
        .tags
        .iter()
        .filter(|(k, _)| !k.starts_with(OWN_TAG_PREFIX))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Cow::Owned(was)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_see_an_image_as_it_was_before_the_sweepers_calls() {
        let now = at("2026-11-26T00:00:00Z");
        let mut img = Image::new("ami-1", "web-1", at("2025-01-01T00:00:00Z"));
        img.public = true;
        img.tags.insert("app", "web");
        assert!(
            matches!(as_it_was(&img), Cow::Borrowed(_)),
            "nothing to hide"
        );
        let before = img.clone();
        take_step(&mut img, RetireStep::Deprecate, now);
        let from = Before::of(&img);
        take_step(&mut img, RetireStep::Disable { from }, now);
        assert!(disabled_by_us(&img) && !img.public);
        assert_eq!(*as_it_was(&img), before);
        // Disabled by hand after the sweeper deprecated it: still disabled to the rules.
        let mut by_hand = before.clone();
        take_step(&mut by_hand, RetireStep::Deprecate, now);
        by_hand.state = ImageState::Disabled;
        assert_eq!(as_it_was(&by_hand).state, ImageState::Disabled);
        assert!(as_it_was(&by_hand).tags.get(DEPRECATED_AT).is_none());
        // Its wait started by ami-sweeper: still disabled to the rules, never enabled by it.
        let from = Before::of(&by_hand);
        take_step(&mut by_hand, RetireStep::Disable { from }, now);
        assert!(!disabled_by_us(&by_hand));
        assert_eq!(as_it_was(&by_hand).state, ImageState::Disabled);
        assert!(matches!(
            undo(&by_hand.tags, true),
            RetireStep::Enable {
                disabled: false,
                ..
            }
        ));
        // Undone: every tag of the sweeper's goes, and the image is as before.
        let step = undo(&img.tags, true);
        take_step(&mut img, step, now);
        img.public = true;
        assert_eq!(img, before);
    }

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
