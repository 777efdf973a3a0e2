//! trybuild: `ui/pass/*.rs` must compile and run, `ui/fail/*.rs` must fail
//! with the messages in their `.stderr` files (refresh them with
//! `TRYBUILD=overwrite`). trybuild enables this package's features in the
//! cases, so `--features tls` checks them against the `tls` expansion; no
//! case enables a `#![feature]`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
