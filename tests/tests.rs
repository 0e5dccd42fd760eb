//! The one integration-test binary (ripgrep's pattern): every suite below is a module of
//! it, so the SDK is linked once, not once per file. `make test-unit` runs the suites that
//! need no emulator (`cargo test --test tests -- cli:: aws_mocks:: ...`); `make test` runs all.
//! The planner's own rules and properties live with the core (`crates/core/tests`).

/// The instant every suite measures ages from (the samples and fixtures are dated to it).
pub const NOW: &str = "2026-11-26T00:00:00Z";

mod moto;

mod aws_mocks;
mod cli;
mod executor;
mod faults_moto;
mod lambda_events;
mod lambda_org;
mod lambda_runtime;
mod notify_moto;
mod org_moto;
mod retire_moto;
mod storage_memory;
mod storage_moto;
mod storage_props;
mod sweep_moto;
mod throttled_moto;
mod usage_moto;
