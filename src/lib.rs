//! # emma — an EMbeddable Memory Allocator
//!
//! A general-purpose, thread-safe memory allocator for Linux on x86_64,
//! written in `no_std` Rust with no libc underneath: every OS service is a
//! raw system call, and the only memory it uses is what it maps itself.
//! That makes it embeddable anywhere — a `dlopen`ed plugin, an
//! `LD_PRELOAD`ed tool, a program with no libc at all — and as many times
//! as you like in one process: each [`emma_instance!`] is a separate
//! allocator with its own state, segments and thread-local slot.
//!
//! ```
//! emma::emma_instance!(pub PluginHeap);
//!
//! #[global_allocator]
//! static GLOBAL: PluginHeap = PluginHeap::new();
//!
//! let words: Vec<String> = ["isolated", "heaps"].iter().map(|s| s.to_string()).collect();
//! assert_eq!(words.join(" "), "isolated heaps");
//! ```
//!
//! Instances are also usable side by side, without being the global
//! allocator, through [`GlobalAlloc`](core::alloc::GlobalAlloc) and the
//! methods of [`Instance`]:
//!
//! ```
//! use core::alloc::{GlobalAlloc, Layout};
//! use emma::InstanceExt;
//!
//! emma::emma_instance!(Cache);
//! emma::emma_instance!(Scratch);
//!
//! let layout = Layout::from_size_align(100, 8).unwrap();
//! let p = unsafe { Cache.alloc(layout) };
//! assert!(Cache.owns(p) && !Scratch.owns(p));
//! unsafe { Cache.dealloc(p, layout) };
//! ```
//!
//! ## Features
//! - `tls` (default; stable Rust): each thread's heap is found through a
//!   per-instance thread-local slot read with initial-exec TLS (two
//!   instructions, no loader call, even in a `dlopen`ed library, which then
//!   uses 8 bytes of the loader's static TLS surplus per instance). With
//!   `default-features = false`, for programs that set up no TLS block (no
//!   libc, their own `_start`): through the thread pointer and a small
//!   per-instance table.
//! - `boundary-checks`: double frees, foreign pointers, pointers of another
//!   instance and mismatched layouts abort with a message naming the
//!   problem and the pointer.
//! - `hardened`: free-list links encoded with a per-instance random key,
//!   O(1) double-free detection, canaries in freed blocks checked at reuse,
//!   guard pages before segment metadata and after huge-block headers.
//! - `allocator-api` (nightly): instances implement
//!   `core::alloc::Allocator`, for `Vec::new_in(Heap)` and friends.
//! - `allocator-api2` (stable): instances implement
//!   `allocator_api2::alloc::Allocator` (accepted by hashbrown and bumpalo);
//!   emma re-exports the crate as `emma::allocator_api2` (when the
//!   feature is on), with its `Vec` and `Box`.
//!
//! ## Stable or nightly
//! Everything but `tls` and `allocator-api` builds on stable Rust. A
//! collection in a chosen instance on stable, with
//! `emma = { version = "0.1", features = ["allocator-api2"] }`:
//!
#![cfg_attr(
    feature = "allocator-api2",
    doc = r#"```
emma::emma_instance!(Second);

let mut v = emma::allocator_api2::vec::Vec::new_in(Second);
v.extend_from_slice(&[1, 2, 3]);
assert_eq!(v.iter().sum::<i32>(), 6);
```"#
)]
//!
//! The same on nightly with the standard `Vec`, with
//! `emma = { version = "0.1", features = ["allocator-api"] }`:
//!
#![cfg_attr(
    feature = "allocator-api",
    doc = r#"```
#![feature(allocator_api)]
emma::emma_instance!(Second);

