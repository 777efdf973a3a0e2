//! Instances in every place and shape a caller may declare them; each one
//! allocates for real and is distinct from the others.
//!
//! Tests run in parallel in one process, so every instance here is used by
//! one test only: that keeps `stats().mapped` of an untouched instance
//! exactly where it was.

use core::alloc::{GlobalAlloc, Layout};
use emma::InstanceExt;

// Two instances in one module.
emma::emma_instance!(First);
emma::emma_instance!(Second);

// The same name in two modules.
mod left {
    emma::emma_instance!(pub Heap);
}
mod right {
    emma::emma_instance!(pub Heap);
}

// Doc comments and attributes before the visibility.
emma::emma_instance!(
    /// A documented instance with a lint attribute.
    ///
    /// (Its name would warn without the `allow`.)
    #[allow(non_camel_case_types)]
    #[doc(alias = "documented")]
    pub documented_heap
);

// Every visibility.
emma::emma_instance!(pub(crate) CrateHeap);
emma::emma_instance!(PrivateHeap);
mod nested {
    emma::emma_instance!(pub(super) SuperHeap);
    emma::emma_instance!(pub(in crate::nested) InPathHeap);

    pub fn check() {
        super::assert_distinct(SuperHeap, InPathHeap);
    }
}

/// Allocates `size` bytes from `heap`, fills them, reads them back and
/// checks that `heap` owns the block. The caller frees it with [`free`].
fn filled_block<I: GlobalAlloc + InstanceExt>(heap: I, size: usize, seed: u8) -> *mut u8 {
    let layout = Layout::from_size_align(size, 16).unwrap();
    // SAFETY: `layout` has a non-zero size.
    let p = unsafe { heap.alloc(layout) };
    assert!(!p.is_null(), "allocation of {size} bytes failed");
    assert_eq!(p as usize % 16, 0);
    for i in 0..size {
        // SAFETY: `p` is a live block of `size` bytes.
        unsafe { p.add(i).write(pattern(seed, i)) };
    }
    for i in 0..size {
        // SAFETY: as above, and written just now.
        assert_eq!(unsafe { p.add(i).read() }, pattern(seed, i));
    }
    assert!(heap.owns(p));
    p
}

/// The byte at offset `i` of a block filled with `seed`.
fn pattern(seed: u8, i: usize) -> u8 {
    seed.wrapping_add(i.to_le_bytes()[0])
}

/// Frees a block of [`filled_block`].
fn free<I: GlobalAlloc>(heap: I, p: *mut u8, size: usize) {
    let layout = Layout::from_size_align(size, 16).unwrap();
    // SAFETY: `p` came from `heap.alloc(layout)`.
    unsafe { heap.dealloc(p, layout) }
}

/// Uses `a` and `b` one after the other and checks that neither owns the
/// other's blocks nor sees the other's mappings. Both must be unused so far.
fn assert_distinct<A, B>(a: A, b: B)
where
    A: GlobalAlloc + InstanceExt,
    B: GlobalAlloc + InstanceExt,
{
    assert_eq!(a.stats().mapped, 0, "instance used before the test");
    assert_eq!(b.stats().mapped, 0, "instance used before the test");

    // A small block (in a segment) and a huge one (its own mapping).
    let huge = emma::MAX_CLASS_SIZE * 2;
    let pa = filled_block(a, 100, 1);
    let ha = filled_block(a, huge, 2);
    let a_mapped = a.stats().mapped;
    assert!(a_mapped >= huge);
    assert!(!b.owns(pa) && !b.owns(ha));
    assert_eq!(b.stats().mapped, 0, "b maps memory a asked for");

    let pb = filled_block(b, 100, 3);
    let hb = filled_block(b, huge, 4);
    assert!(b.stats().mapped >= huge);
    assert!(!a.owns(pb) && !a.owns(hb));
    assert_eq!(a.stats().mapped, a_mapped, "a maps memory b asked for");

    // The blocks kept their contents through the other instance's work.
    for (p, seed) in [(pa, 1u8), (pb, 3)] {
        for i in 0..100 {
            // SAFETY: live blocks of 100 bytes.
            assert_eq!(unsafe { p.add(i).read() }, pattern(seed, i));
        }
    }
    free(a, pa, 100);
    free(a, ha, huge);
    free(b, pb, 100);
    free(b, hb, huge);
}

#[test]
fn two_instances_in_one_module() {
    assert_distinct(First, Second);
}

#[test]
fn same_name_in_two_modules() {
    assert_distinct(left::Heap, right::Heap);
}

#[test]
fn same_name_in_two_function_bodies() {
    fn one() -> impl GlobalAlloc + InstanceExt {
        emma::emma_instance!(Local);
        Local
    }
    fn two() -> impl GlobalAlloc + InstanceExt {
        emma::emma_instance!(Local);
        Local::new()
    }
    assert_distinct(one(), two());
}

