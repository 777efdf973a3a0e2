//! `emma-macro-tests`: [`emma::emma_instance!`] called from outside emma,
//! the way users call it.
//!
//! A `macro_rules!` macro is only really tested by crates that invoke it:
//! hygiene, lints, feature gates and symbol collisions show up there, not in
//! emma's own tests. This package (never published) is such a caller, in
//! several shapes:
//!
//! - this library: a `#![no_std]`, `#![forbid(unsafe_code)]` crate that
//!   declares an instance, [`Shared`];
//! - `tests/instances.rs`: two instances in one module, one name in two
//!   modules, instances inside function bodies, doc comments and attributes,
//!   every visibility; each allocates, writes, reads and frees for real and
//!   is shown distinct from the others (`owns`, `stats().mapped`);
//! - `callers/edition2021` and `callers/edition2024`: tiny libraries (path
//!   dev-dependencies, so cargo compiles each with its own edition) that
//!   declare instances under strict lints; `tests/editions.rs` runs them;
//! - `tests/ui.rs` ([trybuild](https://docs.rs/trybuild)): every
//!   `tests/ui/pass/*.rs` must compile and run (among them a
//!   `#![forbid(unsafe_code)]` program using an instance as its
//!   `#[global_allocator]`), every `tests/ui/fail/*.rs` must fail with the
//!   compiler messages in its `.stderr` file.
//!
//! No caller enables a `#![feature]` or needs nightly Rust, in either of
//! emma's modes: `tls` (this package's default, as emma's) and the
//! thread-pointer mode (`--no-default-features`; the callers take emma
//! without default features, so that this selects the mode for all).
//!
//! ```text
//! cargo test -p emma-macro-tests                        # tls
//! cargo +stable test -p emma-macro-tests                # the same on stable Rust
//! cargo test -p emma-macro-tests --no-default-features  # thread-pointer mode
//! TRYBUILD=overwrite cargo test -p emma-macro-tests --test ui   # refresh .stderr files
//! ```

#![no_std]
#![forbid(unsafe_code)]
#![deny(warnings, missing_docs)]

emma::emma_instance!(
    /// An instance declared in a `no_std` crate that forbids `unsafe`.
    pub Shared
);