let mut v = Vec::new_in(Second);
v.extend_from_slice(&[1, 2, 3]);
assert_eq!(v.iter().sum::<i32>(), 6);
```"#
)]
//!
//! ## Architecture, bottom up
//! Each layer imports only from the layers below it (`tests/layers.rs`
//! holds the order and enforces it; the README quotes it): `sys` (raw
//! syscalls) → `fatal` (message and abort) and `thread` (thread pointer,
//! TLS slot) → `os` (aligned mappings, purging) and `keys` (hardened
//! free-list keys) → `sync` (futex lock, fork detection), `size_class` and
//! `purge` (when to give memory back) → `segment` (segments, pages, the
//! opaque owner a page points to) → `segmap` (the instance's address map)
//! → `store` (an instance's supply of segments and huge spans) → `huge` →
//! `heap` (per-thread pages and free lists, reaching the instance only
//! through its `Source` trait) → `instance` (all state of one instance) →
//! `harden` (canaries, zero-size blocks) → `check` and `stats` → `api`
//! (entry points generic over the instance) → `c` and `allocator` → the
//! [`emma_instance!`] macro.

#![no_std]
#![cfg_attr(
    feature = "allocator-api",
    feature(allow_internal_unstable),
    allow(internal_features)
)]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

#[doc(hidden)]
pub mod allocator;
mod api;
pub mod c;
mod check;
mod fatal;
mod global;
mod harden;
mod heap;
mod huge;
mod instance;
mod keys;
mod macros;
mod os;
mod purge;
mod segmap;
mod segment;
mod size_class;
mod stats;
mod store;
mod sync;
#[cfg(not(miri))]
mod sys;
// Miri cannot issue syscalls: its unit tests run over a std-backed backend.
#[cfg(all(miri, test))]
#[path = "sys_miri.rs"]
mod sys;
#[cfg(all(miri, not(test)))]
compile_error!("under Miri, emma runs only its own unit tests (`cargo miri test --lib`)");
mod thread;

#[cfg(test)]
mod tests;

pub use api::Instance;
pub use os::Purge;
pub use size_class::{MAX_CLASS_SIZE, MIN_ALIGN};
pub use stats::{Live, Stats};
pub use store::LimitHook;

/// The `allocator-api2` crate (with its `alloc` feature: `Vec`, `Box`),
/// whose `Allocator` trait every instance implements on stable Rust, so
/// that emma can be the only dependency:
///
/// ```
/// use emma::allocator_api2::{boxed::Box, vec::Vec};
/// emma::emma_instance!(Scratch);
///
/// let mut v = Vec::new_in(Scratch);
/// v.push(7u64);
/// let b = Box::new_in([0u8; 64], Scratch);
/// assert_eq!((v[0], b.len()), (7, 64));
/// ```
#[cfg(feature = "allocator-api2")]
pub use allocator_api2;

/// Methods every instance type has (through [`Instance`], which
/// [`emma_instance!`] implements).
impl<I: Instance> InstanceExt for I {}

/// The user-facing methods of an instance: ownership, statistics, limits,
/// purging, trimming and teardown. Implemented for every [`Instance`];
/// bring it into scope with `use emma::InstanceExt`.
pub trait InstanceExt: Instance {
    /// Whether `p` points into memory this instance has mapped for blocks.
    /// Safe for any pointer value, including ones emma never saw.
    ///
    /// ```
    /// use core::alloc::{GlobalAlloc, Layout};
    /// use emma::InstanceExt;
    /// emma::emma_instance!(Mine);
    /// emma::emma_instance!(Theirs);
    ///
    /// let l = Layout::new::<[u64; 4]>();
    /// let p = unsafe { Mine.alloc(l) };
    /// assert!(Mine.owns(p) && !Theirs.owns(p));
    /// let on_stack = 0u8;
    /// assert!(!Mine.owns(&on_stack));
    /// unsafe { Mine.dealloc(p, l) };
    /// ```
    fn owns(self, p: *const u8) -> bool {
        api::owns::<Self>(p)
    }

