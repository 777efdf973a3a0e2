//! The instance type as an `Allocator`: nightly `core::alloc::Allocator`
//! (feature `allocator-api`) and `allocator_api2` (feature `allocator-api2`),
//! used by real collections, with zero-sized layouts, growth, shrinking and
//! zeroed allocations.
#![cfg_attr(feature = "allocator-api", feature(allocator_api))]
#![allow(clippy::undocumented_unsafe_blocks)]

emma::emma_instance!(Arena);

#[cfg(feature = "allocator-api")]
mod nightly {
    use super::Arena;
    use core::alloc::{Allocator, Layout};
    use emma::InstanceExt;

    #[test]
    fn vec_and_box_in_an_instance() {
        let mut v: Vec<u64, Arena> = Vec::new_in(Arena);
        for i in 0..100_000u64 {
            v.push(i * 3);
        }
        assert!(Arena.owns(v.as_ptr().cast()));
        assert_eq!(v.iter().sum::<u64>(), 3 * (99_999 * 100_000 / 2));
        v.truncate(10);
        v.shrink_to_fit();
        assert_eq!(v, (0..10).map(|i| i * 3).collect::<Vec<_>>());
        let b = Box::new_in([7u8; 3000], Arena);
        assert!(Arena.owns(b.as_ptr()));
        assert!(b.iter().all(|&x| x == 7));
    }

    #[test]
    fn zero_sized_grow_shrink_zeroed() {
        let a = Arena;
        let z = Layout::from_size_align(0, 64).unwrap();
        let p = a.allocate(z).unwrap();
        assert_eq!(p.len(), 0);
        assert_eq!(p.cast::<u8>().as_ptr() as usize % 64, 0);
        let l1 = Layout::from_size_align(24, 8).unwrap();
        let l2 = Layout::from_size_align(5000, 8).unwrap();
        unsafe {
            let p = a.grow_zeroed(p.cast(), z, l1).unwrap();
            assert!(p.len() >= 24);
            let bytes = p.cast::<u8>().as_ptr();
            assert!((0..24).all(|i| *bytes.add(i) == 0));
            bytes.write_bytes(0xAB, 24);
            let p = a.grow_zeroed(p.cast(), l1, l2).unwrap();
            let bytes = p.cast::<u8>().as_ptr();
            assert!((0..24).all(|i| *bytes.add(i) == 0xAB));
            assert!((24..5000).all(|i| *bytes.add(i) == 0));
            let l3 = Layout::from_size_align(100, 8).unwrap();
            let p = a.shrink(p.cast(), l2, l3).unwrap();
            let bytes = p.cast::<u8>().as_ptr();
            assert!((0..24).all(|i| *bytes.add(i) == 0xAB));
            // Growing to a stricter alignment moves the block and keeps the data.
            let l4 = Layout::from_size_align(100, 4096).unwrap();
            let p = a.grow(p.cast(), l3, l4).unwrap();
            let bytes = p.cast::<u8>().as_ptr();
            assert_eq!(bytes as usize % 4096, 0);
            assert!((0..24).all(|i| *bytes.add(i) == 0xAB));
            a.deallocate(p.cast(), l4);
        }
    }
}

#[cfg(feature = "allocator-api2")]
mod stable {
    use super::Arena;
    use allocator_api2::alloc::{Allocator, Layout};
    use allocator_api2::vec::Vec;
    use emma::InstanceExt;

    #[test]
    fn allocator_api2_vec_in_an_instance() {
        let mut v: Vec<String, Arena> = Vec::new_in(Arena);
        for i in 0..10_000 {
            v.push(i.to_string());
        }
        assert!(Arena.owns(v.as_ptr().cast()));
        assert_eq!(v[9_999], "9999");
        let l = Layout::from_size_align(0, 8).unwrap();
        let p = Arena.allocate(l).unwrap();
        unsafe { Arena.deallocate(p.cast(), l) };
    }
}
