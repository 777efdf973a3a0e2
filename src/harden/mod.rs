//! The `hardened` feature: heap misuse is caught early, cheaply.
//!
//! - **Encoded free lists.** Every free-list link is stored as
//!   `rotl(next ^ k1, k0) + k0` with keys drawn from `getrandom` per
//!   instance and mixed with each page's address, so a use-after-free or
//!   overflow write cannot plant a pointer the allocator will follow:
//!   popping a link that does not decode into the same page aborts.
//! - **Double free in O(1).** A freed block's first word is a valid encoded
//!   link; a live block's first word almost never is (odds ~ page size /
//!   2^64). A free whose block already holds a plausible link walks the
//!   page's lists to confirm, and aborts on a real double free.
//! - **Junk-filled freed blocks.** Freeing (and carving) fills a block's
//!   first [`JUNK_SPAN`](crate::keys::JUNK_SPAN) bytes (all of a block up to 1 KiB) with [`JUNK`](crate::keys::JUNK);
//!   allocating it again checks every one of them past the link word, so a
//!   write anywhere into a freed small block is reported at its next reuse,
//!   and a new small block never shows an earlier block's data.
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
