//! ami-sweeper: finds the AMIs an account no longer needs, deregisters them safely and
//! cleans up the storage they leave behind.
//!
//! The crate is split so that the safety rules can be tested without AWS:
//! - [`model`], [`policy`] and [`planner`] are the pure core: no I/O, no clock, no SDK types;
//! - [`awscli`] reads the AWS CLI's JSON into the model (the offline `plan` command);
//! - [`render`] turns plans into tables for people.

pub mod awscli;
pub mod model;
pub mod planner;
pub mod policy;
pub mod render;
pub mod time;

pub use model::{Image, Inventory, Usage};
pub use planner::{plan, Plan};
pub use policy::{Policy, PolicyError};
