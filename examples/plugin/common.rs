//! The body shared by the two plugin examples (`plugin_a`, `plugin_b`):
//! the C interface a host finds with `dlsym`. Each plugin compiles this
//! file into its own `cdylib`, next to its own `emma_instance!`, so the two
//! libraries are distinct builds with distinct allocators.
//!
//! Every function here runs on the plugin's global allocator (`Vec`,
//! `String`, `HashMap`, ... all allocate from `crate::PluginHeap`), while
//! the host keeps using its own `malloc`.

use crate::PluginHeap;
use emma::InstanceExt;
use std::collections::{BTreeMap, HashMap};
use std::ffi::c_char;
use std::fmt::Write;
use std::sync::Mutex;

/// Blocks handed out by [`plugin_keep`], alive until [`plugin_release`].
static KEPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// The plugin's name, a NUL-terminated string.
#[unsafe(no_mangle)]
pub extern "C" fn plugin_name() -> *const c_char {
    crate::NAME.as_ptr()
}

/// Some ordinary Rust work on the plugin's heap: strings, vectors, a
/// `HashMap` and a `BTreeMap`. Returns a checksum that depends only on
/// `seed` (so the host can compare threads and plugins).
#[unsafe(no_mangle)]
pub extern "C" fn plugin_work(seed: u64) -> u64 {
    let mut x = seed | 1;
    let mut next = move || {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut words: HashMap<String, Vec<u64>> = HashMap::new();
    let mut text = String::new();
    for i in 0..20_000u64 {
        let r = next();
        let word = format!("w{}", r % 997);
        text.push_str(&word);
        text.push(' ');
        words.entry(word).or_default().push(i);
        if text.len() > 1 << 16 {
            text = text.split_off(text.len() / 2);
        }
    }
    let mut ordered: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (w, v) in &words {
        ordered.entry(v.len()).or_default().push(w.clone());
    }
    let mut sum = 0u64;
    for (count, ws) in &mut ordered {
        ws.sort();
        for w in ws.iter() {
            sum = sum.wrapping_mul(31).wrapping_add(*count as u64);
            for b in w.bytes() {
                sum = sum.wrapping_mul(131).wrapping_add(b as u64);
            }
        }
    }
    // A few medium and huge buffers, grown by reallocation.
    let mut big: Vec<u8> = Vec::new();
    for i in 0..(1usize << 20) + (seed as usize % 4096) {
        big.push(i as u8);
    }
    let s = big
        .iter()
        .step_by(4099)
        .fold(0u64, |a, &b| a.wrapping_add(b as u64));
    sum.wrapping_add(s).wrapping_add(text.len() as u64)
}

/// Allocates `n` blocks of assorted sizes (16 bytes to a few MiB) that stay
/// alive until [`plugin_release`], and writes their addresses to `out`.
///
/// # Safety
/// `out` is valid for `n` writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plugin_keep(n: usize, out: *mut usize) -> usize {
    let mut kept = KEPT.lock().unwrap();
    for i in 0..n {
        let size = match i % 8 {
            7 => (5 << 20) + i,        // huge: a mapping of its own
            6 => (100 << 10) + i,      // large pages
            5 => 5000 + i,             // medium
            _ => 16 + (i * 37) % 1000, // small
        };
        let mut v = vec![0u8; size];
        v[size - 1] = i as u8;
        // SAFETY: the caller provides room for `n` addresses.
        unsafe { out.add(i).write(v.as_ptr() as usize) };
        kept.push(v);
    }
    n
}

/// Frees every block [`plugin_keep`] handed out.
#[unsafe(no_mangle)]
pub extern "C" fn plugin_release() {
    let blocks = std::mem::take(&mut *KEPT.lock().unwrap());
    drop(blocks);
}

/// Whether the plugin's allocator owns address `p` (1) or not (0).
#[unsafe(no_mangle)]
pub extern "C" fn plugin_owns(p: usize) -> i32 {
    PluginHeap.owns(p as *const u8) as i32
}

/// Writes up to `cap` `(base, len)` pairs describing the allocator's
/// mappings to `out` (2 × `cap` words) and returns how many there are.
///
/// # Safety
/// `out` is valid for `2 * cap` writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plugin_mappings(out: *mut usize, cap: usize) -> usize {
    let mut n = 0;
    PluginHeap.for_each_mapping(|base, len| {
        if n < cap {
            // SAFETY: `n < cap` and the caller provides `2 * cap` words.
            unsafe {
                out.add(2 * n).write(base);
                out.add(2 * n + 1).write(len);
            }
        }
        n += 1;
    });
    n
}

/// Heaps the plugin's allocator has made (one per thread that allocated).
#[unsafe(no_mangle)]
pub extern "C" fn plugin_heaps() -> usize {
    PluginHeap.stats().heaps
}

/// A one-line summary of the allocator's statistics, written into `buf`
/// (NUL-terminated, truncated to `cap` bytes).
///
/// # Safety
/// `buf` is valid for `cap` writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plugin_stats(buf: *mut c_char, cap: usize) {
    let s = PluginHeap.stats();
    let mut line = String::new();
    let _ = write!(
        line,
        "mapped={} segments={} huge={} heaps={}",
        s.mapped, s.segments, s.huge_blocks, s.heaps
    );
    let n = line.len().min(cap.saturating_sub(1));
    // SAFETY: `n + 1 <= cap`.
    unsafe {
        std::ptr::copy_nonoverlapping(line.as_ptr(), buf.cast(), n);
        buf.add(n).write(0);
    }
}

/// Runs when the library is unloaded (`dlclose`) or the process exits:
/// unmaps every segment, huge block and piece of metadata of the plugin's
/// allocator, so an unloaded plugin leaves no memory behind.
///
/// The contract this places on the host: once it calls `dlclose` (or
/// `exit`), no thread may still be running plugin code or using memory
/// the plugin handed out. That is the usual contract of unloading.
extern "C" fn unload() {
    // SAFETY: per the contract above nothing of the plugin runs any more,
    // so no block of its allocator is used again.
    unsafe { PluginHeap.release_all() };
}

/// `.fini_array` entries run when the dynamic loader unloads the library
/// (on `dlclose` of its last reference) and at exit.
#[used]
#[unsafe(link_section = ".fini_array")]
static UNLOAD: extern "C" fn() = unload;
