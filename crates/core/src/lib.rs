//! ami-sweeper's pure core: what an image is ([`model`]), what the deployment allows
//! ([`policy`]), what to do with each image ([`planner`]) and with storage whose image is
//! gone ([`orphans`]), the one rule for when storage may go ([`storage`]), and the shapes that cross the edges ([`events`], [`jobs`],
//! [`manifest`]), with the checks a queued job must pass ([`verify`]) and the mapping of
//! EC2's raw fields ([`fields`]), and what the storage it deletes costs ([`pricing`]).
//!
//! A separate crate so the compiler, not a convention, keeps it free of I/O, clocks and
//! AWS SDK types: this crate does not depend on them, and its tests build in seconds.

#![warn(missing_docs)]

pub mod events;
pub mod fields;
pub mod jobs;
pub mod mandate;
pub mod manifest;
pub mod model;
pub mod orphans;
pub mod planner;
pub mod policy;
pub mod pricing;
pub mod recycle_bin;
pub mod retire;
pub mod storage;
pub mod thinning;
pub mod time;
pub mod verify;

pub use model::{Image, Inventory, Usage};
pub use planner::{plan, Plan};
pub use policy::{Policy, PolicyError};
