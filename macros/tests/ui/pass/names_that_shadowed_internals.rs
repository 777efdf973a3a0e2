//! Instance names that once collided with items inside the expansion (the
//! errno sink type, the imported `c_void`) now compile.
#![allow(non_camel_case_types)]

pub fn set_errno(_code: i32) {}

emma::emma_instance!(pub Errno, c_prefix = errno_named_, c_errno = set_errno);
emma::emma_instance!(pub c_void, c_prefix = c_void_named_);

fn main() {
    use core::alloc::{GlobalAlloc, Layout};
    let l = Layout::from_size_align(32, 8).unwrap();
    unsafe {
        let p = Errno.alloc(l);
        Errno.dealloc(p, l);
        let q = c_void.alloc(l);
        c_void.dealloc(q, l);
    }
}
