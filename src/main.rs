//! The `ami-sweeper` binary: the command line and, inside Lambda, the runtime loop. All
//! of it lives in the library (`ami_sweeper::edges::cli`), so it is tested there.

use std::process::ExitCode;

/// mimalloc: the planner allocates and frees hundreds of thousands of small strings, where
/// glibc's allocator spends more time than the planning itself.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    ami_sweeper::edges::cli::main()
}
