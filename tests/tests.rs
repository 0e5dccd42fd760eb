//! The one integration-test binary (ripgrep's pattern): every suite below is a module of
//! it, so the SDK is linked once, not once per file. `make test-unit` runs the suites that
//! need no emulator (`cargo test --test tests -- planner_rules:: ...`); `make test` runs all.

mod common;
mod moto;

mod aws_mocks;
mod cli;
mod faults_moto;
mod lambda_events;
mod lambda_runtime;
mod planner_props;
mod planner_rules;
mod sweep_moto;
mod throttled_moto;
