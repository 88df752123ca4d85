//! Process groups: stopping a child together with everything it started.
//!
//! Owns the signals sent to a child's group. It must never signal a group it
//! did not create (only ids of children spawned with `process_group(0)` reach
//! it, and never 0 or 1), and never wait without a bound.
//!
//! On Unix every child leads its own group, so SIGTERM/SIGKILL to the group
//! reach grandchildren too. A process that moves itself to another group or
//! session (a daemon) escapes; containing those needs cgroups, which the agent
//! does not manage. Elsewhere (Windows) only the child itself is killed; a Job
//! Object that also holds grandchildren is future work.

use std::io;
use std::process::ExitStatus;
use std::time::Duration;

use tokio::process::Child;

/// How long to wait for a group to disappear after SIGKILL. SIGKILL cannot be
/// ignored; only a process stuck in uninterruptible I/O outlives this.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// The process group led by one child. Dropping an armed group sends it
/// SIGKILL, so an abandoned run never leaves processes behind.
#[derive(Debug)]
pub(crate) struct ProcessGroup {
    pgid: u32,
    armed: bool,
}

impl ProcessGroup {
    /// The group whose id is the pid of a child spawned as a group leader.
    pub(crate) fn led_by(pid: u32) -> Self {
        Self {
            pgid: pid,
            armed: true,
        }
    }

    /// Marks the group as fully stopped: dropping it no longer signals.
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }

    /// Stops what is left of the group and reaps the leader.
    ///
    /// If the leader or any member is alive: SIGTERM to the group, up to
    /// `grace` for all of it to exit, then SIGKILL and up to [`KILL_WAIT`]
    /// more. Returns at once when the leader has exited and nothing else is
    /// left.
    ///
    /// # Errors
    ///
    /// Waiting for the leader failed, or it survived SIGKILL for
    /// [`KILL_WAIT`].
    #[cfg(unix)]
    pub(crate) async fn shutdown(
        &mut self,
        child: &mut Child,
        grace: Duration,
    ) -> io::Result<ExitStatus> {
        use nix::sys::signal::Signal;
        use tokio::time::{Instant, sleep, timeout, timeout_at};

        const POLL: Duration = Duration::from_millis(20);

        if child.try_wait()?.is_none() || unix::group_alive(self.pgid).await {
            unix::signal_group(self.pgid, Signal::SIGTERM);
            let deadline = Instant::now() + grace;
            // An error here resurfaces from `try_wait` below.
            let _ = timeout_at(deadline, child.wait()).await;
            while Instant::now() < deadline && unix::group_alive(self.pgid).await {
                sleep(POLL).await;
            }
            if child.try_wait()?.is_none() || unix::group_alive(self.pgid).await {
                unix::signal_group(self.pgid, Signal::SIGKILL);
                let deadline = Instant::now() + KILL_WAIT;
                while Instant::now() < deadline && unix::group_alive(self.pgid).await {
                    sleep(POLL).await;
                }
                if unix::group_alive(self.pgid).await {
                    tracing::warn!(pgid = self.pgid, "processes survived SIGKILL");
                }
            }
        }
        let status = timeout(KILL_WAIT, child.wait()).await.map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "process did not exit after SIGKILL",
            )
        })??;
        self.disarm();
        Ok(status)
    }

    /// Kills the child (Windows: no process groups here, no graceful signal)
    /// and reaps it.
    ///
    /// # Errors
    ///
    /// Killing or waiting for the child failed.
    #[cfg(not(unix))]
    pub(crate) async fn shutdown(
        &mut self,
        child: &mut Child,
        _grace: Duration,
    ) -> io::Result<ExitStatus> {
        if child.try_wait()?.is_none() {
            child.start_kill()?;
        }
        let status = tokio::time::timeout(KILL_WAIT, child.wait())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "process did not exit"))??;
        self.disarm();
        Ok(status)
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if self.armed {
            kill_now(self.pgid);
        }
    }
}

/// Sends SIGKILL to the group `pgid` without waiting (best effort, for drop
/// paths). Without process groups (Windows) this does nothing; the child's
/// own handle kills it on drop.
pub(crate) fn kill_now(pgid: u32) {
    #[cfg(unix)]
    unix::signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
    #[cfg(not(unix))]
    let _ = pgid;
}

#[cfg(unix)]
mod unix {
    use nix::errno::Errno;
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;

    /// Signals the group; false when it no longer exists or cannot be
    /// signalled (logged).
    pub(super) fn signal_group(pgid: u32, signal: Signal) -> bool {
        let Some(pgid) = valid(pgid) else {
            return false;
        };
        match killpg(pgid, signal) {
            Ok(()) => true,
            Err(Errno::ESRCH) => false,
            Err(error) => {
                tracing::warn!(%pgid, %signal, %error, "could not signal process group");
                false
            }
        }
    }

    /// Whether any process of the group is still running. Zombies do not
    /// count: they hold no resources but a table slot, and where the agent is
    /// not pid 1's child (a container without an init) orphans stay zombies
    /// for ever.
    pub(super) async fn group_alive(pgid: u32) -> bool {
        let Some(pgid) = valid(pgid) else {
            return false;
        };
        #[cfg(target_os = "linux")]
        {
            let scan = tokio::task::spawn_blocking(move || proc_scan(pgid.as_raw())).await;
            if let Ok(Some(alive)) = scan {
                return alive;
            }
        }
        // Portable fallback; counts zombies as alive.
        !matches!(killpg(pgid, None), Err(Errno::ESRCH))
    }

    fn valid(pgid: u32) -> Option<Pid> {
        // 0 would mean our own group and 1 init's; neither is ever a child's.
        i32::try_from(pgid)
            .ok()
            .filter(|&id| id > 1)
            .map(Pid::from_raw)
    }

    /// Scans `/proc` for a non-zombie process in group `pgid`; `None` when
    /// `/proc` cannot be read.
    #[cfg(target_os = "linux")]
    fn proc_scan(pgid: i32) -> Option<bool> {
        let entries = std::fs::read_dir("/proc").ok()?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            // The process may exit while we look; a missing file is not alive.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            if stat_in_live_group(&stat, pgid) {
                return Some(true);
            }
        }
        Some(false)
    }

    /// Parses `/proc/PID/stat`: `pid (comm) state ppid pgrp ...`. `comm` may
    /// contain spaces and parentheses, so fields are counted after the last
    /// `)`.
    #[cfg(target_os = "linux")]
    pub(super) fn stat_in_live_group(stat: &str, pgid: i32) -> bool {
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            return false;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|f| f.parse::<i32>().ok());
        pgrp == Some(pgid) && !matches!(state, Some("Z" | "X" | "x"))
    }

    #[cfg(all(test, target_os = "linux"))]
    mod tests {
        use super::stat_in_live_group;

        #[test]
        fn stat_parsing_skips_zombies_and_odd_command_names() {
            assert!(stat_in_live_group("42 (sleep) S 1 40 40 0", 40));
            assert!(stat_in_live_group("42 (a) b (c)) R 1 40 40 0", 40));
            assert!(!stat_in_live_group("42 (sleep) Z 1 40 40 0", 40));
            assert!(!stat_in_live_group("42 (sleep) S 1 41 41 0", 40));
            assert!(!stat_in_live_group("garbage", 40));
        }
    }
}
