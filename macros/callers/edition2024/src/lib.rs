//! An edition-2024 caller of `emma_instance!` (unsafe attributes, `unsafe
//! extern`, `unsafe_op_in_unsafe_fn` warning by default).

#![no_std]
#![deny(warnings, missing_docs)]

use core::alloc::{GlobalAlloc, Layout};
use emma::InstanceExt;

emma::emma_instance!(
    /// A plain instance.
    pub Plain
);
emma::emma_instance!(
    /// An instance exporting `caller2024_malloc`, `caller2024_free`, ...
    pub Exported, c_prefix = caller2024_
);

unsafe extern "C" {
    fn caller2024_malloc(size: usize) -> *mut u8;
    fn caller2024_free(p: *mut u8);
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
        p.write_bytes(0x24, 48);
        assert_eq!(*p.add(47), 0x24);
        Plain.dealloc(p, layout);

        let q = caller2024_malloc(48);
        assert!(!q.is_null() && Exported.owns(q) && !Plain.owns(q));
        q.write_bytes(0x42, 48);
        assert_eq!(*q.add(47), 0x42);
        caller2024_free(q);
    }
}