    /// A snapshot of the instance's statistics. Reading it walks the
    /// instance's segments under its lock to count live blocks (see
    /// [`Live`]): cheap enough to call often, not free.
    ///
    /// ```
    /// use core::alloc::{GlobalAlloc, Layout};
    /// use emma::InstanceExt;
    /// emma::emma_instance!(Counted);
    ///
    /// assert_eq!(Counted.stats().mapped, 0);
    /// let l = Layout::from_size_align(4 << 20, 8).unwrap();
    /// let p = unsafe { Counted.alloc(l) };
    /// let s = Counted.stats();
    /// assert_eq!(s.huge_blocks, 1);
    /// assert!(s.committed >= 4 << 20 && s.mapped >= s.committed);
    /// unsafe { Counted.dealloc(p, l) };
    /// ```
    fn stats(self) -> Stats {
        Stats::of(Self::state())
    }

    /// Calls `f(base, len)` for each mapping (segment or huge block) the
    /// instance holds.
    ///
    /// ```
    /// use core::alloc::{GlobalAlloc, Layout};
    /// use emma::InstanceExt;
    /// emma::emma_instance!(Mapped);
    ///
    /// let l = Layout::new::<u32>();
    /// let p = unsafe { Mapped.alloc(l) } as usize;
    /// let mut holds_p = false;
    /// Mapped.for_each_mapping(|base, len| holds_p |= (base..base + len).contains(&p));
    /// assert!(holds_p);
    /// unsafe { Mapped.dealloc(p as *mut u8, l) };
    /// ```
    fn for_each_mapping(self, f: impl FnMut(usize, usize)) {
        Self::state().for_each_mapping(f)
    }

    /// Gives back to the kernel, at once, the memory the calling thread's
    /// heap and the instance's caches hold without live blocks, and
    /// collects the heaps of threads that have exited (blocks other
    /// threads freed into them included).
    ///
    /// Not needed for memory to come back: the allocator's slow paths do
    /// the same by themselves, purging free memory once it has been idle
    /// for the purge delay and collecting exited threads' heaps every few
    /// tens of milliseconds. `trim` is for giving memory back *now*, and
    /// for a thread about to go idle (only a heap's own thread may purge
    /// its free pages while it lives). Without `tls`, the heap of an
    /// exited thread whose stack the thread library keeps may be
    /// unprovable as abandoned; see the README's limits.
    ///
    /// ```
    /// use core::alloc::{GlobalAlloc, Layout};
    /// use emma::InstanceExt;
    /// emma::emma_instance!(Trimmed);
    ///
    /// let l = Layout::from_size_align(1000, 8).unwrap();
    /// let blocks: Vec<_> = (0..1000).map(|_| unsafe { Trimmed.alloc(l) }).collect();
    /// for p in blocks {
    ///     unsafe { Trimmed.dealloc(p, l) };
    /// }
    /// Trimmed.trim();
    /// let s = Trimmed.stats();
    /// assert_eq!(s.committed, s.meta, "only heap metadata stays");
    /// ```
    fn trim(self) {
        // SAFETY: `Self::heap()` is the calling thread's heap.
        unsafe { Self::state().trim(Self::heap(), Self::USES_TLS) }
    }

