//! `emma_instance!`: mints an isolated allocator type.
//!
//! Thin macro, fat library: the expansion holds only what must be distinct
//! per instance — the zero-sized type, its hidden `static` state, its
//! per-thread heap slot, the [`Instance`](crate::Instance) impl naming
//! them, and one-line `GlobalAlloc` forwarders into [`crate::api`]. The
//! state sits in a hidden module named after the instance
//! (`__emma_instance_<Name>`) and the impls inside a `const _: () = { … };`
//! block, so any number of instances can share a module or a name across
//! modules without their symbols colliding.
//!
//! # Which mode does an instance get?
//! - **`tls` (default feature, stable Rust)**: each instance has an 8-byte
//!   initial-exec thread-local slot holding the thread's heap, defined with
//!   `global_asm!` in the hidden module (`global_asm!` must stand in item
//!   position: that is why the state lives in a module rather than in the
//!   `const` block) and read with two instructions, also in a `dlopen`ed
//!   library (see `thread.rs`). It needs a TLS block: every program with a
//!   libc or `std` has one, and a `dlopen`ed library takes 8 bytes per
//!   instance from the loader's static TLS surplus (flag `STATIC_TLS`;
//!   `dlopen` fails if the surplus is used up).
//! - **thread-pointer mode (`default-features = false`)**: no slot; the
//!   heap is looked up by the thread pointer `fs:[0]` in a small
//!   per-instance table, a few instructions more per call. For programs
//!   that set up no TLS block (a freestanding program with its own
//!   `_start`, which only points `fs` at a self-pointer).
//!
//! Neither mode asks the calling crate for a feature gate or `unsafe`.

