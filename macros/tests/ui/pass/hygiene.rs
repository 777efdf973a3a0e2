//! Names that could clash with the expansion's own: caller items named like
//! the types, statics and functions it uses, instances named like its hidden
//! statics, a module without the prelude.

#![deny(warnings)]
#![allow(dead_code, non_camel_case_types)]

use emma::InstanceExt;
use std::alloc::Layout as StdLayout;

/// Caller items named like what the expansion refers to, next to instances.
mod crowded {
    mod core {}
    pub struct Layout;
    pub trait GlobalAlloc {}
    pub trait Instance {}
    pub struct InstanceState;
    pub struct TlsSlot;
    pub static STATE: u8 = 0;
    pub static SLOT: u8 = 0;
    pub struct c_void;
    pub fn paste() {}
    pub fn malloc() {}

    emma::emma_instance!(pub Local);
    // Its C functions (`hygiene_malloc`, ...) beside the caller's `malloc`.
    emma::emma_instance!(pub Exported, c_prefix = hygiene_);
}

// Instances named like the expansion's hidden statics.
mod state {
    emma::emma_instance!(pub STATE);
}
mod slot {
    emma::emma_instance!(pub SLOT);
}

// A module without the prelude.
mod bare {
    #![no_implicit_prelude]
    ::emma::emma_instance!(pub Bare);
}

fn check<I: std::alloc::GlobalAlloc + InstanceExt>(heap: I, other: impl InstanceExt) {
    let layout = StdLayout::from_size_align(24, 8).unwrap();
    // SAFETY: non-zero size; freed with the same layout.
    unsafe {
        let p = heap.alloc(layout);
        assert!(!p.is_null() && heap.owns(p) && !other.owns(p));
        p.write_bytes(1, 24);
        heap.dealloc(p, layout);
    }
}

fn main() {
    check(crowded::Local, crowded::Exported);
    check(crowded::Exported, state::STATE);
    check(state::STATE, slot::SLOT);
    check(slot::SLOT, bare::Bare);
    check(bare::Bare, crowded::Local);
}