    /// Caps the instance's committed memory, [`Stats::committed`], at
    /// `bytes` (`None`: no limit). Once an allocation would take the count
    /// past the cap, it returns null (`GlobalAlloc`, C) or `AllocError`
    /// (`Allocator`), after the limit hook ran; other instances are
    /// unaffected. The count never exceeds the cap.
    ///
    /// What counts, and its granularity:
    /// - blocks up to [`MAX_CLASS_SIZE`] (1 MiB): the page that holds them,
    ///   counted whole when it is set up — 64 KiB for blocks up to 8 KiB,
    ///   128 KiB for blocks up to 64 KiB, the block rounded up to 64 KiB
    ///   for larger ones — plus 64 KiB of metadata per 4 MiB segment. A
    ///   page's memory is reused for later blocks without counting again;
    /// - huge blocks: their whole mapping, the size plus a header page
    ///   (more for alignments above 4 KiB) rounded up to 4 MiB;
    /// - the heaps' metadata, in 64 KiB chunks;
    /// - free memory that has not been given back yet: cached segments and
    ///   huge blocks, pages freed within the purge delay, and with
    ///   [`Purge::Free`] purged memory until it is reused. When a request
    ///   would pass the cap, emma first unmaps its caches and retries.
    ///
    /// Reserved address space that was never touched does not count:
    /// `Stats::mapped` may exceed the cap. Memory already committed stays;
    /// lowering the cap below it only stops growth.
    ///
    /// ```
    /// use core::alloc::{GlobalAlloc, Layout};
    /// use emma::InstanceExt;
    /// emma::emma_instance!(Capped);
    ///
    /// Capped.set_limit(Some(8 << 20));
    /// let small = Layout::from_size_align(64, 8).unwrap();
    /// let p = unsafe { Capped.alloc(small) }; // maps a 4 MiB segment
    /// let mib = Layout::from_size_align(1 << 20, 8).unwrap();
    /// let q = unsafe { Capped.alloc(mib) };
    /// assert!(!q.is_null());
    /// let huge = Layout::from_size_align(8 << 20, 8).unwrap();
    /// assert!(unsafe { Capped.alloc(huge) }.is_null());
    /// assert!(Capped.stats().committed <= 8 << 20);
    /// unsafe { Capped.dealloc(p, small) };
    /// unsafe { Capped.dealloc(q, mib) };
    /// ```
    fn set_limit(self, bytes: Option<usize>) {
        Self::state().store.set_limit(bytes.unwrap_or(usize::MAX))
    }

    /// The current cap (`None`: no limit).
    ///
    /// ```
    /// use emma::InstanceExt;
    /// emma::emma_instance!(Capped);
    ///
    /// assert_eq!(Capped.limit(), None);
    /// Capped.set_limit(Some(64 << 20));
    /// assert_eq!(Capped.limit(), Some(64 << 20));
    /// ```
    fn limit(self) -> Option<usize> {
        Some(Self::state().store.limit()).filter(|&l| l != usize::MAX)
    }

    /// Sets a function called with `(bytes requested, limit)` whenever the
    /// limit refuses a request (`None` removes it): the bytes the request
    /// would have counted, and the limit. It runs inside the failing
    /// allocation and must not allocate from this instance.
    ///
    /// ```
    /// use core::alloc::{GlobalAlloc, Layout};
    /// use core::sync::atomic::{AtomicUsize, Ordering};
    /// use emma::InstanceExt;
    /// emma::emma_instance!(Capped);
    ///
    /// static REFUSED: AtomicUsize = AtomicUsize::new(0);
    /// fn on_limit(requested: usize, _limit: usize) {
    ///     REFUSED.fetch_add(requested, Ordering::Relaxed);
    /// }
    /// Capped.set_limit(Some(1 << 20));
    /// Capped.set_limit_hook(Some(on_limit));
    /// let l = Layout::from_size_align(2 << 20, 8).unwrap();
    /// assert!(unsafe { Capped.alloc(l) }.is_null());
    /// assert!(REFUSED.load(Ordering::Relaxed) >= 2 << 20);
    /// ```
    fn set_limit_hook(self, hook: Option<LimitHook>) {
        Self::state().store.set_limit_hook(hook)
    }

    /// How memory without live blocks is given back to the kernel
    /// (default: [`Purge::DontNeed`], which lowers RSS at once).
    ///
    /// ```
    /// use emma::{InstanceExt, Purge};
    /// emma::emma_instance!(Lazy);
    ///
    /// // Pages stay in RSS until the kernel needs them; cheaper to refault.
    /// Lazy.set_purge(Purge::Free);
    /// ```
    fn set_purge(self, how: Purge) {
        Self::state().store.set_purge_mode(how)
    }

