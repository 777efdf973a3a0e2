//! The allocators the suite compares, in two modes.
//!
//! - **Rust mode**: the allocator is the workload binary's `#[global_allocator]` (one binary per
//!   allocator, selected by a cargo feature).
//! - **C mode**: the `glibc` binary (Rust's `System` allocator, i.e. `malloc`, `free` without a
//!   size, `realloc`, `posix_memalign`) runs with the allocator's shared library in
//!   `LD_PRELOAD`, so every call goes through the PLT into a drop-in library, as in a C program:
//!   emma's drop-in library against Debian's builds of mimalloc, jemalloc and tcmalloc, and
//!   glibc itself (the same binary without a preload).

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
    /// The mode(s) it is reported in.
    pub mode: Mode,
    /// The library put in `LD_PRELOAD` (C mode).
    pub preload: Preload,
}

/// Which comparison an allocator belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The allocator is the Rust global allocator.
    Rust,
    /// A drop-in C library under `LD_PRELOAD`.
    C,
    /// Both (glibc: Rust's `System` allocator is plain C `malloc`).
    Both,
}

impl Mode {
    /// The allocator every ratio of this mode is taken against.
    pub fn baseline(self) -> &'static str {
        match self {
            Mode::C => "c-mimalloc",
            Mode::Rust | Mode::Both => BASELINE,
        }
    }

    /// Title of the mode in the report.
    pub fn title(self) -> &'static str {
        match self {
            Mode::C => "C mode (drop-in libraries under LD_PRELOAD)",
            Mode::Rust | Mode::Both => "Rust mode (global allocator)",
        }
    }
}

/// The shared library a C-mode allocator is loaded from.
#[derive(Clone, Copy, Debug)]
pub enum Preload {
    /// Nothing preloaded.
    None,
    /// emma's drop-in library, built from this workspace (see [`EMMA_PRELOAD`]) with these
    /// cargo features of `emma-malloc` added (none: the default build). A build with features
    /// goes to a target directory of its own, so it never replaces the default library.
    Emma {
        /// Comma-separated features, or "".
        features: &'static str,
    },
    /// A library from a Debian package, installed with apt-get when missing.
    Debian {
        /// The package.
        package: &'static str,
        /// The library's path once installed.
        path: &'static str,
    },
}

/// How emma's drop-in C library is built: cargo arguments (run at the workspace root, in the
/// suite's target directory) and the library's path under that target directory. One entry, so
/// that switching to another package of the library is a one-line change.
pub const EMMA_PRELOAD: (&[&str], &str) = (
    &["build", "--release", "-p", "emma-malloc"],
    "release/libemma.so",
);

/// The Rust-mode allocator every ratio is taken against.
pub const BASELINE: &str = "mimalloc";

impl Allocator {
    /// Whether it is reported in `mode`.
    pub fn in_mode(&self, mode: Mode) -> bool {
        self.mode == mode || self.mode == Mode::Both
    }

    /// The name its workload binary prints (C mode runs the glibc binary).
    pub fn binary_name(&self) -> &'static str {
        if self.mode == Mode::C {
            "glibc"
        } else {
            self.name
        }
    }
}

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
        mode: Mode::Rust,
        preload: Preload::None,
    },
    // emma-tls with the `hardened` checks: the report adds what they cost (see
    // `report::markdown::hardened_cost`).
    Allocator {
        name: "emma-tls-hardened",
        feature: "a-emma-tls-hardened",
        colour: "#8c564b",
        needs_cmake: false,
        max_reps: usize::MAX,
        mode: Mode::Rust,
        preload: Preload::None,
    },
    Allocator {
        name: "emma",
        feature: "a-emma",
        colour: "#ff9896",
        needs_cmake: false,
        max_reps: usize::MAX,
        mode: Mode::Rust,
        preload: Preload::None,
    },
    Allocator {
        name: "mimalloc",
        feature: "a-mimalloc",
        colour: "#1f77b4",
        needs_cmake: false,
        max_reps: usize::MAX,
        mode: Mode::Rust,
        preload: Preload::None,
    },
    Allocator {
        name: "jemalloc",
        feature: "a-jemalloc",
        colour: "#2ca02c",
        needs_cmake: false,
        max_reps: usize::MAX,
        mode: Mode::Rust,
        preload: Preload::None,
    },
    Allocator {
        name: "snmalloc",
        feature: "a-snmalloc",
        colour: "#9467bd",
        needs_cmake: true,
        max_reps: usize::MAX,
        mode: Mode::Rust,
        preload: Preload::None,
    },
    Allocator {
        name: "glibc",
        feature: "a-system",
        colour: "#7f7f7f",
        needs_cmake: false,
        max_reps: usize::MAX,
        mode: Mode::Both,
        preload: Preload::None,
    },
    Allocator {
        name: "emma-0.0.1",
        feature: "a-emma-orig",
        colour: "#bcbd22",
        needs_cmake: false,
        max_reps: 1,
        mode: Mode::Rust,
        preload: Preload::None,
    },
    Allocator {
        name: "c-emma",
        feature: "a-system",
        colour: "#d62728",
        needs_cmake: false,
        max_reps: usize::MAX,
        mode: Mode::C,
        preload: Preload::Emma { features: "" },
    },
    Allocator {
        name: "c-emma-hardened",
        feature: "a-system",
        colour: "#ff9896",
        needs_cmake: false,
        max_reps: usize::MAX,
        mode: Mode::C,
        preload: Preload::Emma {
            features: "hardened",
        },
    },
    Allocator {
        name: "c-mimalloc",
        feature: "a-system",
        colour: "#1f77b4",
        needs_cmake: false,
        max_reps: usize::MAX,
        mode: Mode::C,
        preload: Preload::Debian {
            package: "libmimalloc2.0",
            path: "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2",
        },
    },
    Allocator {
        name: "c-jemalloc",
        feature: "a-system",
        colour: "#2ca02c",
        needs_cmake: false,
        max_reps: usize::MAX,
        mode: Mode::C,
        preload: Preload::Debian {
            package: "libjemalloc2",
            path: "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
        },
    },
    Allocator {
        name: "c-tcmalloc",
        feature: "a-system",
        colour: "#e377c2",
        needs_cmake: false,
        max_reps: usize::MAX,
        mode: Mode::C,
        preload: Preload::Debian {
            package: "libtcmalloc-minimal4",
            path: "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
        },
    },
    // LLVM's hardened allocator (Android's default), with its default options: the peer for
    // what `c-emma-hardened` costs.
    Allocator {
        name: "c-scudo",
        feature: "a-system",
        colour: "#9467bd",
        needs_cmake: false,
        max_reps: usize::MAX,
        mode: Mode::C,
        preload: Preload::Debian {
            package: "libclang-rt-14-dev",
            path:
                "/usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.scudo_standalone-x86_64.so",
        },
    },
];

/// Allocators a run leaves out unless `--alloc` names them: the hardened comparison, which
/// answers another question (what the checks cost) and would add a fifth to the suite's time.
pub const OPT_IN: &[&str] = &["emma-tls-hardened", "c-emma-hardened", "c-scudo"];

/// The pairs whose time ratio is what `hardened` costs: (without, with), one per mode.
pub const HARDENED_PAIRS: &[(&str, &str)] = &[
    ("emma-tls", "emma-tls-hardened"),
    ("c-emma", "c-emma-hardened"),
];
