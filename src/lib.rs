//! ami-sweeper: finds the AMIs an account no longer needs, deregisters them safely and
//! cleans up the storage they leave behind.
//!
//! The crate is split so that the safety rules can be tested without AWS:
//! - [`model`], [`policy`] and [`planner`] are the pure core: no I/O, no clock, no SDK types;
//! - [`awscli`] reads the AWS CLI's JSON into the model (the offline `plan` command);
//! - [`render`] turns plans into tables for people;
//! - [`ports`] are the narrow interfaces the sweep needs from AWS, [`aws`] implements
//!   them with the SDK (one file per service);
//! - [`sweep`] (deregistration) and [`cleanup`] (the queue worker) drive the ports with
//!   bounded concurrency and a rate limit, and fill in a [`report`];
//! - [`orphans`] finds storage whose image is gone (pure, like the planner);
//! - [`stop`] carries signals and deadlines to the executor;
//! - [`verify`] (pure) and [`worker`] check each queued job against AWS before it runs;
//! - [`events`] maps Lambda triggers to sweep requests and [`lambda`] answers them.

#![warn(missing_docs)]

pub mod aws;
pub mod awscli;
pub mod cleanup;
pub mod error;
pub mod events;
pub mod fields;
pub mod jobs;
pub mod lambda;
pub mod local_queue;
pub mod manifest;
pub mod model;
pub mod orphans;
pub mod planner;
pub mod policy;
pub mod ports;
pub mod progress;
pub mod ratelimit;
pub mod render;
pub mod report;
pub mod run;
pub mod stop;
pub mod sweep;
pub mod time;
pub mod verify;
pub mod worker;

pub use model::{Image, Inventory, Usage};
pub use planner::{plan, Plan};
pub use policy::{Policy, PolicyError};