    /// How long memory without live blocks stays committed before it is
    /// given back to the kernel (default 10 ms; `Duration::ZERO`: on the
    /// next slow path). Memory freed and reused within the delay is not
    /// purged and refaulted. emma has no thread of its own: purging
    /// happens on the slow paths of threads using the instance, so the
    /// delay is a lower bound, and a thread's own free pages wait for that
    /// thread's next allocation (or its exit, or [`InstanceExt::trim`]).
    /// Empty segments kept for reuse are unmapped half a second after
    /// being purged.
    ///
    /// ```
    /// use core::time::Duration;
    /// use emma::InstanceExt;
    /// emma::emma_instance!(Eager);
    ///
    /// Eager.set_purge_delay(Duration::ZERO);
    /// assert_eq!(Eager.purge_delay(), Duration::ZERO);
    /// ```
    fn set_purge_delay(self, delay: core::time::Duration) {
        let ns = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        Self::state().store.set_purge_delay_ns(ns)
    }

    /// The purge delay in force (see [`InstanceExt::set_purge_delay`]).
    ///
    /// ```
    /// use core::time::Duration;
    /// use emma::InstanceExt;
    /// emma::emma_instance!(Fresh);
    ///
    /// assert_eq!(Fresh.purge_delay(), Duration::from_millis(10));
    /// ```
    fn purge_delay(self) -> core::time::Duration {
        core::time::Duration::from_nanos(Self::state().store.purge_delay_ns())
    }

    /// Unmaps every segment and huge block of the instance, in one go: the
    /// instance returns to its initial state and can be used again from
    /// scratch by any thread. A few KiB of heap metadata stay mapped
    /// (see [`InstanceExt::release_all`] to unmap those too).
    ///
    /// Returns what was still live just before: the blocks nobody freed
    /// (a leak count for plugin hosts). Blocks freed by a thread other than
    /// their owner whose owner has not collected them yet count as live
    /// (see [`Live`]); have each thread call [`InstanceExt::trim`] first for
    /// an exact count.
    ///
    /// # Safety
    /// Every block of this instance is dead: none may be read, written,
    /// freed or reallocated afterwards (collections holding them must be
    /// leaked, e.g. with `mem::forget`). No other thread may be inside the
    /// instance during the call.
    ///
    /// ```
    /// use core::alloc::{GlobalAlloc, Layout};
    /// use emma::InstanceExt;
    /// emma::emma_instance!(Frame);
    ///
    /// let l = Layout::from_size_align(200, 8).unwrap();
    /// for _ in 0..100 {
    ///     unsafe { Frame.alloc(l) }; // never freed one by one
    /// }
    /// // SAFETY: none of those blocks is used again; no other thread is
    /// // inside `Frame`.
    /// unsafe { Frame.teardown() };
    /// assert_eq!(Frame.stats().mapped, Frame.stats().meta);
    /// let p = unsafe { Frame.alloc(l) }; // usable again
    /// unsafe { Frame.dealloc(p, l) };
    /// ```
    unsafe fn teardown(self) -> Live {
        let live = stats::live_of(Self::state());
        // SAFETY: forwarded contract.
        unsafe { Self::state().teardown() };
        live
    }

    /// [`InstanceExt::teardown`], and also unmaps the heap metadata and
    /// segment map: the instance holds no mapping at all afterwards. For
    /// unloading a plugin. Returns what was still live, as `teardown` does.
    ///
    /// # Safety
    /// As for `teardown`; in addition no thread that has used the instance
    /// may use it again.
    ///
    /// ```
    /// use core::alloc::{GlobalAlloc, Layout};
    /// use emma::InstanceExt;
    /// emma::emma_instance!(Plugin);
    ///
    /// // Run on a thread of its own: no thread that used the instance may
    /// // use it after `release_all`.
    /// std::thread::spawn(|| {
    ///     let l = Layout::from_size_align(64, 8).unwrap();
    ///     unsafe { Plugin.alloc(l) };
    ///     // SAFETY: that block is dead, and this thread leaves the instance.
    ///     unsafe { Plugin.release_all() };
    /// })
    /// .join()
    /// .unwrap();
    /// assert_eq!(Plugin.stats().mapped, 0);
    /// ```
    unsafe fn release_all(self) -> Live {
        let live = stats::live_of(Self::state());
        // SAFETY: forwarded contract.
        unsafe { Self::state().release_all() };
        live
    }

