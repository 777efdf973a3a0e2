//! Each thread's TLS block and thread control block, laid out as a libc
//! would: the TLS block initialised from the executable's `PT_TLS`
//! segment, the TCB right above it pointing to itself.

/// A thread control block: all emma needs of it is the first word, the
/// x86_64 TLS ABI's self-pointer, which it reads as `fs:[0]`.
#[repr(C, align(64))]
pub struct Tcb {
    this: *mut Tcb,
    _reserved: [usize; 7],
}

/// Room for the program's TLS block (its `PT_TLS` segment: emma's heap
/// slot, 8 bytes per instance) below each TCB.
const TLS_ROOM: usize = 256;

/// A thread's TLS block and TCB, laid out as the x86_64 TLS ABI wants
/// (variant II): the block ends where the TCB starts, and the linker
/// resolved every TLS access to a negative offset from the TCB.
#[repr(C, align(64))]
pub struct ThreadArea {
    tls: [u8; TLS_ROOM],
    tcb: Tcb,
}

impl ThreadArea {
    pub const fn new() -> ThreadArea {
        ThreadArea {
            tls: [0; TLS_ROOM],
            tcb: Tcb {
                this: core::ptr::null_mut(),
                _reserved: [0; 7],
            },
        }
    }
}

/// The main thread's TLS block and TCB.
pub static mut MAIN_AREA: ThreadArea = ThreadArea::new();

unsafe extern "C" {
    /// The ELF header, mapped with the program headers (the linker defines
    /// this symbol).
    static __ehdr_start: u8;
}

/// The program's TLS initialisation image and the size of its TLS block,
/// from the `PT_TLS` program header (no TLS: an empty image, size 0).
fn tls_image() -> (&'static [u8], usize) {
    const PT_TLS: u32 = 7;
    let ehdr = &raw const __ehdr_start;
    // SAFETY: the ELF header and the program headers it points to are
    // mapped for the whole run (the linker placed them in a loaded segment,
    // or it would not define `__ehdr_start`); in a static non-PIE
    // executable `p_vaddr` is the image's address.
    unsafe {
        let phoff = (ehdr.add(32) as *const u64).read_unaligned() as usize;
        let phentsize = (ehdr.add(54) as *const u16).read_unaligned() as usize;
        let phnum = (ehdr.add(56) as *const u16).read_unaligned() as usize;
        for i in 0..phnum {
            let ph = ehdr.add(phoff + i * phentsize);
            let field = |off: usize| (ph.add(off) as *const u64).read_unaligned() as usize;
            if (ph as *const u32).read_unaligned() == PT_TLS {
                let (vaddr, filesz, memsz, align) = (field(16), field(32), field(40), field(48));
                let size = memsz.next_multiple_of(align.max(1));
                assert!(size <= TLS_ROOM && align <= 64, "TLS block too large");
                return (
                    core::slice::from_raw_parts(vaddr as *const u8, filesz),
                    size,
                );
            }
        }
    }
    (&[], 0)
}

/// Copies the TLS image into the end of `(*area).tls` (the rest is zero,
/// as `.tbss` wants) and points the TCB at itself: what a libc does for
/// every thread. Returns the TCB.
///
/// # Safety
/// `area` is valid for writes, not yet any thread's, and nothing else
/// refers to it during the call.
pub unsafe fn init_area(area: *mut ThreadArea) -> *mut Tcb {
    let (image, size) = tls_image();
    let start = TLS_ROOM - size;
    // SAFETY: per contract; the image (`p_filesz <= p_memsz`) fits in
    // `size`, which `tls_image` checked against `TLS_ROOM`.
    unsafe {
        let tls = (&raw mut (*area).tls).cast::<u8>();
        core::ptr::copy_nonoverlapping(image.as_ptr(), tls.add(start), image.len());
        let tcb = &raw mut (*area).tcb;
        (*tcb).this = tcb;
        tcb
    }
}
