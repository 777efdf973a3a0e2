//! Instances declared by crates of each edition (`callers/`), used here.

#[test]
fn edition_2021_caller() {
    emma_caller_2021::round_trip();
}

#[test]
fn edition_2024_caller() {
    emma_caller_2024::round_trip();
}
