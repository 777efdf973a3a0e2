//! `emma_instance!`: mints an isolated allocator type.
//!
//! Thin macro, fat library: the expansion holds only what must be distinct
//! per instance — the zero-sized type, its hidden `static` state, its
//! thread-local slot (with `tls`), the [`Instance`](crate::Instance) impl
//! naming them, and one-line `GlobalAlloc` forwarders into
//! [`crate::api`]. The statics sit inside a `const _: () = { … };` block,
//! so any number of instances can share a module or a name across modules
//! without their symbols colliding.

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
/// when they have the same name in different modules or crates.
///
/// Attributes and doc comments before the visibility are passed on to the
/// struct. The calling crate needs no feature gates and no `unsafe`.
#[macro_export]
macro_rules! emma_instance {
    ($(#[$attr:meta])* $vis:vis $name:ident $(,)?) => {
        $(#[$attr])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        $vis struct $name;

        impl $name {
            /// The allocator value (a unit struct).
            #[allow(dead_code)]
            pub const fn new() -> Self {
                $name
            }
        }

        const _: () = {
            static STATE: $crate::__private::InstanceState = $crate::__private::InstanceState::new();
            $crate::__emma_instance_slot!($name, STATE);

            unsafe impl ::core::alloc::GlobalAlloc for $name {
                #[inline]
                unsafe fn alloc(&self, l: ::core::alloc::Layout) -> *mut u8 {
                    $crate::__private::global_alloc::<$name>(l)
                }
                #[inline]
                unsafe fn dealloc(&self, p: *mut u8, l: ::core::alloc::Layout) {
                    unsafe { $crate::__private::global_dealloc::<$name>(p, l) }
                }
                #[inline]
                unsafe fn alloc_zeroed(&self, l: ::core::alloc::Layout) -> *mut u8 {
                    $crate::__private::global_alloc_zeroed::<$name>(l)
                }
                #[inline]
                unsafe fn realloc(&self, p: *mut u8, l: ::core::alloc::Layout, n: usize) -> *mut u8 {
                    unsafe { $crate::__private::global_realloc::<$name>(p, l, n) }
                }
            }
        };
    };
}

/// The per-instance heap slot and `Instance` impl, with `tls`: a
/// `#[thread_local]` static read with initial-exec TLS.
#[cfg(feature = "tls")]
#[doc(hidden)]
#[macro_export]
#[allow_internal_unstable(thread_local)]
macro_rules! __emma_instance_slot {
    ($name:ident, $state:ident) => {
        #[thread_local]
        static SLOT: $crate::__private::TlsSlot = $crate::__private::TlsSlot::new();

        unsafe impl $crate::Instance for $name {
            const USES_TLS: bool = true;
            #[inline(always)]
            fn state() -> &'static $crate::__private::InstanceState {
                &$state
            }
            #[inline(always)]
            fn heap() -> *mut $crate::__private::Heap {
                $crate::__emma_tls_load!(SLOT)
            }
            #[inline(always)]
            fn set_heap(h: *mut $crate::__private::Heap) {
                $crate::__emma_tls_store!(SLOT, h)
            }
        }
    };
}

/// The per-instance `Instance` impl without `tls`: heaps are found through
/// the state's thread-pointer table.
#[cfg(not(feature = "tls"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __emma_instance_slot {
    ($name:ident, $state:ident) => {
        unsafe impl $crate::Instance for $name {
            const USES_TLS: bool = false;
            #[inline(always)]
            fn state() -> &'static $crate::__private::InstanceState {
                &$state
            }
            #[inline(always)]
            fn heap() -> *mut $crate::__private::Heap {
                $state.tp_heap()
            }
            #[inline(always)]
            fn set_heap(h: *mut $crate::__private::Heap) {
                $state.set_tp_heap(h)
            }
        }
    };
}
