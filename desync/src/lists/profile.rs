//! All lists of one profile, reloaded when their files change.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::{HostMatcher, IpMatcher, ListError};
use crate::spec::Profile;

/// How often [`ProfileLists::refresh`] looks at the files at most.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// What identifies a file version: an atomic rename changes the inode, an
/// in-place edit the modification time or size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Signature {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl Signature {
    fn of(path: &Path) -> std::io::Result<Signature> {
        let meta = std::fs::metadata(path)?;
        Ok(Signature {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode: inode(&meta),
        })
    }
}

#[cfg(unix)]
fn inode(meta: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

#[cfg(not(unix))]
fn inode(_meta: &std::fs::Metadata) -> u64 {
    0
}

/// A matcher that can be read from a file.
trait Loadable: Sized {
    fn load(path: &Path) -> Result<Self, ListError>;
}

impl Loadable for HostMatcher {
    fn load(path: &Path) -> Result<Self, ListError> {
        HostMatcher::load(path)
    }
}

impl Loadable for IpMatcher {
    fn load(path: &Path) -> Result<Self, ListError> {
        IpMatcher::load(path)
    }
}

/// One list file and the content last loaded from it.
#[derive(Debug)]
struct ListFile<M> {
    path: PathBuf,
    signature: Signature,
    matcher: M,
}

impl<M: Loadable> ListFile<M> {
    fn open(path: &Path) -> Result<ListFile<M>, ListError> {
        let io = |source| ListError::Io {
            path: path.to_owned(),
            source,
        };
        let signature = Signature::of(path).map_err(io)?;
        Ok(ListFile {
            path: path.to_owned(),
            signature,
            matcher: M::load(path)?,
        })
    }

    /// Reloads when the file changed. On failure the previous content stays
    /// (as in nfqws) and the error is returned for logging.
    fn refresh(&mut self) -> Result<bool, ListError> {
        let signature = Signature::of(&self.path).map_err(|source| ListError::Io {
            path: self.path.clone(),
            source,
        })?;
        if signature == self.signature {
            return Ok(false);
        }
        self.matcher = M::load(&self.path)?;
        self.signature = signature;
        Ok(true)
    }
}

/// Include and exclude lists of one kind: files plus fixed entries.
#[derive(Debug, Default)]
struct ListSet<M> {
    files: Vec<ListFile<M>>,
    fixed: Option<M>,
}

impl<M: Loadable> ListSet<M> {
    fn open(paths: &[PathBuf], fixed: Option<M>) -> Result<ListSet<M>, ListError> {
        let files = paths
            .iter()
            .map(|p| ListFile::open(p))
            .collect::<Result<_, _>>()?;
        Ok(ListSet { files, fixed })
    }

    fn matchers(&self) -> impl Iterator<Item = &M> {
        self.files
            .iter()
            .map(|f| &f.matcher)
            .chain(self.fixed.iter())
    }

    fn refresh(&mut self, errors: &mut Vec<ListError>) -> usize {
        let mut reloaded = 0;
        for f in &mut self.files {
            match f.refresh() {
                Ok(changed) => reloaded += usize::from(changed),
                Err(e) => errors.push(e),
            }
        }
        reloaded
    }
}

/// Every list of one profile.
///
/// Answers follow nfqws: an exclude match refuses; then, if the include
/// lists hold no entry at all (no include list, or only empty ones), every
/// host/address passes — the agent adds a guard entry so an include list
/// never ends up empty; otherwise the host/address must be listed.
#[derive(Debug)]
pub struct ProfileLists {
    host_include: ListSet<HostMatcher>,
    host_exclude: ListSet<HostMatcher>,
    ip_include: ListSet<IpMatcher>,
    ip_exclude: ListSet<IpMatcher>,
    last_check: Option<Instant>,
}

impl ProfileLists {
    /// Loads every list file of `profile` once.
    pub fn load(profile: &Profile) -> Result<ProfileLists, ListError> {
        let hosts = &profile.hosts;
        let ips = &profile.ips;
        let fixed_hosts = |domains: &[String]| {
            (!domains.is_empty())
                .then(|| HostMatcher::from_entries(domains.iter().map(String::as_str)))
        };
        let fixed_ips =
            |cidrs: &[crate::spec::Cidr]| (!cidrs.is_empty()).then(|| IpMatcher::from_cidrs(cidrs));
        Ok(ProfileLists {
            host_include: ListSet::open(&hosts.include_files, fixed_hosts(&hosts.include_domains))?,
            host_exclude: ListSet::open(&hosts.exclude_files, fixed_hosts(&hosts.exclude_domains))?,
            ip_include: ListSet::open(&ips.include_files, fixed_ips(&ips.include))?,
            ip_exclude: ListSet::open(&ips.exclude_files, fixed_ips(&ips.exclude))?,
            last_check: None,
        })
    }

    /// Reloads changed files, at most once per [`RELOAD_INTERVAL`] (`now`
    /// is the caller's clock). Returns the number of files reloaded and the
    /// files that could not be read (their previous content stays).
    pub fn refresh(&mut self, now: Instant) -> (usize, Vec<ListError>) {
        if let Some(last) = self.last_check
            && now.saturating_duration_since(last) < RELOAD_INTERVAL
        {
            return (0, Vec::new());
        }
        self.last_check = Some(now);
        self.refresh_now()
    }

    /// Reloads changed files now, whenever the last check was.
    pub fn refresh_now(&mut self) -> (usize, Vec<ListError>) {
        let mut errors = Vec::new();
        let reloaded = self.host_include.refresh(&mut errors)
            + self.host_exclude.refresh(&mut errors)
            + self.ip_include.refresh(&mut errors)
            + self.ip_exclude.refresh(&mut errors);
        (reloaded, errors)
    }

    /// Whether an exclude list names `host`.
    pub fn host_excluded(&self, host: &str) -> bool {
        self.host_exclude.matchers().any(|m| m.matches(host))
    }

    /// Whether an include list names `host`.
    pub fn host_listed(&self, host: &str) -> bool {
        self.host_include.matchers().any(|m| m.matches(host))
    }

    /// Whether the include lists hold at least one entry.
    pub fn has_host_entries(&self) -> bool {
        self.host_include.matchers().any(|m| !m.is_empty())
    }

    /// nfqws's host check: not excluded, and listed unless the include lists are empty.
    pub fn host_allowed(&self, host: &str) -> bool {
        !self.host_excluded(host) && (!self.has_host_entries() || self.host_listed(host))
    }

    /// Whether an exclude list holds `addr`.
    pub fn ip_excluded(&self, addr: IpAddr) -> bool {
        self.ip_exclude.matchers().any(|m| m.contains(addr))
    }

    /// Whether an include list holds `addr`.
    pub fn ip_listed(&self, addr: IpAddr) -> bool {
        self.ip_include.matchers().any(|m| m.contains(addr))
    }

    /// Whether the address include lists hold at least one entry.
    pub fn has_ip_entries(&self) -> bool {
        self.ip_include.matchers().any(|m| !m.is_empty())
    }

    /// nfqws's address check: not excluded, and listed unless the include lists are empty.
    pub fn ip_allowed(&self, addr: IpAddr) -> bool {
        !self.ip_excluded(addr) && (!self.has_ip_entries() || self.ip_listed(addr))
    }

    /// Entries loaded: (host include, host exclude, address include, address exclude).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        (
            self.host_include.matchers().map(HostMatcher::len).sum(),
            self.host_exclude.matchers().map(HostMatcher::len).sum(),
            self.ip_include.matchers().map(IpMatcher::len).sum(),
            self.ip_exclude.matchers().map(IpMatcher::len).sum(),
        )
    }
}

#[cfg(test)]
mod tests;
