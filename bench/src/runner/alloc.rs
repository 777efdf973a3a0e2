//! The allocators the suite compares.

/// One allocator: its display name (as the workload binary reports it) and the cargo feature of
/// `emma-bench` that makes it the global allocator.
#[derive(Clone, Copy, Debug)]
pub struct Allocator {
    /// Name in the report; must equal `selected::NAME` of a binary built with `feature`.
    pub name: &'static str,
    /// Cargo feature of emma-bench selecting it.
    pub feature: &'static str,
    /// Colour of its bars in the chart.
    pub colour: &'static str,
    /// Needs `cmake` to build (snmalloc).
    pub needs_cmake: bool,
    /// Repetitions it takes part in at most (see [`ALL`] for why one peer has a cap).
    pub max_reps: usize,
}

/// The allocator every ratio is taken against.
pub const BASELINE: &str = "mimalloc";

/// Every allocator, in report order: emma first, then the peers.
///
/// The original emma runs in the first repetition only: it is 10–100× slower than the others
/// (about 190 s for one pass of the suite, three quarters of a 3-repetition run), and at that
/// distance a median over three runs would not change the picture, only triple the wait.
pub const ALL: &[Allocator] = &[
    Allocator {
        name: "emma-tls",
        feature: "a-emma-tls",
        colour: "#d62728",
        needs_cmake: false,
        max_reps: usize::MAX,
    },
    Allocator {
        name: "emma",
        feature: "a-emma",
        colour: "#ff9896",
        needs_cmake: false,
        max_reps: usize::MAX,
    },
    Allocator {
        name: "mimalloc",
        feature: "a-mimalloc",
        colour: "#1f77b4",
        needs_cmake: false,
        max_reps: usize::MAX,
    },
    Allocator {
        name: "jemalloc",
        feature: "a-jemalloc",
        colour: "#2ca02c",
        needs_cmake: false,
        max_reps: usize::MAX,
    },
    Allocator {
        name: "snmalloc",
        feature: "a-snmalloc",
        colour: "#9467bd",
        needs_cmake: true,
        max_reps: usize::MAX,
    },
    Allocator {
        name: "glibc",
        feature: "a-system",
        colour: "#7f7f7f",
        needs_cmake: false,
        max_reps: usize::MAX,
    },
    Allocator {
        name: "emma-0.0.1",
        feature: "a-emma-orig",
        colour: "#bcbd22",
        needs_cmake: false,
        max_reps: 1,
    },
];
