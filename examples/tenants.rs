//! Per-tenant heaps with memory limits.
//!
//! Each tenant of a service gets its own emma instance: its memory is
//! counted apart, capped apart (a tenant over its cap gets a clean
//! allocation failure, the others never notice), and can be thrown away
//! in one call when the tenant leaves, without touching anyone else.
//!
//! ```sh
//! cargo run --release --example tenants
//! ```
//!
//! Std collections cannot take an instance as their allocator on stable
//! Rust, so tenant data lives in `Buf`, a tiny safe wrapper over the
//! instance's `GlobalAlloc` calls. (With the `allocator-api2` feature,
//! `hashbrown` maps and `allocator_api2::vec::Vec` can use an instance
//! directly.)

use emma::InstanceExt;
use std::alloc::{GlobalAlloc, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

// One isolated allocator per tenant.
emma::emma_instance!(TenantA);
emma::emma_instance!(TenantB);
emma::emma_instance!(TenantC);

const MIB: usize = 1 << 20;

/// Called when a tenant's cap refuses memory. It runs inside the failing
/// allocation, so it must not allocate from that tenant (`eprintln!` uses
/// the process's global allocator, which is fine).
fn on_limit<const TENANT: char>(requested: usize, limit: usize) {
    eprintln!(
        "  [tenant {TENANT}] limit: refused {} KiB more (cap {} MiB)",
        requested / 1024,
        limit / MIB
    );
}

/// Bytes in a tenant's heap, freed when dropped.
struct Buf<H: GlobalAlloc> {
    heap: H,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: emma blocks may be used and freed from any thread.
unsafe impl<H: GlobalAlloc + Send> Send for Buf<H> {}

impl<H: GlobalAlloc> Buf<H> {
    /// A copy of `data` in `heap`, or `None` if the tenant is out of memory.
    fn try_from_slice(heap: H, data: &[u8]) -> Option<Self> {
        let layout = Layout::from_size_align(data.len().max(1), 8).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { heap.alloc(layout) })?;
        // SAFETY: the fresh block holds at least `data.len()` bytes.
        unsafe {
            ptr.as_ptr()
                .copy_from_nonoverlapping(data.as_ptr(), data.len())
        };
        Some(Buf {
            heap,
            ptr,
            len: data.len(),
        })
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` initialised bytes live as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<H: GlobalAlloc> Drop for Buf<H> {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.len.max(1), 8).unwrap();
        // SAFETY: allocated from `heap` with this layout in `try_from_slice`.
        unsafe { self.heap.dealloc(self.ptr.as_ptr(), layout) }
    }
}

/// Record `i` of a tenant: some text, a few hundred bytes to 32 KiB.
fn record(tenant: char, i: usize) -> Vec<u8> {
    let line = format!("tenant {tenant}, record {i}: lorem ipsum dolor sit amet\n");
    line.repeat(1 + (i * 7919) % 500).into_bytes()
}

/// Stores records `from..to` of `tenant` in `heap` until it runs out of
/// memory; returns them.
fn store<H: GlobalAlloc + Copy>(
    heap: H,
    tenant: char,
    from: usize,
    to: usize,
) -> Vec<(usize, Buf<H>)> {
    let mut out = Vec::new();
    for i in from..to {
        match Buf::try_from_slice(heap, &record(tenant, i)) {
            Some(b) => out.push((i, b)),
            None => {
                println!(
                    "tenant {tenant}: out of memory after {} records, stopping cleanly",
                    out.len()
                );
                break;
            }
        }
    }
    out
}

/// Checks every record's contents; returns how many there are.
fn verify<H: GlobalAlloc>(tenant: char, records: &[(usize, Buf<H>)]) -> usize {
    for (i, b) in records {
        let want = record(tenant, *i);
        assert_eq!(b.as_slice(), want, "tenant {tenant}, record {i}");
    }
    records.len()
}

fn wait_for(counter: &AtomicUsize, at_least: usize) {
    while counter.load(Ordering::Relaxed) < at_least {
        std::thread::yield_now();
    }
}

/// Stores records on two threads.
fn load<H: GlobalAlloc + Copy + Send + 'static>(
    heap: H,
    tenant: char,
    n: usize,
) -> Vec<(usize, Buf<H>)> {
    let halves =
        [0, n / 2].map(|from| std::thread::spawn(move || store(heap, tenant, from, from + n / 2)));
    halves.into_iter().flat_map(|t| t.join().unwrap()).collect()
}

fn main() {
    // Each tenant gets a cap; C's is too small for its work.
    TenantA.set_limit(Some(128 * MIB));
    TenantB.set_limit(Some(64 * MIB));
    TenantC.set_limit(Some(16 * MIB));
    TenantA.set_limit_hook(Some(on_limit::<'A'>));
    TenantB.set_limit_hook(Some(on_limit::<'B'>));
    TenantC.set_limit_hook(Some(on_limit::<'C'>));

    let a = load(TenantA, 'A', 4000);
    let mut b = load(TenantB, 'B', 2000);
    let c = load(TenantC, 'C', 4000); // hits its limit: fewer records, no crash
    TenantA.print_stats("tenant A");
    TenantB.print_stats("tenant B");
    TenantC.print_stats("tenant C");
    for (tenant, n) in [
        ('A', verify('A', &a)),
        ('B', verify('B', &b)),
        ('C', verify('C', &c)),
    ] {
        println!("tenant {tenant}: {n} records verified");
    }
    // What each tenant holds right now, in bytes of live blocks: the
    // figure to bill a tenant for, or to compare against its cap.
    for (tenant, live) in [
        ('A', TenantA.stats().live),
        ('B', TenantB.stats().live),
        ('C', TenantC.stats().live),
    ] {
        println!(
            "tenant {tenant}: {} live blocks, {} KiB",
            live.blocks,
            live.bytes / 1024
        );
    }

    // Tenant B leaves. Its memory goes back in one call while tenant A
    // keeps working on another thread.
    let stop = Arc::new(AtomicBool::new(false));
    let stored = Arc::new(AtomicUsize::new(0));
    let busy_a = {
        let (stop, stored) = (stop.clone(), stored.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let batch = store(TenantA, 'A', 0, 50); // stored, checked, dropped
                stored.fetch_add(verify('A', &batch), Ordering::Relaxed);
            }
        })
    };
    wait_for(&stored, 100);
    // B's blocks die with the teardown: forget them instead of dropping.
    std::mem::forget(std::mem::take(&mut b));
    // SAFETY: no block of tenant B is used any more, and no thread is
    // allocating from it.
    let leaked = unsafe { TenantB.teardown() };
    // Blocks B never freed: all of its records, which we forgot on purpose.
    println!(
        "tenant B torn down with {} blocks ({} KiB) still live",
        leaked.blocks,
        leaked.bytes / 1024
    );
    wait_for(&stored, stored.load(Ordering::Relaxed) + 100);
    stop.store(true, Ordering::Relaxed);
    busy_a.join().unwrap();
    println!(
        "tenant A stored {} more records around B's teardown",
        stored.load(Ordering::Relaxed)
    );
    TenantB.print_stats("tenant B after teardown");
    println!(
        "tenants A and C: {} records verified",
        verify('A', &a) + verify('C', &c)
    );

    // A new tenant B starts from scratch in the same instance.
    let b = load(TenantB, 'B', 1000);
    println!("tenant B, restarted: {} records verified", verify('B', &b));
    TenantB.print_stats("tenant B, restarted");
}
