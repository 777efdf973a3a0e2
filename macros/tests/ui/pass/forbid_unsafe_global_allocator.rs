//! A program that forbids `unsafe` and uses an instance as its global
//! allocator.

#![forbid(unsafe_code)]
#![deny(warnings)]

use emma::InstanceExt;

emma::emma_instance!(Heap);

#[global_allocator]
static GLOBAL: Heap = Heap::new();

fn main() {
    // trybuild forwards this package's features: with `tls` (the default)
    // the expansion defines a thread-local slot with `global_asm!` and
    // reads it with `asm!`, still without `unsafe` or a feature gate here.
    assert_eq!(<Heap as emma::Instance>::USES_TLS, cfg!(feature = "tls"));

    let v: Vec<u64> = (0..1000).collect();
    assert!(Heap.owns(v.as_ptr().cast()));
    let s = v.iter().sum::<u64>().to_string();
    assert_eq!(s, "499500");
    assert!(Heap.owns(s.as_ptr()));

    let from_thread = std::thread::spawn(|| {
        let b = Box::new([7u8; 100]);
        Heap.owns(b.as_ptr())
    });
    assert!(from_thread.join().unwrap());
    assert!(Heap.stats().mapped > 0);
}
