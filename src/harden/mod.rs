//! The `hardened` feature: heap misuse is caught early, cheaply.
//!
//! - **Encoded free lists.** Every free-list link is stored as
//!   `rotl(next ^ k1, k0) + k0` with keys drawn from `getrandom` per
//!   instance and mixed with each page's address, so a use-after-free or
//!   overflow write cannot plant a pointer the allocator will follow:
//!   popping a link that does not decode into the same page aborts.
//! - **Double free in O(1).** The live-block bitmap of [`crate::check`]
//!   has one bit per block start, cleared by the free that tests it (one
//!   atomic update), so a second free of a block, whether it waits in the
//!   quarantine, on a free list or in another thread's chain, aborts.
//! - **Junk-filled freed blocks.** Freeing (and carving) fills a block's
//!   first [`JUNK_SPAN`](crate::keys::JUNK_SPAN) bytes (all of a block up
//!   to 1 KiB) with [`JUNK`](crate::keys::JUNK); allocating it again
//!   checks the junk with 16-byte compares: every byte of a block of up to
//!   128 bytes (with the slack, requests up to 116 bytes), and for larger
//!   blocks the first and the last 64 bytes of the junk span and one more
//!   64-byte window whose place changes from one reuse to the next. So a
//!   write into a freed small block is always reported at its next reuse,
//!   as is a write into the head or the tail of a larger block's junk; a
//!   write elsewhere in its first KiB is seen with a probability of 64
//!   bytes over the middle's size per reuse (about one in 14 per reuse for
//!   a 1 KiB block). A new block never shows an earlier block's data in its
//!   first KiB.
//! - **Quarantine** ([`crate::heap::quarantine`]): freed blocks of up to 16 KiB wait
//!   behind 32 others of the same thread before they can be reused, so a
//!   dangling pointer does not alias the next object at once.
//! - **End-of-block canary** ([`canary`]): every request gets
//!   [`SLACK`] more bytes; the requested size is kept in a trailer at the
//!   block's end and the bytes after it hold a canary, checked on free,
//!   realloc and `malloc_usable_size`, so an overflow by even one byte is
//!   caught.
//! - **Faulting zero-size blocks** ([`zero`]): `malloc(0)` returns a
//!   unique address in an inaccessible region.
//! - **Bad pointers** are caught by the live-block bitmap and the pointer
//!   checks of [`crate::check`], which `hardened` turns on (`boundary-checks`
//!   adds the layout checks).
//! - **Guard pages** (see `segment` and `huge`): the last page of each
//!   segment's metadata slice and the page after each huge block's header
//!   are inaccessible, so a block underflow faults before it reaches
//!   metadata.
//!
//! Each piece lives in the layer whose data it checks: the keys and the
//! junk byte in [`crate::keys`], the free-list and double-free checks with
//! the page ([`crate::segment::checks`]), the quarantine with the heap;
//! this module keeps what wraps a whole block (the canary, the zero-size
//! region), above the instance. Without the feature every function here is
//! an identity or a no-op and inlines away.

pub mod canary;
pub mod zero;

pub use canary::SLACK;
