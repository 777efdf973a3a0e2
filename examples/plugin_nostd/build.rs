//! Links the plugin without the C runtime's start files (`crti.o`,
//! `crtbeginS.o`, …): they only bring weak references to `__cxa_finalize`,
//! `__gmon_start__` and the `_ITM_*` transactional-memory hooks, which the
//! plugin does not use. `.init_array`/`.fini_array` are run by the dynamic
//! loader itself and keep working.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-nostartfiles");
}
