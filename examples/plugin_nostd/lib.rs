//! A `no_std` plugin: a `cdylib` with neither the Rust standard library nor
//! libc, whose global allocator is an emma instance. It implements the same
//! C interface as the `plugin_a`/`plugin_b` examples, so the C host in
//! `tests/embed/host.c` loads it next to them.
//!
//! ```text
//! cd examples/plugin_nostd
//! cargo build --release [--no-default-features]
//! nm -D --undefined-only target/release/libemma_plugin_nostd.so   # memcpy, memset, ...
//! ```
//!
//! What it imports from the process: only the `mem*` functions (`memcpy`,
//! `memmove`, `memset`, `memcmp`/`bcmp`) that `core` lowers copies and
//! comparisons to; every OS service emma needs is a raw system call.
//!
//! By default (feature `tls`, as emma's) emma keeps each thread's heap in a
//! thread-local slot of its instance, yet the library has no call to
//! `__tls_get_addr`: emma defines the slot in assembly and reads it with
//! the *initial-exec* model (`mov reg, [rip + slot@GOTTPOFF]`, then `mov
//! reg, fs:[reg]`). The loader puts the library's 8-byte TLS block in its
//! static TLS surplus (the library is flagged `STATIC_TLS`), so no thread
//! ever calls into the loader, whose `__tls_get_addr` may call the host's
//! `malloc`. (A `#[thread_local]` static in a `cdylib` would use the
//! general-dynamic model, i.e. a `__tls_get_addr` call.) With
//! `--no-default-features` it has no TLS block at all and finds heaps by
//! the thread pointer.

#![no_std]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::ffi::c_char;
use core::sync::atomic::{AtomicBool, Ordering};
use emma::InstanceExt;

emma::emma_instance!(
    /// The plugin's heap.
    pub PluginHeap
);

#[global_allocator]
static HEAP: PluginHeap = PluginHeap::new();

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // No unwinding and no libc: stop right here.
    // SAFETY: `ud2` raises SIGILL; it does not return.
    unsafe { core::arch::asm!("ud2", options(noreturn)) }
}

// The unwinder names `core` and `alloc` refer to, as hidden stubs: nothing
// here unwinds (the panic handler above stops the process).
#[path = "../nostd/unwind_stubs.rs"]
mod unwind_stubs;

/// A minimal spin lock around the blocks `plugin_keep` hands out.
struct Kept {
    locked: AtomicBool,
    blocks: UnsafeCell<Vec<Vec<u8>>>,
}

// SAFETY: `blocks` is only touched with `locked` held.
unsafe impl Sync for Kept {}

static KEPT: Kept = Kept {
    locked: AtomicBool::new(false),
    blocks: UnsafeCell::new(Vec::new()),
};

impl Kept {
    fn with<R>(&self, f: impl FnOnce(&mut Vec<Vec<u8>>) -> R) -> R {
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        // SAFETY: the lock is held.
        let r = f(unsafe { &mut *self.blocks.get() });
        self.locked.store(false, Ordering::Release);
        r
    }
}

/// The plugin's name, a NUL-terminated string.
#[no_mangle]
pub extern "C" fn plugin_name() -> *const c_char {
    c"plugin_nostd".as_ptr()
}

/// Work on the plugin's heap: formatted strings, vectors, a `BTreeMap`,
/// a buffer grown to a few MiB. The result depends only on `seed`.
#[no_mangle]
pub extern "C" fn plugin_work(seed: u64) -> u64 {
    let mut x = seed | 1;
    let mut words: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for i in 0..20_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        words.entry(format!("w{}", x % 997)).or_default().push(i);
    }
    let mut sum = 0u64;
    for (w, v) in &words {
        sum = sum.wrapping_mul(31).wrapping_add(v.len() as u64);
        for b in w.bytes() {
            sum = sum.wrapping_mul(131).wrapping_add(b as u64);
        }
    }
    let mut big: Vec<u8> = Vec::new();
    for i in 0..(3usize << 20) + (seed as usize % 4096) {
        big.push(i as u8);
    }
    sum.wrapping_add(big.iter().step_by(4099).map(|&b| b as u64).sum::<u64>())
}

/// Allocates `n` blocks of assorted sizes (16 bytes to a few MiB) that
/// stay alive until `plugin_release`; writes their addresses to `out`.
///
/// # Safety
/// `out` is valid for `n` writes.
#[no_mangle]
pub unsafe extern "C" fn plugin_keep(n: usize, out: *mut usize) -> usize {
    KEPT.with(|kept| {
        for i in 0..n {
            let size = match i % 8 {
                7 => (5 << 20) + i,
                6 => (100 << 10) + i,
                5 => 5000 + i,
                _ => 16 + (i * 37) % 1000,
            };
            let mut v = alloc::vec![0u8; size];
            v[size - 1] = i as u8;
            // SAFETY: the caller provides room for `n` addresses.
            unsafe { out.add(i).write(v.as_ptr() as usize) };
            kept.push(v);
        }
    });
    n
}

/// Frees every block `plugin_keep` handed out.
#[no_mangle]
pub extern "C" fn plugin_release() {
    let blocks = KEPT.with(core::mem::take);
    drop(blocks);
}

/// Whether the plugin's allocator owns address `p` (1) or not (0).
#[no_mangle]
pub extern "C" fn plugin_owns(p: usize) -> i32 {
    PluginHeap.owns(p as *const u8) as i32
}

/// Writes up to `cap` `(base, len)` pairs of the allocator's mappings to
/// `out` and returns how many there are.
///
/// # Safety
/// `out` is valid for `2 * cap` writes.
#[no_mangle]
pub unsafe extern "C" fn plugin_mappings(out: *mut usize, cap: usize) -> usize {
    let mut n = 0;
    PluginHeap.for_each_mapping(|base, len| {
        if n < cap {
            // SAFETY: `n < cap`; the caller provides `2 * cap` words.
            unsafe {
                out.add(2 * n).write(base);
                out.add(2 * n + 1).write(len);
            }
        }
        n += 1;
    });
    n
}

/// Heaps the plugin's allocator has made.
#[no_mangle]
pub extern "C" fn plugin_heaps() -> usize {
    PluginHeap.stats().heaps
}

/// A one-line summary of the allocator's statistics in `buf`
/// (NUL-terminated, truncated to `cap` bytes).
///
/// # Safety
/// `buf` is valid for `cap` writes.
#[no_mangle]
pub unsafe extern "C" fn plugin_stats(buf: *mut c_char, cap: usize) {
    let s = PluginHeap.stats();
    let line = format!(
        "mapped={} segments={} huge={} heaps={}",
        s.mapped, s.segments, s.huge_blocks, s.heaps
    );
    let n = line.len().min(cap.saturating_sub(1));
    // SAFETY: `n + 1 <= cap`.
    unsafe {
        core::ptr::copy_nonoverlapping(line.as_ptr(), buf.cast(), n);
        buf.add(n).write(0);
    }
}

/// On unload (`dlclose`) and at exit: unmap everything the allocator has.
/// The host must not use the plugin or its blocks after `dlclose`.
extern "C" fn unload() {
    // SAFETY: per the contract above, no block is used again.
    unsafe { PluginHeap.release_all() };
}

#[used]
#[link_section = ".fini_array"]
static UNLOAD: extern "C" fn() = unload;
