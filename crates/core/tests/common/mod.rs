//! Builders shared by the planner tests.
#![allow(dead_code)]

use ami_sweeper_core::inventory::Inventory;
use ami_sweeper_core::model::{Image, ImageState, Protection, SnapshotRef, Timestamp, Usage};
use ami_sweeper_core::time::parse_instant;
use ami_sweeper_core::Policy;

/// A runner over a fixed seed (ChaCha, 2,000 cases, nothing persisted): what a checker
/// runs a deliberately wrong rule against, to show that it finds the mistake.
pub fn seeded_runner() -> proptest::test_runner::TestRunner {
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    TestRunner::new_with_rng(
        Config {
            cases: 2000,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    )
}

/// The fixed instant the tests measure ages from.
pub fn now() -> Timestamp {
    parse_instant("2026-11-26T00:00:00Z").unwrap()
}

/// `days` days (and `secs` more seconds) before [`now`].
pub fn ago(days: i64, secs: i64) -> Timestamp {
    now() - chrono::TimeDelta::days(days) - chrono::TimeDelta::seconds(secs)
}

/// A fluent image builder: `img("ami-1", "web-1", 40).tag("app", "web").build()`.
pub struct ImageBuilder(Image);

pub fn img(id: &str, name: &str, age_days: i64) -> ImageBuilder {
    ImageBuilder(Image::new(id, name, ago(age_days, 0)))
}

impl ImageBuilder {
    pub fn tag(mut self, k: &str, v: &str) -> Self {
        self.0.tags.insert(k, v);
        self
    }
    pub fn state(mut self, s: &str) -> Self {
        self.0.state = ImageState::parse(s);
        self
    }
    pub fn created(mut self, t: Timestamp) -> Self {
        self.0.creation_date = t;
        self
    }
    pub fn protection(mut self, p: &str) -> Self {
        self.0.protection = Protection::parse(Some(p));
        self
    }
    pub fn public(mut self) -> Self {
        self.0.public = true;
        self
    }
    pub fn shared_with(mut self, account: &str) -> Self {
        self.0.shared_with.push(account.into());
        self
    }
    pub fn launched(mut self, t: Timestamp) -> Self {
        self.0.last_launched = Some(t);
        self
    }
    pub fn snap(mut self, id: &str, gib: u64) -> Self {
        self.0.snapshots.push(SnapshotRef {
            id: id.into(),
            size_gib: Some(gib),
        });
        self
    }
    pub fn instance_store(mut self, location: &str) -> Self {
        self.0.root_device = ami_sweeper_core::model::RootDevice::InstanceStore;
        self.0.image_location = Some(location.into());
        self
    }
    pub fn build(self) -> Image {
        self.0
    }
}

/// Parses a policy, panicking on error (tests write valid ones).
pub fn policy(json: &str) -> Policy {
    Policy::from_json(json).unwrap_or_else(|e| panic!("{e}"))
}

/// An inventory with no usage.
pub fn inventory(images: Vec<Image>) -> Inventory {
    Inventory::new(images, Usage::new()).unwrap()
}
