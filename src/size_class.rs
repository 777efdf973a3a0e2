//! Size classes: the block sizes pages are carved into.
//!
//! Sizes up to 128 bytes step by 16 (the minimum alignment); above that each
//! power-of-two interval `(2^b, 2^(b+1)]` is split into four classes, so a
//! request never gets a block more than 25% larger than itself plus the
//! 16-byte rounding (worst case: 129 bytes in a 160-byte block, 19.4% of
//! the block). Requests above [`MAX_CLASS_SIZE`] are huge: mapped on their
//! own.
//!
//! ```text
//! class:  0   1   2   3   4   5   6   7 | 8   9   10  11 | 12  13  14  15 | ...  | 59
//! size:  16  32  48  64  80  96 112 128 |160 192 224 256 |320 384 448 512 | ...  | 1 MiB
//! ```
//!
//! Every power of two from 16 bytes to 1 MiB is a class size, and every
//! class size is a multiple of its largest power-of-two divisor's alignment,
//! which is how aligned requests are served from ordinary pages.

/// Minimum block size and alignment of every allocation (glibc's too).
pub const MIN_ALIGN: usize = 16;

/// Largest size served from size-classed pages.
pub const MAX_CLASS_SIZE: usize = 1 << 20;

/// Classes below this size are spaced linearly by [`MIN_ALIGN`].
const LINEAR_LIMIT: usize = 128;
const LINEAR_CLASSES: usize = LINEAR_LIMIT / MIN_ALIGN;
/// log2 of [`LINEAR_LIMIT`].
const LINEAR_SHIFT: u32 = LINEAR_LIMIT.trailing_zeros();
/// Classes per power-of-two interval above [`LINEAR_LIMIT`].
const STEPS_PER_DOUBLING: usize = 4;

/// Number of size classes.
pub const CLASS_COUNT: usize = LINEAR_CLASSES
    + STEPS_PER_DOUBLING
        * (MAX_CLASS_SIZE.trailing_zeros() - LINEAR_LIMIT.trailing_zeros()) as usize;

/// A size-class index, always `< CLASS_COUNT`.
pub type Class = usize;

/// Sizes up to this are looked up in [`SMALL_TABLE`] (one load).
const TABLE_LIMIT: usize = 1024;

/// The class of each 16-byte granule up to [`TABLE_LIMIT`]: index
/// `(size + 15) / 16`.
static SMALL_TABLE: [u8; TABLE_LIMIT / MIN_ALIGN + 1] = {
    let mut t = [0u8; TABLE_LIMIT / MIN_ALIGN + 1];
    let mut i = 1;
    while i < t.len() {
        t[i] = computed_class(i * MIN_ALIGN) as u8;
        i += 1;
    }
    t
};

/// [`class_of`] for constant tables: the class for `size` by arithmetic
/// (`size <= MAX_CLASS_SIZE`; 0 gets class 0).
pub const fn class_of_const(size: usize) -> Class {
    if size == 0 {
        0
    } else {
        computed_class(size)
    }
}

/// The class for `size` by arithmetic (`1 <= size <= MAX_CLASS_SIZE`).
const fn computed_class(size: usize) -> Class {
    if size <= LINEAR_LIMIT {
        return (size - 1) / MIN_ALIGN;
    }
    let s = size - 1;
    let b = usize::BITS - 1 - s.leading_zeros(); // floor(log2(s)) >= 7
    let step = (s >> (b - 2)) & (STEPS_PER_DOUBLING - 1);
    LINEAR_CLASSES + (b - LINEAR_SHIFT) as usize * STEPS_PER_DOUBLING + step
}

/// The block size of class `c`.
#[inline]
pub const fn class_size(c: Class) -> usize {
    if c < LINEAR_CLASSES {
        return (c + 1) * MIN_ALIGN;
    }
    let k = c - LINEAR_CLASSES;
    let b = LINEAR_SHIFT as usize + k / STEPS_PER_DOUBLING;
    (STEPS_PER_DOUBLING + k % STEPS_PER_DOUBLING + 1) << (b - 2)
}

/// The smallest class whose blocks hold `size` bytes (`size <=
/// MAX_CLASS_SIZE`; 0 gets the smallest class, as `malloc(0)` wants).
#[inline(always)]
pub fn class_of(size: usize) -> Class {
    debug_assert!(size <= MAX_CLASS_SIZE);
    if size <= TABLE_LIMIT {
        SMALL_TABLE[size.div_ceil(MIN_ALIGN)] as Class
    } else {
        computed_class(size)
    }
}

/// The smallest class whose blocks hold `size` bytes and are all aligned
/// to `align` when the page start is (`align` a power of two, at most
/// [`MAX_CLASS_SIZE`]). `None` if no class fits.
pub fn class_of_aligned(size: usize, align: usize) -> Option<Class> {
    let size = size.max(align).max(1);
    if size > MAX_CLASS_SIZE {
        return None;
    }
    let mut c = class_of(size);
    // At most four steps: the power of two at the end of the interval is
    // always a multiple of `align`.
    while c < CLASS_COUNT {
        if class_size(c).is_multiple_of(align) {
            return Some(c);
        }
        c += 1;
    }
    None
}

// The table and the arithmetic agree, classes grow strictly, and the
// boundaries are where the module docs say.
const _: () = {
    assert!(CLASS_COUNT == 60);
    assert!(class_size(0) == MIN_ALIGN);
    assert!(class_size(LINEAR_CLASSES - 1) == LINEAR_LIMIT);
    assert!(class_size(LINEAR_CLASSES) == 160);
    assert!(class_size(CLASS_COUNT - 1) == MAX_CLASS_SIZE);
    assert!(computed_class(MAX_CLASS_SIZE) == CLASS_COUNT - 1);
    let mut c = 1;
    while c < CLASS_COUNT {
        assert!(class_size(c) > class_size(c - 1));
        assert!(class_size(c).is_multiple_of(MIN_ALIGN));
        // Each class is the answer for its own size and the size just above
        // the previous class.
        assert!(computed_class(class_size(c)) == c);
        assert!(computed_class(class_size(c - 1) + 1) == c);
        // Internal waste above the linear range is bounded by 25%.
        if c >= LINEAR_CLASSES {
            assert!((class_size(c) - class_size(c - 1) - 1) * 4 <= class_size(c));
        }
        c += 1;
    }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "a million sizes: too slow under Miri")]
    fn every_size_maps_to_the_smallest_fitting_class() {
        let mut c = 0;
        for size in 1..=MAX_CLASS_SIZE {
            if size > class_size(c) {
                c += 1;
            }
            assert_eq!(class_of(size), c, "size {size}");
        }
    }

    #[test]
    fn aligned_classes_are_multiples_of_the_alignment() {
        for shift in 4..=20 {
            let align = 1usize << shift;
            for size in [1, 7, 16, 100, 1000, 5000, 70_000, 300_000, 1 << 20] {
                match class_of_aligned(size, align) {
                    Some(c) => {
                        assert_eq!(class_size(c) % align, 0);
                        assert!(class_size(c) >= size);
                    }
                    None => assert!(size.max(align) > MAX_CLASS_SIZE),
                }
            }
        }
    }

    #[test]
    fn worst_case_waste_above_128_bytes_is_under_a_fifth() {
        let mut worst = 0.0f64;
        for c in LINEAR_CLASSES..CLASS_COUNT {
            let smallest = class_size(c - 1) + 1;
            let waste = (class_size(c) - smallest) as f64 / class_size(c) as f64;
            worst = worst.max(waste);
        }
        assert!(worst < 0.2, "{worst}");
    }
}
