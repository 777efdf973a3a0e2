//! Links the library without the C runtime's start files, as
//! examples/plugin_nostd/build.rs explains: they would only add weak
//! imports (`__cxa_finalize`, `__gmon_start__`, `_ITM_*`) that nothing here
//! uses. The loader runs `.init_array`/`.fini_array` all the same.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-nostartfiles");
}
