//! Memory figures of the current process from `/proc/self/status`.

/// `VmHWM` (peak resident set) and `VmRSS` (current resident set), in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rss {
    /// Peak resident set size since the process started.
    pub peak_kib: u64,
    /// Resident set size now.
    pub now_kib: u64,
}

/// Reads `VmHWM` and `VmRSS`; zeros if /proc is unavailable (the report then shows 0).
pub fn rss() -> Rss {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Rss {
        peak_kib: field("VmHWM:"),
        now_kib: field("VmRSS:"),
    }
}

/// Whether the library named in `LD_PRELOAD` is mapped into this process: `none` (no preload),
/// `loaded`, or `missing` (the loader ignored it, e.g. a wrong path), so that a C-mode run can
/// never silently measure glibc instead.
pub fn preload() -> &'static str {
    let Some(lib) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) else {
        return "none";
    };
    // /proc/self/maps shows the file the symlink chain ends at.
    let real = std::fs::canonicalize(&lib).unwrap_or_else(|_| lib.into());
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    if maps.lines().any(|l| l.ends_with(&*real.to_string_lossy())) {
        "loaded"
    } else {
        "missing"
    }
}
