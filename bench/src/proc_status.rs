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
