//! emma's benchmark suite.
//!
//! Two halves share this library:
//! - the **workload** side ([`workloads`], [`selected`], [`blob`], [`rng`], [`proc_status`]),
//!   compiled once per allocator into `workload` binaries (each allocator must be the
//!   `#[global_allocator]`, so it cannot be switched at run time);
//! - the **runner** side ([`runner`], [`report`]), which builds those binaries, runs them
//!   interleaved, and writes `bench/results/latest.md` and `chart.svg`.
//!
//! Nothing here is part of `cargo test` at the workspace root: the crate is a workspace member
//! outside `default-members`, and it has no tests of its own beyond unit tests of the
//! statistics and report helpers.

pub mod blob;
pub mod proc_status;
pub mod report;
pub mod rng;
pub mod runner;
pub mod selected;
pub mod workloads;
