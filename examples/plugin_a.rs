//! Plugin A of the plugin pair: a `cdylib` whose global allocator is its
//! own emma instance. `plugin_a` and `plugin_b` share their source
//! (`examples/plugin/common.rs`) but are two separate builds, hence two
//! libraries with two allocators; `tests/embed_plugins.rs` loads both into
//! one C host (whose `malloc` is glibc's) and checks they never mix.
//!
//! Build: `cargo build --release --example plugin_a` →
//! `target/release/examples/libplugin_a.so`.

emma::emma_instance!(
    /// This plugin's heap: every allocation the plugin makes.
    pub PluginHeap
);

#[global_allocator]
static HEAP: PluginHeap = PluginHeap::new();

/// Reported by `plugin_name`.
const NAME: &std::ffi::CStr = c"plugin_a";

#[path = "plugin/common.rs"]
mod common;
