//! Instances declared from outside the emma crate.