/// Defines an isolated emma allocator type.
///
/// ```
/// emma::emma_instance!(pub PluginHeap);
///
/// #[global_allocator]
/// static GLOBAL: PluginHeap = PluginHeap::new();
///
/// let v: Vec<u32> = (0..100).collect();
/// assert_eq!(v.iter().sum::<u32>(), 4950);
/// ```
///
/// The type is a unit struct (`PluginHeap` and `PluginHeap::new()` are the
/// same value) implementing [`GlobalAlloc`](core::alloc::GlobalAlloc) and
/// [`Instance`](crate::Instance). Every invocation gets its own statics,
/// segments and thread-local slot: two instances never share state, even
/// when they have the same name in different modules or crates. An
/// invocation also defines a hidden module `__emma_instance_<Name>` next to
/// the type (it holds the instance's state), so that name is taken.
///
/// Attributes and doc comments before the visibility are passed on to the
/// struct (to put the whole instance under `#[cfg(...)]`, put the attribute
/// on the macro call instead). The type already derives `Clone`, `Copy`,
/// `Debug`, `Default`, `PartialEq`, `Eq` and `Hash`. The calling crate
/// needs no feature gates and no `unsafe`.
///
/// # C functions
/// `emma_instance!(pub PluginHeap, c_prefix = plugin_)` also exports the C
/// allocation family for this instance as `plugin_malloc`, `plugin_calloc`,
/// `plugin_realloc`, `plugin_free`, `plugin_aligned_alloc`,
/// `plugin_posix_memalign`, `plugin_memalign`, `plugin_valloc`,
/// `plugin_pvalloc`, `plugin_reallocarray` and `plugin_malloc_usable_size`
/// (semantics in [`emma::c`](crate::c)). `c_malloc` instead of `c_prefix`
/// exports the plain names, replacing the process's `malloc` (use it once,
/// in a library meant for `LD_PRELOAD` or a program without libc). Add
/// `c_errno = path::to::fn` to have failures reported through a
/// `fn(i32)` of yours (emma itself never touches the C library's `errno`).
///
/// The functions are exported symbols, not Rust items (they live in an
/// anonymous scope, so `c_malloc` cannot clash with anything): C code, or
/// Rust through an `extern` block, calls them.
///
/// ```
/// emma::emma_instance!(pub PluginHeap, c_prefix = doc_example_);
///
/// unsafe extern "C" {
///     fn doc_example_malloc(size: usize) -> *mut u8;
///     fn doc_example_free(p: *mut u8);
/// }
///
/// unsafe {
///     let p = doc_example_malloc(10);
///     assert!(!p.is_null() && p as usize % 16 == 0);
///     doc_example_free(p);
/// }
/// ```
#[macro_export]
macro_rules! emma_instance {
    ($(#[$attr:meta])* $vis:vis $name:ident $(,)?) => {
        $crate::emma_instance!(@instance [$(#[$attr])*] $vis $name);
    };
    ($(#[$attr:meta])* $vis:vis $name:ident, c_prefix = $prefix:ident $(,)?) => {
        $crate::emma_instance!(@instance [$(#[$attr])*] $vis $name);
        $crate::emma_instance!(@prefixed $name, $prefix, $crate::c::NoErrno);
    };
    ($(#[$attr:meta])* $vis:vis $name:ident, c_prefix = $prefix:ident, c_errno = $errno:path $(,)?) => {
        $crate::emma_instance!(@instance [$(#[$attr])*] $vis $name);
        $crate::emma_instance!(@errno $name, $errno, @prefixed $prefix);
    };
    ($(#[$attr:meta])* $vis:vis $name:ident, c_malloc $(,)?) => {
        $crate::emma_instance!(@instance [$(#[$attr])*] $vis $name);
        $crate::emma_instance!(@unprefixed $name, $crate::c::NoErrno);
    };
    ($(#[$attr:meta])* $vis:vis $name:ident, c_malloc, c_errno = $errno:path $(,)?) => {
        $crate::emma_instance!(@instance [$(#[$attr])*] $vis $name);
        $crate::emma_instance!(@errno $name, $errno, @unprefixed);
    };

    // ---- internal rules -------------------------------------------------
    (@instance [$($attr:tt)*] $vis:vis $name:ident) => {
        $($attr)*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        $vis struct $name;

        impl $name {
            /// The allocator value (a unit struct).
            #[allow(dead_code)]
            pub const fn new() -> Self {
                $name
            }
        }

        $crate::__private::paste! {
            $crate::emma_instance!(@statics $name, [<__emma_instance_ $name>]);
        }
    };
    (@statics $name:ident, $statics:ident) => {
        // The instance's statics, in item position (`global_asm!`, which
        // defines the heap slot, is refused inside blocks and function
        // bodies, a module is not).
        #[doc(hidden)]
        #[allow(non_snake_case)]
        mod $statics {
            pub(super) static STATE: $crate::__private::InstanceState =
                $crate::__private::InstanceState::new();
            $crate::__emma_tls_define!(STATE);
        }
        const _: () = {
            $crate::__emma_instance_slot!($name, $statics::STATE);
            $crate::__emma_allocator_api!($name);
            $crate::__emma_allocator_api2!($name);

            // SAFETY: forwards to emma::api, which upholds the GlobalAlloc contract.
            unsafe impl ::core::alloc::GlobalAlloc for $name {
                #[inline]
                unsafe fn alloc(&self, l: ::core::alloc::Layout) -> *mut u8 {
                    $crate::__private::global_alloc::<$name>(l)
                }
                #[inline]
                unsafe fn dealloc(&self, p: *mut u8, l: ::core::alloc::Layout) {
                    // SAFETY: `GlobalAlloc::dealloc`'s contract, which `global_dealloc` takes.
                    unsafe { $crate::__private::global_dealloc::<$name>(p, l) }
                }
                #[inline]
                unsafe fn alloc_zeroed(&self, l: ::core::alloc::Layout) -> *mut u8 {
                    $crate::__private::global_alloc_zeroed::<$name>(l)
                }
                #[inline]
                unsafe fn realloc(&self, p: *mut u8, l: ::core::alloc::Layout, n: usize) -> *mut u8 {
                    // SAFETY: `GlobalAlloc::realloc`'s contract, which `global_realloc` takes.
                    unsafe { $crate::__private::global_realloc::<$name>(p, l, n) }
                }
            }
        };
    };
    (@errno $name:ident, $errno:path, @$kind:ident $($prefix:ident)?) => {
        const _: () = {
            // A name no caller's instance will have (the caller's type is
            // named inside this block too).
            struct __EmmaErrnoSink;
            impl $crate::c::ErrnoSink for __EmmaErrnoSink {
                #[inline]
                fn set(code: i32) {
                    $errno(code)
                }
            }
            $crate::emma_instance!(@$kind $name, $($prefix,)? __EmmaErrnoSink);
        };
    };
    (@prefixed $name:ident, $prefix:ident, $errno:ty) => {
        $crate::__private::paste! {
            $crate::emma_instance!(@c_fns $name, $errno,
                [<$prefix malloc>] [<$prefix calloc>] [<$prefix realloc>] [<$prefix free>]
                [<$prefix aligned_alloc>] [<$prefix posix_memalign>] [<$prefix memalign>]
                [<$prefix valloc>] [<$prefix pvalloc>] [<$prefix reallocarray>]
                [<$prefix malloc_usable_size>]);
        }
    };
    (@unprefixed $name:ident, $errno:ty) => {
        $crate::emma_instance!(@c_fns $name, $errno,
            malloc calloc realloc free aligned_alloc posix_memalign memalign
            valloc pvalloc reallocarray malloc_usable_size);
    };
    (@c_fns $name:ident, $errno:ty, $malloc:ident $calloc:ident $realloc:ident $free:ident
        $aligned_alloc:ident $posix_memalign:ident $memalign:ident $valloc:ident
        $pvalloc:ident $reallocarray:ident $usable:ident) => {
        const _: () = {
            #[unsafe(no_mangle)]
            pub extern "C" fn $malloc(size: usize) -> *mut ::core::ffi::c_void {
                $crate::c::malloc::<$name, $errno>(size).cast()
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn $calloc(count: usize, size: usize) -> *mut ::core::ffi::c_void {
                $crate::c::calloc::<$name, $errno>(count, size).cast()
            }
            /// C `realloc` over this instance.
            ///
            /// # Safety
            /// `p` is null or a live block of this instance's C functions
            /// (or of the instance itself), not used after a non-null
            /// return or after `size == 0`.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn $realloc(p: *mut ::core::ffi::c_void, size: usize) -> *mut ::core::ffi::c_void {
                // SAFETY: the contract above is `c::realloc`'s for this instance.
                unsafe { $crate::c::realloc::<$name, $errno>(p.cast(), size).cast() }
            }
            /// C `free` over this instance.
            ///
            /// # Safety
            /// `p` is null or a live block of this instance, not used
            /// afterwards.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn $free(p: *mut ::core::ffi::c_void) {
                // SAFETY: the contract above is `c::free`'s for this instance.
                unsafe { $crate::c::free::<$name>(p.cast()) }
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn $aligned_alloc(align: usize, size: usize) -> *mut ::core::ffi::c_void {
                $crate::c::aligned_alloc::<$name, $errno>(align, size).cast()
            }
            /// C `posix_memalign` over this instance.
            ///
            /// # Safety
            /// `out` is valid for a pointer-sized write.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn $posix_memalign(out: *mut *mut ::core::ffi::c_void, align: usize, size: usize) -> i32 {
                // SAFETY: the contract above is `c::posix_memalign`'s.
                unsafe { $crate::c::posix_memalign::<$name>(out.cast(), align, size) }
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn $memalign(align: usize, size: usize) -> *mut ::core::ffi::c_void {
                $crate::c::memalign::<$name, $errno>(align, size).cast()
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn $valloc(size: usize) -> *mut ::core::ffi::c_void {
                $crate::c::valloc::<$name, $errno>(size).cast()
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn $pvalloc(size: usize) -> *mut ::core::ffi::c_void {
                $crate::c::pvalloc::<$name, $errno>(size).cast()
            }
            /// `reallocarray` over this instance.
            ///
            /// # Safety
            /// As for `realloc`: `p` is null or a live block of this
            /// instance, not used after a non-null return.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn $reallocarray(p: *mut ::core::ffi::c_void, count: usize, size: usize) -> *mut ::core::ffi::c_void {
                // SAFETY: the contract above is `c::reallocarray`'s for this instance.
                unsafe { $crate::c::reallocarray::<$name, $errno>(p.cast(), count, size).cast() }
            }
            /// `malloc_usable_size` over this instance.
            ///
            /// # Safety
            /// `p` is null or a live block of this instance.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn $usable(p: *mut ::core::ffi::c_void) -> usize {
                // SAFETY: the contract above is `c::malloc_usable_size`'s for this instance.
                unsafe { $crate::c::malloc_usable_size::<$name>(p.cast()) }
            }
        };
    };

    ($(#[$attr:meta])* $vis:vis $name:ident, $($rest:tt)*) => {
        ::core::compile_error!(::core::concat!(
            "emma_instance!: unknown option(s) `", ::core::stringify!($($rest)*),
            "` after `", ::core::stringify!($name), "`; expected `c_prefix = prefix_` or `c_malloc`, ",
            "optionally followed by `, c_errno = path::to::set_errno`"
        ));
    };
    ($($other:tt)*) => {
        ::core::compile_error!(
            "emma_instance! expects `[attributes] [visibility] Name`, optionally followed by \
             `, c_prefix = prefix_` (exports prefix_malloc, prefix_free, ...) or `, c_malloc` \
             (exports malloc, free, ... unprefixed), and then optionally `, c_errno = path::to::set_errno`"
        );
    };
}

/// The per-instance `Instance` impl over the per-thread heap slot, with
/// `tls`: the slot `__emma_tls_define!` put next to `$state`.
#[cfg(all(feature = "tls", not(miri)))]
#[doc(hidden)]
#[macro_export]
macro_rules! __emma_instance_slot {
    ($name:ident, $state:path) => {
        $crate::__emma_instance_impl!(
            $name,
            $state,
            true,
            heap() = $crate::__emma_tls_load!($state),
            set_heap(h) = $crate::__emma_tls_store!($state, h)
        );
    };
}

/// With `tls` under Miri (no assembly): the slot is emulated by the test
/// backend, keyed by the instance's state.
#[cfg(all(feature = "tls", miri))]
#[doc(hidden)]
#[macro_export]
macro_rules! __emma_instance_slot {
    ($name:ident, $state:path) => {
        $crate::__emma_instance_impl!(
            $name,
            $state,
            true,
            heap() = $crate::__private::miri_slot_load(&$state),
            set_heap(h) = $crate::__private::miri_slot_store(&$state, h)
        );
    };
}

/// Without `tls` (the thread-pointer mode): heaps are found through the
/// state's thread-pointer table; there is no slot.
#[cfg(not(feature = "tls"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __emma_instance_slot {
    ($name:ident, $state:path) => {
        $crate::__emma_instance_impl!(
            $name,
            $state,
            false,
            heap() = $state.tp_heap(),
            set_heap(h) = $state.set_tp_heap(h)
        );
    };
}

/// The `Instance` impl: the state, and the heap slot's accessors.
#[doc(hidden)]
#[macro_export]
macro_rules! __emma_instance_impl {
    ($name:ident, $state:path, $uses_tls:literal,
        heap() = $heap:expr, set_heap($h:ident) = $set:expr) => {
        // SAFETY: `$state` and the slot are this invocation's own.
        unsafe impl $crate::Instance for $name {
            const USES_TLS: bool = $uses_tls;
            #[inline(always)]
            fn state() -> &'static $crate::__private::InstanceState {
                &$state
            }
            #[inline(always)]
            fn heap() -> *mut $crate::__private::Heap {
                $heap
            }
            #[inline(always)]
            fn set_heap($h: *mut $crate::__private::Heap) {
                $set
            }
        }
    };
}
