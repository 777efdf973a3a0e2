//! The allocator this build of the crate runs on, chosen by exactly one `a-*` cargo feature.
//!
//! Each `workload` binary is built with one feature (see `runner::build`), which installs the
//! matching allocator as `#[global_allocator]` here and names it in [`NAME`]; the workload prints
//! that name so the runner can check it ran the binary it meant to.
//!
//! If several features are on at once (e.g. `cargo clippy --all-features`), the first in the
//! order below wins rather than failing to compile; if none is, the process keeps Rust's default
//! allocator and [`NAME`] says so (that is how the runner itself is built).

#[cfg(feature = "a-emma")]
mod imp {
    emma::emma_instance!(pub Emma);
    /// The selected allocator.
    #[global_allocator]
    pub static GLOBAL: Emma = Emma;
    pub const NAME: &str = if cfg!(feature = "a-emma-tls-hardened") {
        "emma-tls-hardened"
    } else if cfg!(feature = "a-emma-tls") {
        "emma-tls"
    } else {
        "emma"
    };
}

#[cfg(all(feature = "a-emma-orig", not(feature = "a-emma")))]
mod imp {
    #[global_allocator]
    pub static GLOBAL: emma_orig::DefaultEmma = emma_orig::DefaultEmma::new();
    pub const NAME: &str = "emma-0.0.1";
}

#[cfg(all(
    feature = "a-mimalloc",
    not(any(feature = "a-emma", feature = "a-emma-orig"))
))]
mod imp {
    #[global_allocator]
    pub static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
    pub const NAME: &str = "mimalloc";
}

#[cfg(all(
    feature = "a-jemalloc",
    not(any(feature = "a-emma", feature = "a-emma-orig", feature = "a-mimalloc"))
))]
mod imp {
    #[global_allocator]
    pub static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
    pub const NAME: &str = "jemalloc";
}

#[cfg(all(
    feature = "a-snmalloc",
    not(any(
        feature = "a-emma",
        feature = "a-emma-orig",
        feature = "a-mimalloc",
        feature = "a-jemalloc"
    ))
))]
mod imp {
    #[global_allocator]
    pub static GLOBAL: snmalloc_rs::SnMalloc = snmalloc_rs::SnMalloc;
    pub const NAME: &str = "snmalloc";
}

#[cfg(not(any(
    feature = "a-emma",
    feature = "a-emma-orig",
    feature = "a-mimalloc",
    feature = "a-jemalloc",
    feature = "a-snmalloc"
)))]
mod imp {
    // With `a-system` (or no feature at all) this is glibc's malloc, Rust's default; declaring
    // it explicitly keeps `GLOBAL` usable by the `fastpath` binary.
    #[global_allocator]
    pub static GLOBAL: std::alloc::System = std::alloc::System;
    pub const NAME: &str = if cfg!(feature = "a-system") {
        "glibc"
    } else {
        "default (glibc)"
    };
}

pub use imp::{GLOBAL, NAME};
