//! A caller denying many allowed-by-default lints: the expansion adds no
//! warning, also for a `pub` instance in a `pub` module.

#![deny(
    warnings,
    missing_docs,
    missing_debug_implementations,
    missing_copy_implementations,
    unreachable_pub,
    unused_qualifications,
    unused_results,
    unused_lifetimes,
    single_use_lifetimes,
    trivial_casts,
    trivial_numeric_casts,
    elided_lifetimes_in_paths,
    meta_variable_misuse,
    unsafe_op_in_unsafe_fn,
    unit_bindings,
    rust_2018_idioms,
    rust_2024_compatibility
)]

/// Where the instances live.
pub mod heaps {
    emma::emma_instance!(
        /// A public, documented instance.
        pub Public
    );
    emma::emma_instance!(pub(crate) Internal);
}

fn main() {
    use core::alloc::{GlobalAlloc, Layout};
    use emma::InstanceExt;

    let layout = Layout::new::<[u32; 8]>();
    // SAFETY: non-zero size; freed with the same layout.
    unsafe {
        let p = heaps::Public.alloc(layout);
        assert!(heaps::Public.owns(p) && !heaps::Internal.owns(p));
        heaps::Public.dealloc(p, layout);
    }
}
