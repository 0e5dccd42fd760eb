//! ami-sweeper: finds the AMIs an account no longer needs, deregisters them safely and
//! cleans up the storage they leave behind.
//!
//! The folders are the layers, and dependencies only point inwards:
//! - the pure core is its own crate, `ami-sweeper-core` (`crates/core`), re-exported here
//!   as [`model`], [`policy`], [`planner`], [`orphans`], [`events`], [`jobs`], [`mandate`],
//!   [`manifest`], [`verify`], [`fields`], [`pricing`], [`storage`] and [`time`]: no I/O, no clock, no SDK types;
//! - [`ports`] are the narrow interfaces the application needs from AWS, [`error`] their
//!   typed failures;
//! - [`app`] drives the ports: the sweep, the cleanup worker, the run loops, pacing,
//!   reports, progress and stop handling;
//! - [`adapters`] implement the ports with the SDK (one file per service), read the AWS
//!   CLI's JSON for the offline planner, and keep a local in-process queue;
//! - [`edges`] face people and Lambda: the command line, the handler and the tables.

#![warn(missing_docs)]

pub mod adapters;
pub mod app;
pub mod edges;
pub mod error;
pub mod ports;

pub use ami_sweeper_core::{
    approval, chain, coming, events, fields, inventory, jobs, mandate, manifest, model, orphans,
    planner, policy, pricing, recycle_bin, retire, storage, strict, thinning, time, verify,
};
pub use ami_sweeper_core::{plan, Image, Inventory, Plan, Policy, PolicyError, Usage};
