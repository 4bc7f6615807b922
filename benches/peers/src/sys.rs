//! What the benchmark reads from the operating system: memory of this process, space on disk,
//! the machine's description and its load.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A field of `/proc/self/status` in KiB (`VmHWM`, `VmRSS`), or 0 where it cannot be read.
fn status_kib(field: &str) -> u64 {
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Peak resident memory of this process since start or the last [`reset_peak`], in KiB.
pub fn peak_rss_kib() -> u64 {
    status_kib("VmHWM")
}

/// Current resident memory of this process in KiB.
pub fn rss_kib() -> u64 {
    status_kib("VmRSS")
}

/// Resets the peak resident memory (`VmHWM`) to the current figure (`clear_refs` value 5,
/// Linux 4.0 and later). Returns whether the kernel accepted it.
pub fn reset_peak() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Space used by the files under `path`: `(allocated bytes as du counts them, apparent bytes)`.
pub fn disk_usage(path: &Path) -> (u64, u64) {
    let mut allocated = 0;
    let mut apparent = 0;
    let Ok(meta) = fs::symlink_metadata(path) else {
        return (0, 0);
    };
    if meta.is_dir() {
        if let Ok(entries) = fs::read_dir(path) {
            for entry in entries.flatten() {
                let (a, b) = disk_usage(&entry.path());
                allocated += a;
                apparent += b;
            }
        }
    } else {
        allocated += meta.blocks() * 512;
        apparent += meta.len();
    }
    (allocated, apparent)
}

/// One line describing the machine: CPU model, cores, memory, kernel.
pub fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .map_or(0.0, |kib| kib as f64 / 1024.0 / 1024.0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{model}, {cores} cores, {mem_gib:.0} GiB RAM, Linux {}",
        kernel.trim()
    )
}

/// The file system holding `path`, as `device type (mount point)` from `/proc/mounts`.
pub fn filesystem_of(path: &Path) -> String {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, mnt, ty) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mnt)
                .then(|| (mnt.len(), format!("{dev} {ty} ({mnt})")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".to_string(), |(_, s)| s)
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}
