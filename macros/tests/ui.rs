//! trybuild: `ui/pass/*.rs` must compile and run, `ui/fail/*.rs` must fail
//! with the messages in their `.stderr` files (refresh them with
//! `TRYBUILD=overwrite`). trybuild enables this package's features in the
//! cases, so they are checked against the expansion of the mode under test
//! (`tls` by default, `--no-default-features` for the thread-pointer mode);
//! the `.stderr` files are the same for both, and for stable and nightly
//! Rust. No case enables a `#![feature]`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
