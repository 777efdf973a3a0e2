//! The last word: one line to stderr and an abort, for misuse and heap
//! corruption found by the checks. At the bottom of the layers so every
//! layer may end the process this way; it writes with a raw `write(2)`
//! (no allocation, no formatting machinery), as a `GlobalAlloc` must not
//! unwind.

use crate::sys;

/// Reports misuse: writes `emma: <what> (pointer 0x…)` to stderr and aborts.
#[cold]
pub fn fatal(what: &str, p: *const u8) -> ! {
    let mut hex = [0u8; 18];
    hex[0] = b'0';
    hex[1] = b'x';
    let v = p as usize;
    for (i, d) in hex[2..].iter_mut().enumerate() {
        let nib = (v >> (60 - 4 * i)) & 0xf;
        *d = b"0123456789abcdef"[nib];
    }
    for part in [
        b"emma: ".as_slice(),
        what.as_bytes(),
        b" (pointer ",
        &hex,
        b")\n",
    ] {
        let _ = sys::write_all(2, part);
    }
    sys::abort()
}
