//! Synchronisation for slow paths: a futex lock and fork detection.
//!
//! Fast paths never lock. The [`Lock`] guards an instance's shared caches
//! (segments, huge blocks, metadata arena); it falls back to spinning with
//! `sched_yield` when the futex syscall is refused (seccomp). [`ForkWatch`]
//! tells the first caller in a child process created by `fork` that the
//! state inherited from the parent must be repaired, without
//! `pthread_atfork`.

use crate::{os, sys};
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

/// Spins before sleeping: slow-path critical sections are short.
const SPIN_LIMIT: u32 = 100;

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
/// Locked, and at least one thread may be sleeping on the futex.
const CONTENDED: u32 = 2;

/// A mutual-exclusion lock on one futex word (the classic three-state
/// design from Drepper's "Futexes Are Tricky").
pub struct Lock {
    state: AtomicU32,
}

/// Holds a [`Lock`] until dropped.
pub struct LockGuard<'a> {
    lock: &'a Lock,
}

impl Lock {
    /// An unlocked lock.
    pub const fn new() -> Self {
        Lock {
            state: AtomicU32::new(UNLOCKED),
        }
    }

    /// Acquires the lock, sleeping on the futex when contended.
    #[inline]
    pub fn lock(&self) -> LockGuard<'_> {
        if self
            .state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        LockGuard { lock: self }
    }

    #[cold]
    fn lock_contended(&self) {
        for _ in 0..SPIN_LIMIT {
            core::hint::spin_loop();
            if self.state.load(Ordering::Relaxed) == UNLOCKED
                && self
                    .state
                    .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
        }
        // Announce a sleeper; whoever unlocks will wake one.
        while self.state.swap(CONTENDED, Ordering::Acquire) != UNLOCKED {
            if sys::futex_wait(&self.state, CONTENDED).is_err() {
                // EAGAIN/EINTR are normal; a refused futex degrades to yielding.
                sys::sched_yield();
            }
        }
    }

    /// Forcibly marks the lock free. Used only in a child after `fork`, where
    /// the thread that held the lock does not exist.
    ///
    /// # Safety
    /// No thread of this process may hold or be acquiring the lock.
    pub unsafe fn reset(&self) {
        self.state.store(UNLOCKED, Ordering::Release);
    }
}

impl Default for Lock {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for LockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.lock.state.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            // A failed wake leaves sleepers to their yield fallback or the
            // next unlock; nothing to recover.
            let _ = sys::futex_wake(&self.lock.state, 1);
        }
    }
}

/// Word values in the wipe-on-fork page.
const FORK_CHILD: u32 = 0; // what the kernel leaves in a child
const FORK_ARMED: u32 = 1;
const FORK_REPAIRING: u32 = 2;

/// Detects that the process is a `fork` child that has not yet repaired the
/// state it inherited.
///
/// Primary mechanism: a page advised `MADV_WIPEONFORK` holding
/// [`FORK_ARMED`]; in a child it reads zero. A vfork child shares the page
/// and is (correctly) not reported. If the kernel lacks the advice, the
/// process id is compared instead.
pub struct ForkWatch {
    word: AtomicPtr<AtomicU32>,
    pid: AtomicU32,
}

/// What [`ForkWatch::check`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum ForkState {
    /// Same process as when armed (or already repaired).
    Unchanged,
    /// A fork child: the caller must repair inherited state, then call
    /// [`ForkWatch::repaired`]. Exactly one caller per child gets this.
    MustRepair,
}

impl ForkWatch {
    /// A watch that is not armed yet.
    pub const fn new() -> Self {
        ForkWatch {
            word: AtomicPtr::new(core::ptr::null_mut()),
            pid: AtomicU32::new(0),
        }
    }

    /// Arms the watch for the current process. Called once, under the
    /// owner's lock, before anything else can need repairing.
    pub fn arm(&self) {
        self.pid.store(sys::getpid(), Ordering::Relaxed);
        if let Some(page) = os::wipe_on_fork_page() {
            let word = page.as_ptr().cast::<AtomicU32>();
            // SAFETY: the page is fresh, aligned and ours for the instance's life.
            unsafe { (*word).store(FORK_ARMED, Ordering::Relaxed) };
            self.word.store(word, Ordering::Release);
        }
    }

    /// Whether the process forked since the last repair. Cheap (one load)
    /// with `MADV_WIPEONFORK`. When another thread is repairing, waits for it.
    pub fn check(&self) -> ForkState {
        let word = self.word.load(Ordering::Acquire);
        if word.is_null() {
            return self.check_pid();
        }
        // SAFETY: the page lives as long as the instance's mappings.
        let word = unsafe { &*word };
        loop {
            match word.load(Ordering::Acquire) {
                FORK_ARMED => return ForkState::Unchanged,
                FORK_CHILD => {
                    if word
                        .compare_exchange(
                            FORK_CHILD,
                            FORK_REPAIRING,
                            Ordering::Acquire,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                    {
                        self.pid.store(sys::getpid(), Ordering::Relaxed);
                        return ForkState::MustRepair;
                    }
                }
                _ => sys::sched_yield(),
            }
        }
    }

    fn check_pid(&self) -> ForkState {
        let now = sys::getpid();
        let then = self.pid.load(Ordering::Relaxed);
        if then == 0 || then == now {
            return ForkState::Unchanged;
        }
        if self
            .pid
            .compare_exchange(then, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            ForkState::MustRepair
        } else {
            ForkState::Unchanged
        }
    }

    /// Ends a repair announced by [`ForkState::MustRepair`].
    pub fn repaired(&self) {
        let word = self.word.load(Ordering::Acquire);
        if !word.is_null() {
            // SAFETY: as in `check`.
            unsafe { (*word).store(FORK_ARMED, Ordering::Release) };
        }
    }

    /// The wipe-on-fork page, for teardown (null if none).
    pub fn page(&self) -> *mut u8 {
        self.word.load(Ordering::Relaxed).cast()
    }

    /// Forgets the page (after teardown unmapped it).
    pub fn disarm(&self) {
        self.word.store(core::ptr::null_mut(), Ordering::Relaxed);
        self.pid.store(0, Ordering::Relaxed);
    }
}

impl Default for ForkWatch {
    fn default() -> Self {
        Self::new()
    }
}
