//! The instance's invariants, as code: [`InstanceState::check`] walks
//! what all threads share (the store's caches, every mapping's header);
//! each thread's heap is checked by its own thread ([`Heap::check`]).
//! Builds with debug assertions run the shared part on the slow paths'
//! ticks ([`InstanceState::verify`]).
//!
//! Every chunk the segment map records as a header starts with a
//! [`SegmentHeader`] naming this instance, of a known kind; a huge one
//! passes [`HugeHeader::check`]. The one exception is a mapping that
//! another thread has just recorded and not yet initialised (headers of
//! fresh mappings are written after they are recorded, outside the lock):
//! what is not yet written reads as zero.

use super::*;
use crate::huge::{self, HugeHeader};

impl InstanceState {
    /// Re-checks the store's caches (`SegmentStore::check`), the span
    /// cache's headers and the header of every mapping of the instance.
    /// Returns a description of the first violation.
    pub fn check(&self) -> Result<(), &'static str> {
        self.store.check()?;
        huge::check_cache(&self.store)?;
        let id = self.id();
        let mut r = Ok(());
        let _g = self.store.lock();
        self.store.segmap.scan_headers(0, |base| {
            let h = base as *const SegmentHeader;
            // SAFETY: a header chunk of our map is a mapped segment, and
            // the lock keeps it mapped.
            r = unsafe {
                match (*h).kind {
                    // Mapped and recorded, header not yet (fully) written:
                    // the mapping was fresh, so what is not written reads
                    // as zero. (In a fork child it may stay so: the thread
                    // that was writing it is gone.)
                    _ if (*h).instance == 0 => Ok(()),
                    0 if (*h).instance == id => Ok(()),
                    _ if (*h).instance != id => Err("a mapping's header names another instance"),
                    k if k == Kind::Huge as u32 => (*(h as *const HugeHeader)).check(),
                    k if k == Kind::Small as u32 || k == Kind::Zero as u32 => Ok(()),
                    _ => Err("a mapping of the instance has no valid header"),
                }
            };
            r.is_ok()
        });
        r
    }

    /// [`InstanceState::check`] in builds with debug assertions, aborting
    /// with the violation's description; nothing otherwise.
    #[inline]
    pub(crate) fn verify(&self) {
        if cfg!(debug_assertions) {
            if let Err(what) = self.check() {
                crate::fatal::fatal(what, (self as *const Self).cast());
            }
        }
    }
}
