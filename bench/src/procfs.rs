//! What /proc says of a process: CPU time and peak RSS.

use super::*;

/// CPU time (user + system) of a process: the sum of its threads' run
/// time in nanoseconds (`/proc/PID/task/*/schedstat`), the same kernel
/// counter `/proc/PID/stat` reports in 10 ms ticks (±2.5 ms per 1,000
/// round trips over a 4,000-round-trip run, too coarse here). Falls back to
/// `/proc/PID/stat` where schedstat is missing.
pub(crate) fn cpu_time(pid: u32) -> Duration {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .collect::<Vec<_>>();
    if !threads.is_empty() {
        return Duration::from_nanos(threads.iter().sum());
    }
    stat_cpu_time(pid)
}

/// CPU time (user + system) of a process, from `/proc/PID/stat`, in ticks.
pub(crate) fn stat_cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 1000 / 100) // USER_HZ is 100 on Linux
}

/// A KiB figure of `/proc/PID/status` (`VmHWM:`, `VmRSS:`), 0 if missing.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Peak resident memory of a process, KiB (`VmHWM`).
pub(crate) fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// Resident memory of a process now, KiB (`VmRSS`).
pub(crate) fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// Open file descriptors of a process.
pub(crate) fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// `cmd`, made to get SIGTERM when the thread that spawns it ends: a
/// benchmark killed (Ctrl-C, a timeout) takes its Prosody, mock and
/// gateways with it instead of leaving them on their ports. The children
/// are spawned from the main thread, which lives as long as the process.
pub(crate) fn tied(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
