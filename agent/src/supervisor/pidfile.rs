//! A child's identity on disk, so an agent restarted after `kill -9` can end
//! the process groups the killed agent left running.
//!
//! A record is `PID STARTTIME`: the kernel's start time of the process (in
//! clock ticks since boot, `/proc/PID/stat` field 22) tells a leftover
//! process from an unrelated one that reuses its pid. A group is killed only
//! when both match; where the start time cannot be read (not Linux), nothing
//! is killed.

use std::io;
use std::path::Path;

/// Writes the record for `pid` to `path` (replacing any previous one).
pub(crate) fn record(path: &Path, pid: u32) -> io::Result<()> {
    let start = start_time(pid).unwrap_or(0);
    std::fs::write(path, format!("{pid} {start}\n"))
}

/// Kills the process group recorded in `path` if its leader is still the
/// process that was recorded, and removes the record. Returns whether a
/// group was killed. A missing or unreadable record kills nothing.
pub fn kill_recorded(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    let _ = std::fs::remove_file(path);
    let mut fields = text.split_whitespace();
    let (Some(Ok(pid)), Some(Ok(start))) = (
        fields.next().map(str::parse::<u32>),
        fields.next().map(str::parse::<u64>),
    ) else {
        return false;
    };
    if start == 0 || start_time(pid) != Some(start) {
        return false;
    }
    tracing::warn!(
        pid,
        "ending the process group a previous agent run left behind"
    );
    super::group::kill_now(pid);
    true
}

/// Start time of `pid` in clock ticks since boot, if it is alive and readable.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Fields from 3 on; the start time is field 22.
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn a_recycled_pid_is_not_killed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.pid");
        // Our own pid with a start time that is not ours.
        std::fs::write(&path, format!("{} 1\n", std::process::id())).unwrap();
        assert!(!kill_recorded(&path));
        assert!(!path.exists());
    }

    #[test]
    fn a_recorded_leftover_group_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.pid");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        record(&path, child.id()).unwrap();
        assert!(kill_recorded(&path));
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert!(!kill_recorded(&path), "the record is used once");
    }
}
