//! Reuse of remote frees: a thread that frees small blocks of another
//! thread's heap takes them for its own next allocations of that size,
//! while they are in its cache, if it allocates that size at all; it never
//! hands out such a block as known zero; and what it keeps goes back to the
//! owner on its `trim` and when it exits and its heap is collected.
//! Without `hardened`, where blocks are not kept (each page's links are
//! encoded with its own keys), each test checks that nothing is.
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;

use common::*;
use core::alloc::GlobalAlloc;
use emma::InstanceExt;
use std::collections::HashSet;
use std::sync::{Arc, Barrier};

emma::emma_instance!(Reused);
emma::emma_instance!(Zeroed);
emma::emma_instance!(Trimmed);
emma::emma_instance!(Exited);
emma::emma_instance!(Consumer);

const BLOCKS: usize = 64;
const SIZE: usize = 48;

/// Whether the build keeps other heaps' blocks for reuse.
const KEEPS: bool = !cfg!(feature = "hardened");

/// `BLOCKS` blocks of `SIZE` bytes of `i`, filled with 0xAA.
fn dirty_blocks<I: GlobalAlloc>(i: &I) -> Vec<usize> {
    (0..BLOCKS)
        .map(|_| {
            let p = unsafe { i.alloc(layout(SIZE, 8)) };
            assert!(!p.is_null());
            unsafe { p.write_bytes(0xAA, SIZE) };
            p as usize
        })
        .collect()
}

/// A thread that frees another's blocks of a size it allocates too gets
/// them back from its next allocations of that size, and its heap passes
/// the invariant checks meanwhile.
#[test]
fn a_thread_reuses_the_blocks_it_frees_for_another() {
    let theirs = dirty_blocks(&Reused);
    let reused = std::thread::spawn(move || {
        // A heap of our own, with a page of this size.
        let mine = unsafe { Reused.alloc(layout(SIZE, 8)) };
        for &p in &theirs {
            unsafe { Reused.dealloc(p as *mut u8, layout(SIZE, 8)) };
        }
        assert_heap_ok(Reused, "after the remote frees");
        let again: Vec<usize> = (0..BLOCKS)
            .map(|_| unsafe { Reused.alloc(layout(SIZE, 8)) } as usize)
            .collect();
        assert_heap_ok(Reused, "after reusing them");
        let theirs: HashSet<usize> = theirs.into_iter().collect();
        let reused = again.iter().filter(|p| theirs.contains(p)).count();
        for p in again.into_iter().chain([mine as usize]) {
            unsafe { Reused.dealloc(p as *mut u8, layout(SIZE, 8)) };
        }
        reused
    })
    .join()
    .unwrap();
    assert_eq!(reused, if KEEPS { BLOCKS } else { 0 });
}

/// A block another heap carved from fresh memory is zeroed when asked
/// zeroed, though its page still hands out zero blocks of its own without
/// a write.
#[test]
fn blocks_of_another_heaps_fresh_page_are_zeroed() {
    // A fresh instance: its page hands out fresh (zero) memory.
    let theirs = dirty_blocks(&Zeroed);
    std::thread::spawn(move || {
        let mine = unsafe { Zeroed.alloc(layout(SIZE, 8)) };
        for &p in &theirs {
            unsafe { Zeroed.dealloc(p as *mut u8, layout(SIZE, 8)) };
        }
        let again: Vec<*mut u8> = (0..BLOCKS)
            .map(|_| unsafe { Zeroed.alloc_zeroed(layout(SIZE, 8)) })
            .collect();
        for &p in &again {
            unsafe { verify_zero(p, SIZE, "alloc_zeroed of a reused block") };
        }
        for p in again.into_iter().chain([mine]) {
            unsafe { Zeroed.dealloc(p, layout(SIZE, 8)) };
        }
    })
    .join()
    .unwrap();
}

/// What a thread keeps of another's blocks reaches the owner after the
/// keeper's `trim`, though the keeper never allocates again.
#[test]
fn kept_blocks_go_back_on_the_keepers_trim() {
    let theirs = dirty_blocks(&Trimmed);
    let freed = Arc::new(Barrier::new(2));
    let counted = Arc::new(Barrier::new(2));
    let keeper = {
        let (freed, counted) = (freed.clone(), counted.clone());
        std::thread::spawn(move || {
            let mine = unsafe { Trimmed.alloc(layout(SIZE, 8)) };
            for p in theirs {
                unsafe { Trimmed.dealloc(p as *mut u8, layout(SIZE, 8)) };
            }
            Trimmed.trim();
            freed.wait();
            counted.wait();
            unsafe { Trimmed.dealloc(mine, layout(SIZE, 8)) };
        })
    };
    freed.wait();
    // Takes our inbox.
    Trimmed.trim();
    let s = Trimmed.stats();
    counted.wait();
    keeper.join().unwrap();
    assert_eq!(s.remote_frees, BLOCKS, "{s:?}");
    assert_eq!(
        s.live.blocks, 1,
        "only the keeper's own block is live: {s:?}"
    );
}

/// What an exited thread kept of another's blocks reaches the owner when
/// its heap is collected. In both modes: without `tls` the exited thread
/// is proven gone by its control block, which the joined thread's cached
/// stack keeps mapped with the kernel's tid word cleared.
#[test]
fn kept_blocks_of_an_exited_thread_are_collected() {
    let theirs = dirty_blocks(&Exited);
    std::thread::spawn(move || {
        let mine = unsafe { Exited.alloc(layout(SIZE, 8)) };
        for p in theirs {
            unsafe { Exited.dealloc(p as *mut u8, layout(SIZE, 8)) };
        }
        unsafe { Exited.dealloc(mine, layout(SIZE, 8)) };
    })
    .join()
    .unwrap();
    let start = std::time::Instant::now();
    let s = loop {
        // Collects the exited thread's heap, then takes our inbox.
        Exited.trim();
        let s = Exited.stats();
        if s.live.blocks == 0 || start.elapsed() > std::time::Duration::from_secs(2) {
            break s;
        }
        // The kernel may report a joined thread alive for a moment.
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert_eq!(s.live.blocks, 0, "{s:?}");
    assert_eq!(s.remote_frees, BLOCKS, "{s:?}");
}

/// A thread that frees blocks of a size it never allocates keeps none of
/// them: they go back to their owner, whose memory they are.
#[test]
fn a_consumer_keeps_nothing_of_a_size_it_does_not_allocate() {
    let theirs = dirty_blocks(&Consumer);
    let reused = std::thread::spawn(move || {
        // A heap of our own, without a page of this size.
        let mine = unsafe { Consumer.alloc(layout(1000, 8)) };
        for &p in &theirs {
            unsafe { Consumer.dealloc(p as *mut u8, layout(SIZE, 8)) };
        }
        let again: Vec<usize> = (0..BLOCKS)
            .map(|_| unsafe { Consumer.alloc(layout(SIZE, 8)) } as usize)
            .collect();
        let theirs: HashSet<usize> = theirs.into_iter().collect();
        let reused = again.iter().filter(|p| theirs.contains(p)).count();
        for p in again {
            unsafe { Consumer.dealloc(p as *mut u8, layout(SIZE, 8)) };
        }
        unsafe { Consumer.dealloc(mine, layout(1000, 8)) };
        reused
    })
    .join()
    .unwrap();
    assert_eq!(reused, 0);
}
