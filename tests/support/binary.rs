//! The real binary as a child process.

use super::*;

/// The real binary (`sms-over-xmpp-under-test`, the same `main`) as a child
/// process, killed with SIGKILL when dropped.
pub struct Binary {
    child: std::process::Child,
}

impl Binary {
    /// Runs `exe run --config config`, its log (at `info`) appended to
    /// `log`. `exe` is `env!("CARGO_BIN_EXE_sms-over-xmpp-under-test")`,
    /// which only a test target can name.
    pub fn start(exe: &str, config: &std::path::Path, log: &std::path::Path) -> Binary {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = std::process::Command::new(exe)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the gateway binary");
        Binary { child }
    }

    /// Kills it with SIGKILL and reaps it.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// A `VmRSS`/`VmHWM`-style line of `/proc/PID/status`, in KiB.
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the gateway is running");
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix(field)?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status"))
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        self.kill_9();
    }
}
