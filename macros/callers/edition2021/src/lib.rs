//! An edition-2021 caller of `emma_instance!`, checked against the lints
//! that flag code needing changes for edition 2024.

#![no_std]
#![deny(warnings, missing_docs, rust_2024_compatibility)]

use core::alloc::{GlobalAlloc, Layout};
use emma::InstanceExt;

emma::emma_instance!(
    /// A plain instance.
    pub Plain
);
emma::emma_instance!(
    /// An instance exporting `caller2021_malloc`, `caller2021_free`, ...
    pub Exported, c_prefix = caller2021_
);

unsafe extern "C" {
    fn caller2021_malloc(size: usize) -> *mut u8;
    fn caller2021_free(p: *mut u8);
}

/// Allocates, writes, reads and frees through both instances (through
/// `GlobalAlloc` and the exported C functions).
///
/// # Panics
/// If an allocation fails or lands in the wrong instance.
pub fn round_trip() {
    let layout = Layout::from_size_align(48, 8).unwrap();
    // SAFETY: non-zero size; the block is written, read and freed in bounds.
    unsafe {
        let p = Plain.alloc(layout);
        assert!(!p.is_null() && Plain.owns(p) && !Exported.owns(p));
        p.write_bytes(0x21, 48);
        assert_eq!(*p.add(47), 0x21);
        Plain.dealloc(p, layout);

        let q = caller2021_malloc(48);
        assert!(!q.is_null() && Exported.owns(q) && !Plain.owns(q));
        q.write_bytes(0x12, 48);
        assert_eq!(*q.add(47), 0x12);
        caller2021_free(q);
    }
}
