//! The heap's one way up to its instance.

use crate::segment::Segment;
use crate::store::SegmentStore;

/// What a heap needs from its instance, and all it may reach of it:
/// the store it maps through, segments (the instance first runs its
/// one-time setup and fork repair), and the instance's share of a slow
/// path's periodic upkeep. The instance implements it; a heap holds it as
/// a trait object, called on slow paths only.
pub trait Source: Sync {
    /// The store that maps the instance's memory.
    fn store(&self) -> &SegmentStore;
    /// A segment for a new page (null if out of memory).
    fn alloc_segment(&self) -> *mut Segment;
    /// Takes back an empty segment.
    ///
    /// # Safety
    /// As for [`SegmentStore::release_segment`].
    unsafe fn release_segment(&self, seg: *mut Segment);
    /// The instance's part of a slow path's tick (see [`crate::purge`]).
    fn tick(&self, now: u64);
}
