//! Unit tests of the segment layer: page spans, the huge-boundary case of
//! `segment_of`, and the segment and page invariant checks (each seen
//! failing on a corrupted copy).

use super::*;
use crate::size_class::CLASS_COUNT;

#[test]
fn page_spans_fit_in_a_segment() {
    for c in 0..CLASS_COUNT {
        let n = page_slices(c);
        assert!((1..SLICES).contains(&n));
        assert!(n * SLICE_SIZE / class_size(c) >= 1, "class {c}");
    }
    assert_eq!(page_slices(0), 1);
}

/// A page of big blocks spans at most 128 KiB, or one block's slices: a
/// freed block of a page that stays in use stays resident, so big pages of
/// several big blocks held megabytes for one live block.
#[test]
fn pages_of_big_blocks_stay_small() {
    for c in 0..CLASS_COUNT {
        let (n, bs) = (page_slices(c), class_size(c));
        assert!(
            n <= LARGE_PAGE_MAX_SLICES || n == bs.div_ceil(SLICE_SIZE),
            "class {c}: {bs} B blocks in {n} slices"
        );
    }
}

/// A fresh segment mapping, unmapped on drop.
struct Scratch(NonNull<u8>);
impl Drop for Scratch {
    fn drop(&mut self) {
        // SAFETY: ours, mapped by `scratch`.
        unsafe { crate::os::unmap(self.0, SEGMENT_SIZE) }
    }
}
fn scratch() -> (Scratch, *mut Segment) {
    let base = crate::os::map_aligned(SEGMENT_SIZE, SEGMENT_SIZE).unwrap();
    // SAFETY: fresh, aligned, ours.
    let seg = unsafe { Segment::init(base, 1, Keys { k: 0 }, 0) };
    (Scratch(base), seg)
}

#[test]
fn segment_check_finds_broken_slice_bookkeeping() {
    let (_m, seg) = scratch();
    // SAFETY: the segment is ours; every corruption is undone.
    unsafe {
        assert_eq!(Segment::check(seg), Ok(()));
        let c = crate::size_class::class_of(20_000); // a multi-slice class
        let n = page_slices(c);
        assert!(n > 1);
        let head = (*seg).find_span(n).unwrap();
        let page = Segment::setup_page(seg, head, n, c);
        assert_eq!(Segment::check(seg), Ok(()));

        (*seg).pages_in_use += 1;
        assert!(Segment::check(seg).unwrap_err().contains("pages_in_use"));
        (*seg).pages_in_use -= 1;

        (*seg).head_of[head + 1] = 0;
        assert!(Segment::check(seg).unwrap_err().contains("point elsewhere"));
        (*seg).head_of[head + 1] = head as u8;

        (*seg).lazy_slices |= 1 << head;
        assert!(Segment::check(seg).unwrap_err().contains("lazily"));
        (*seg).lazy_slices = 0;

        (*page).reserved += 1;
        assert!(Segment::check(seg).unwrap_err().contains("geometry"));
        (*page).reserved -= 1;

        assert!(Segment::release_page(page));
        assert_eq!(Segment::check(seg), Ok(()));
    }
}

#[test]
fn page_check_finds_broken_free_lists() {
    let (_m, seg) = scratch();
    // SAFETY: the segment is ours; every corruption is undone.
    unsafe {
        let page = Segment::setup_page(seg, 1, 1, 2);
        let keys = (*page).keys;
        assert_eq!((*page).extend(8), 8);
        assert_eq!((*page).check(), Ok(()));
        let first = (*page).free;
        let mut last = first;
        while !Block::next(last, keys).is_null() {
            last = Block::next(last, keys);
        }
        // A cycle: the last block links back to the first.
        Block::set_next(last, first, keys);
        assert!((*page).check().unwrap_err().contains("cycle"));
        // A pointer into the middle of a block.
        Block::set_next(last, first.cast::<u8>().add(8).cast(), keys);
        assert!((*page).check().unwrap_err().contains("not a block"));
        Block::set_next(last, ptr::null_mut(), keys);
        assert_eq!((*page).check(), Ok(()));
        // A block counted as both handed out and freed.
        (*page).used += 1;
        assert!((*page).check().is_err());
    }
}

#[test]
fn segment_of_handles_the_huge_boundary_case() {
    let seg = 8 * SEGMENT_SIZE;
    assert_eq!(segment_of((seg + 16) as *mut u8) as usize, seg);
    assert_eq!(segment_of((seg + SEGMENT_SIZE) as *mut u8) as usize, seg);
    assert_eq!(
        segment_of((seg + SEGMENT_SIZE + 1) as *mut u8) as usize,
        seg + SEGMENT_SIZE
    );
}
