//! Running one workload process and parsing what it prints.

use crate::report::Sample;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `bin <workload> <scale>` (with `preload` in `LD_PRELOAD`, if any), killing it after
/// `timeout`. Checks that the binary is built for `alloc` (it prints its allocator's name) and
/// that the preloaded library was really loaded, and returns its measurements.
pub fn run(
    bin: &Path,
    alloc: &str,
    preload: Option<&Path>,
    workload: &str,
    scale: f64,
    timeout: Duration,
) -> Result<Sample, String> {
    let mut cmd = Command::new(bin);
    if let Some(lib) = preload {
        cmd.env("LD_PRELOAD", lib);
    }
    let mut child = cmd
        .args([workload, &scale.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let started = Instant::now();
    // Polling is fine: the workload times itself, so the runner's latency does not count.
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("timed out after {}s", timeout.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .map_err(|e| e.to_string())?;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .map_err(|e| e.to_string())?;
    if !status.success() {
        let tail: String = err.lines().rev().take(2).collect::<Vec<_>>().join(" / ");
        return Err(format!("exited with {status}: {tail}"));
    }
    let sample = parse(&out).ok_or_else(|| format!("unparsable output {out:?}"))?;
    if preload.is_some() && field(&out, "preload") != Some("loaded") {
        return Err(format!("the preloaded library was not loaded: {out:?}"));
    }
    match field(&out, "alloc") {
        Some(a) if a == alloc => Ok(sample),
        other => Err(format!("binary reports alloc={other:?}, expected {alloc}")),
    }
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// Parses the workload's output line (see `src/bin/workload.rs`).
pub fn parse(line: &str) -> Option<Sample> {
    Some(Sample {
        seconds: field(line, "seconds")?.parse().ok()?,
        checksum: u64::from_str_radix(field(line, "checksum")?, 16).ok()?,
        peak_kib: field(line, "peak_rss_kib")?.parse().ok()?,
        end_kib: field(line, "end_rss_kib")?.parse().ok()?,
        busy: false,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_workload_line() {
        let s = super::parse(
            "alloc=mimalloc workload=larson seconds=1.250000 checksum=00000000000000ff peak_rss_kib=2048 end_rss_kib=1024\n",
        )
        .unwrap();
        assert_eq!(
            (s.seconds, s.checksum, s.peak_kib, s.end_kib),
            (1.25, 255, 2048, 1024)
        );
        assert_eq!(
            super::field("alloc=emma-tls x=1", "alloc"),
            Some("emma-tls")
        );
        assert_eq!(
            super::field("alloc=glibc end_rss_kib=1 preload=loaded", "preload"),
            Some("loaded")
        );
    }
}
