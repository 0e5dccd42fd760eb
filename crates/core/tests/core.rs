//! The core's one integration-test binary: the planner's rules, one test per rule, and its
//! properties. It links no SDK, so `cargo test -p ami-sweeper-core` is the quick loop.

mod common;

mod approval_props;
mod chain_props;
mod layers;
mod mandate_props;
mod manifest_parts;
mod planner_multi_rules;
mod planner_props;
mod planner_retiring;
mod planner_rules;
mod planner_thinning;
mod planner_thinning_props;
mod retire_props;