#[test]
fn instances_in_a_closure_a_method_and_a_generic_fn() {
    // The mangled names of statics in such places carry closure, impl or
    // generic markers; the heap slot's label is built from them.
    struct Holder;
    impl Holder {
        fn heap(&self) -> impl GlobalAlloc + InstanceExt {
            emma::emma_instance!(InMethod);
            InMethod
        }
    }
    fn generic<T>(_: T) -> impl GlobalAlloc + InstanceExt {
        emma::emma_instance!(InGeneric);
        InGeneric
    }
    let in_closure = || {
        emma::emma_instance!(InClosure);
        InClosure
    };
    assert_distinct(in_closure(), Holder.heap());
    emma::emma_instance!(Beside);
    assert_distinct(generic(1u8), Beside);
    // Items in a generic function are not generic: one instance for all.
    let p = filled_block(generic(2u16), 64, 7);
    assert!(generic(1u8).owns(p));
    free(generic(3u32), p, 64);
}

#[test]
fn instance_in_a_block_expression() {
    let inner = {
        emma::emma_instance!(Inner);
        Inner
    };
    emma::emma_instance!(Outer);
    assert_distinct(inner, Outer);
}

#[test]
fn documented_instance_with_attributes() {
    assert_distinct(documented_heap, CrateHeap);
}

#[test]
fn private_and_restricted_visibility() {
    assert_distinct(PrivateHeap, emma_macro_tests_same_name::Shared);
    nested::check();
}

/// An instance with the name of one declared in another crate.
mod emma_macro_tests_same_name {
    emma::emma_instance!(pub Shared);
}

#[test]
fn instance_declared_in_another_crate() {
    // `Shared` of the `no_std` library against the local `Shared` above
    // (already used by another test, hence no `assert_distinct`).
    use emma_macro_tests::Shared;
    let p = filled_block(Shared, 1000, 5);
    assert!(!emma_macro_tests_same_name::Shared.owns(p));
    assert!(!First.owns(p) && !left::Heap.owns(p));
    assert!(Shared.stats().mapped > 0);
    free(Shared, p, 1000);
}

#[test]
fn instance_type_is_a_plain_value() {
    // A unit struct: `new()`, the name itself and `default()` are one value.
    emma::emma_instance!(Value);
    assert_eq!(Value::new(), Value);
    assert_eq!(<Value as Default>::default(), Value);
    assert_eq!(core::mem::size_of::<Value>(), 0);
    assert_eq!(format!("{Value:?}"), "Value");
    let copy = Value;
    let p = filled_block(copy, 64, 6);
    assert!(Value.owns(p));
    free(Value, p, 64);
}

#[test]
fn instance_used_from_several_threads() {
    emma::emma_instance!(Threaded);
    emma::emma_instance!(Bystander);
    let handles: Vec<_> = (0..4u8)
        .map(|t| {
            std::thread::spawn(move || {
                for round in 0..50 {
                    let size = 16 + 24 * usize::from(t) + round;
                    let p = filled_block(Threaded, size, t);
                    assert!(!Bystander.owns(p));
                    free(Threaded, p, size);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert!(Threaded.stats().mapped > 0);
    assert_eq!(Bystander.stats().mapped, 0);
}

#[test]
fn heap_slot_is_per_thread_and_per_instance() {
    // `Instance::heap` is hidden API: the slot's value, the empty heap
    // until the thread's first allocation claims a real one.
    use emma::Instance;
    emma::emma_instance!(Slotted);
    emma::emma_instance!(Neighbour);
    let slot = || <Slotted as Instance>::heap() as usize;
    let empty = std::thread::spawn(slot).join().unwrap();
    assert_eq!(slot(), empty);
    let p = filled_block(Slotted, 32, 8);
    let mine = slot();
    assert_ne!(mine, empty, "the first allocation claimed no heap");
    assert_eq!(<Neighbour as Instance>::heap() as usize, empty);
    std::thread::spawn(move || {
        assert_eq!(slot(), empty, "a new thread sees another's slot");
        let q = filled_block(Slotted, 32, 9);
        assert_ne!(slot(), empty);
        assert_ne!(slot(), mine, "two live threads on one heap");
        free(Slotted, q, 32);
    })
    .join()
    .unwrap();
    assert_eq!(slot(), mine);
    assert_eq!(Slotted.stats().heaps, 2);
    free(Slotted, p, 32);
}

#[test]
fn tls_feature_reaches_the_expansion() {
    // With `tls` (the default), each instance has a thread-local slot
    // defined in assembly, and this crate still enables no `#![feature]`.
    assert_eq!(<First as emma::Instance>::USES_TLS, cfg!(feature = "tls"));
}