    /// Writes the instance's statistics as a small table to stderr, with a
    /// raw `write(2)`: no allocation, usable in `no_std` programs and from
    /// inside a failing allocation (a limit hook).
    ///
    /// ```
    /// use emma::InstanceExt;
    /// emma::emma_instance!(Shown);
    ///
    /// Shown.print_stats("Shown"); // mapped, committed, peak, heaps, ...
    /// ```
    fn print_stats(self, name: &str) {
        self.stats().print(name)
    }

    /// Bytes usable in block `p` (at least the requested size).
    ///
    /// # Safety
    /// `p` is a live block of this instance.
    ///
    /// ```
    /// use core::alloc::{GlobalAlloc, Layout};
    /// use emma::InstanceExt;
    /// emma::emma_instance!(Measured);
    ///
    /// let l = Layout::from_size_align(100, 8).unwrap();
    /// let p = unsafe { Measured.alloc(l) };
    /// // SAFETY: `p` is live.
    /// assert!(unsafe { Measured.usable_size(p) } >= 100);
    /// unsafe { Measured.dealloc(p, l) };
    /// ```
    unsafe fn usable_size(self, p: *mut u8) -> usize {
        // SAFETY: forwarded contract.
        unsafe { api::usable_size(p) }
    }

    /// Re-checks the invariants of the calling thread's heap (free lists,
    /// page queues, counts); for tests.
    ///
    /// ```
    /// use core::alloc::{GlobalAlloc, Layout};
    /// use emma::InstanceExt;
    /// emma::emma_instance!(Checked);
    ///
    /// let l = Layout::from_size_align(48, 8).unwrap();
    /// let p = unsafe { Checked.alloc(l) };
    /// assert_eq!(Checked.check_heap(), Ok(()));
    /// unsafe { Checked.dealloc(p, l) };
    /// ```
    fn check_heap(self) -> Result<(), &'static str> {
        let h = Self::heap();
        if heap::Heap::is_empty_heap(h) {
            return Ok(());
        }
        // SAFETY: the calling thread owns its heap.
        unsafe { heap::Heap::check(h) }
    }

    /// Re-checks every invariant the calling thread can see: its heap's
    /// ([`InstanceExt::check_heap`]), the instance's caches of segments
    /// and large spans, and the header of every mapping the instance has.
    /// Returns a description of the first violation; for tests. Builds with
    /// debug assertions run the same checks on the allocator's slow paths
    /// and abort where an invariant breaks.
    ///
    /// ```
    /// use core::alloc::{GlobalAlloc, Layout};
    /// use emma::InstanceExt;
    /// emma::emma_instance!(Audited);
    ///
    /// let big = Layout::from_size_align(8 << 20, 8).unwrap();
    /// let p = unsafe { Audited.alloc(big) };
    /// assert_eq!(Audited.check(), Ok(()));
    /// unsafe { Audited.dealloc(p, big) };
    /// assert_eq!(Audited.check(), Ok(()));
    /// ```
    fn check(self) -> Result<(), &'static str> {
        Self::state().check()?;
        self.check_heap()
    }
}

/// Items the macro expansion refers to through `$crate`. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::allocator;
    // EMPTY_HEAP: the `tls` slot's initial value (`__emma_tls_define!`).
    pub use crate::heap::{Heap, EMPTY_HEAP};
    pub use crate::instance::InstanceState;
    // For the tests of `hardened`'s page moves, which an older kernel
    // cannot make.
    #[cfg(all(feature = "tls", miri))]
    pub use crate::instance::{miri_slot_load, miri_slot_store};
    pub use crate::os::moves_mapping_runs;
    #[cfg(feature = "allocator-api2")]
    pub use ::allocator_api2;
    pub use paste::paste;

    // The `GlobalAlloc` impl's one-line forwarders.
    pub use crate::global::{
        alloc as global_alloc, alloc_zeroed as global_alloc_zeroed, dealloc as global_dealloc,
        realloc as global_realloc,
    };
}
