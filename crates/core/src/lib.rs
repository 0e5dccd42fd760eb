//! ami-sweeper's pure core: what an image is ([`model`]) and what is known of a region
//! ([`inventory`]), what the deployment allows
//! ([`policy`]), what to do with each image ([`planner`]) and with storage whose image is
//! gone ([`orphans`]), the one rule for when storage may go ([`storage`]), and the shapes that cross the edges ([`events`], [`jobs`],
//! [`manifest`]), read strictly ([`strict`]: unknown keys refused with their path), with the
//! checks a queued job must pass ([`verify`]) and the mapping of EC2's raw fields
//! ([`fields`]), what the storage it deletes costs ([`pricing`]), what the lookahead
//! will act on ([`coming`]), approved plans ([`approval`]), and strict reading of
//! documents and messages ([`strict`]).
//! The modules' import order is ARCHITECTURE.md's "Import order inside the core".
//!
//! A separate crate so the compiler, not a convention, keeps it free of I/O, clocks and
//! AWS SDK types: this crate does not depend on them, and its tests build in seconds.

#![warn(missing_docs)]

pub mod approval;
pub mod chain;
pub mod coming;
pub mod events;
pub mod fields;
pub mod inventory;
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
pub mod strict;
pub mod thinning;
pub mod time;
pub mod verify;

pub use inventory::Inventory;
pub use model::{Image, Usage};
pub use planner::{plan, Plan};
pub use policy::{Policy, PolicyError};
