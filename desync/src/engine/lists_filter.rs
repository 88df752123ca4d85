//! [`ProfileFilter`] over the profiles' real host and address lists.
//!
//! Each query may reload the lists whose files changed (at most once per
//! [`RELOAD_INTERVAL`] per profile), so an agent that atomically replaces a
//! hostlist file changes what the running engine matches without a restart.
//! A file that cannot be read keeps its previous content (as in nfqws).

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use super::profile::ProfileFilter;
#[cfg(doc)]
use crate::lists::RELOAD_INTERVAL;
use crate::lists::{ListError, ProfileLists};
use crate::spec::Config;

/// Every profile's lists, in profile order.
#[derive(Debug)]
pub struct ListsFilter {
    profiles: Vec<Mutex<ProfileLists>>,
}

impl ListsFilter {
    /// Loads the lists of every profile of `config` once.
    pub fn load(config: &Config) -> Result<ListsFilter, ListError> {
        let profiles = config
            .profiles
            .iter()
            .map(|profile| ProfileLists::load(profile).map(Mutex::new))
            .collect::<Result<_, _>>()?;
        Ok(ListsFilter { profiles })
    }

    fn with<T>(&self, profile: usize, default: T, f: impl FnOnce(&ProfileLists) -> T) -> T {
        let Some(lists) = self.profiles.get(profile) else {
            return default;
        };
        let mut lists = lists
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (_, errors) = lists.refresh(Instant::now());
        for error in errors {
            tracing::warn!(%error, "list kept at its previous content");
        }
        f(&lists)
    }
}

impl ProfileFilter for ListsFilter {
    fn host_allowed(&self, profile: usize, host: &str) -> bool {
        self.with(profile, false, |lists| lists.host_allowed(host))
    }

    fn ip_allowed(&self, profile: usize, ip: IpAddr) -> bool {
        self.with(profile, false, |lists| lists.ip_allowed(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{ParseMode, parse};

    fn argv(list: &std::path::Path) -> Vec<String> {
        vec![
            "--qnum=200".into(),
            "--filter-tcp=443".into(),
            format!("--hostlist={}", list.display()),
            "--dpi-desync=multisplit".into(),
        ]
    }

    #[test]
    fn a_replaced_hostlist_changes_what_matches_without_reloading_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("list.txt");
        std::fs::write(&list, "blocked.test\n").unwrap();
        let config = parse(&argv(&list), ParseMode::Builtin).unwrap();
        let filter = ListsFilter::load(&config).unwrap();
        assert!(filter.host_allowed(0, "blocked.test"));
        assert!(filter.host_allowed(0, "www.blocked.test"));
        assert!(!filter.host_allowed(0, "other.test"));

        let temp = dir.path().join("list.tmp");
        std::fs::write(&temp, "other.test\n").unwrap();
        std::fs::rename(&temp, &list).unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while !filter.host_allowed(0, "other.test") {
            assert!(
                Instant::now() < deadline,
                "the new list was never picked up"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(!filter.host_allowed(0, "blocked.test"));
    }

    #[test]
    fn an_unknown_profile_matches_nothing() {
        let config = Config::default();
        let filter = ListsFilter::load(&config).unwrap();
        assert!(!filter.host_allowed(3, "blocked.test"));
        assert!(!filter.ip_allowed(3, "192.0.2.1".parse().unwrap()));
    }
}
