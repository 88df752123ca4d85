//! Failover states kept on disk, one JSON file per group under the agent's
//! data directory (`DATA/failover/<namespace>_<primary>.json`), so a
//! restarted agent resumes where it was: the same active member, the same
//! hysteresis clock, no extra switch. Written atomically (temporary file,
//! fsync, rename); a file that cannot be read is reported and ignored —
//! the group then starts from its primary, as a new one would.

use std::io::Write;
use std::path::PathBuf;

use veil_crds::wire::StrategyId;

use super::failover::FailoverState;

/// Why a state could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SavedError {
    #[error("cannot write the failover state {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The directory of failover state files.
#[derive(Clone, Debug)]
pub struct SavedStates {
    dir: PathBuf,
}

impl SavedStates {
    /// States under `dir` (created on the first save).
    pub fn new(dir: impl Into<PathBuf>) -> SavedStates {
        SavedStates { dir: dir.into() }
    }

    /// `group`'s saved state; `None` when there is none or it cannot be read.
    pub fn load(&self, group: &StrategyId) -> Option<FailoverState> {
        let path = self.path(group);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot read the failover state; starting from the primary");
                return None;
            }
        };
        match serde_json::from_slice(&text) {
            Ok(state) => Some(state),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "the failover state is not valid JSON; starting from the primary");
                None
            }
        }
    }

    /// Replaces `group`'s saved state with `state`.
    pub fn save(&self, group: &StrategyId, state: &FailoverState) -> Result<(), SavedError> {
        let path = self.path(group);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            let text = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
            let temporary = path.with_extension("json.tmp");
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(&text)?;
            file.sync_all()?;
            std::fs::rename(&temporary, &path)
        };
        write().map_err(|source| SavedError::Write {
            path: path.clone(),
            source,
        })
    }

    /// Removes the states of groups other than `keep`.
    pub fn retain(&self, keep: &[&StrategyId]) {
        let wanted: Vec<PathBuf> = keep.iter().map(|g| self.path(g)).collect();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") && !wanted.contains(&path) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    fn path(&self, group: &StrategyId) -> PathBuf {
        // Namespaces and names are DNS names: `_` is in neither.
        self.dir
            .join(format!("{}_{}.json", group.namespace, group.name))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use crate::strategy::FailoverConfig;

    fn group(name: &str) -> StrategyId {
        StrategyId {
            namespace: "edge".into(),
            name: name.into(),
        }
    }

    fn state() -> FailoverState {
        let group: veil_crds::wire::StrategyGroup = serde_json::from_value(serde_json::json!({
            "primary": {"namespace": "edge", "name": "youtube"},
            "members": [{"strategy": {"namespace": "edge", "name": "youtube"}}],
            "probes": {"targets": [{"url": "https://blocked.test/"}]},
            "specHash": "sha256:1",
        }))
        .unwrap();
        FailoverState::new(&FailoverConfig::from_group(&group).unwrap())
    }

    #[test]
    fn a_saved_state_loads_back_and_unknown_groups_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let saved = SavedStates::new(dir.path().join("failover"));
        assert_eq!(saved.load(&group("youtube")), None, "nothing saved yet");
        saved.save(&group("youtube"), &state()).unwrap();
        saved.save(&group("discord"), &state()).unwrap();
        assert_eq!(saved.load(&group("youtube")), Some(state()));

        saved.retain(&[&group("youtube")]);
        assert_eq!(saved.load(&group("discord")), None);
        assert!(saved.load(&group("youtube")).is_some());
    }

    #[test]
    fn a_damaged_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let saved = SavedStates::new(dir.path());
        std::fs::write(dir.path().join("edge_youtube.json"), b"{not json").unwrap();
        assert_eq!(saved.load(&group("youtube")), None);
    }
}
