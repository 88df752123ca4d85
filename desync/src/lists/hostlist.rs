//! Host name sets with nfqws's subdomain rule.

use std::collections::HashSet;
use std::path::Path;

use super::{ListError, entries, read_list};

/// A set of domain names. An entry `name` matches `name` and every
/// subdomain of it; an entry `^name` matches `name` only. Names are
/// compared lower-case, ignoring one trailing dot.
///
/// Lookup walks the suffixes of the queried host (`a.b.example.com`,
/// `b.example.com`, `example.com`, `com`): a few hash lookups whatever the
/// size of the list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostMatcher {
    with_subdomains: HashSet<String>,
    exact: HashSet<String>,
}

impl HostMatcher {
    /// A matcher for entries as written in a list (`name` or `^name`).
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = &'a str>) -> HostMatcher {
        let mut m = HostMatcher::default();
        for e in entries {
            m.insert(e);
        }
        m
    }

    /// Adds one entry (`name` or `^name`); empty names are ignored.
    pub fn insert(&mut self, entry: &str) {
        let (exact, name) = match entry.strip_prefix('^') {
            Some(name) => (true, name),
            None => (false, entry),
        };
        let name = normalize(name);
        if name.is_empty() {
            return;
        }
        if exact {
            self.exact.insert(name);
        } else {
            self.with_subdomains.insert(name);
        }
    }

    /// Parses a list text (one entry per line, comments and blank lines skipped).
    pub fn parse(text: &str, path: &Path) -> Result<HostMatcher, ListError> {
        let mut m = HostMatcher::default();
        for (line, entry) in entries(text) {
            if entry.chars().any(char::is_whitespace) {
                return Err(ListError::BadLine {
                    path: path.to_owned(),
                    line,
                    text: entry.to_owned(),
                    expected: "one domain name",
                });
            }
            m.insert(entry);
        }
        Ok(m)
    }

    /// Reads and parses a list file.
    pub fn load(path: &Path) -> Result<HostMatcher, ListError> {
        HostMatcher::parse(&read_list(path)?, path)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.with_subdomains.len() + self.exact.len()
    }

    /// Whether the list has no entries (nfqws then treats it as absent).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `host` is listed, itself or as a subdomain of a listed name.
    pub fn matches(&self, host: &str) -> bool {
        let host = normalize(host);
        if host.is_empty() {
            return false;
        }
        if self.exact.contains(&host) {
            return true;
        }
        let mut rest = host.as_str();
        loop {
            if self.with_subdomains.contains(rest) {
                return true;
            }
            match rest.split_once('.') {
                Some((_, parent)) => rest = parent,
                None => return false,
            }
        }
    }
}

fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomain_and_exact_rules() {
        let m = HostMatcher::from_entries(["example.com", "^exact.org", "Mixed.Case.NET"]);
        let cases = [
            ("example.com", true),
            ("a.example.com", true),
            ("a.b.example.com", true),
            ("EXAMPLE.COM.", true),
            ("badexample.com", false),
            ("com", false),
            ("exact.org", true),
            ("a.exact.org", false),
            ("mixed.case.net", true),
            ("x.mixed.case.net", true),
            ("", false),
        ];
        for (host, expected) in cases {
            assert_eq!(m.matches(host), expected, "{host:?}");
        }
    }

    #[test]
    fn list_text_skips_comments_and_blank_lines() {
        let text = "# comment\n; also\n// too\n\n  Example.com  \n^only.test\r\nx.org\n";
        let m = HostMatcher::parse(text, Path::new("l.txt")).unwrap();
        assert_eq!(m.len(), 3);
        assert!(m.matches("www.example.com"));
        assert!(m.matches("only.test"));
        assert!(!m.matches("www.only.test"));
    }

    #[test]
    fn a_line_with_two_names_is_refused_with_its_line_number() {
        let err = HostMatcher::parse("a.com\nb.com c.com\n", Path::new("l.txt")).unwrap_err();
        assert!(matches!(err, ListError::BadLine { line: 2, .. }), "{err}");
    }

    #[test]
    fn ten_thousand_names_match_quickly() {
        let names: Vec<String> = (0..10_000).map(|i| format!("site{i}.example")).collect();
        let m = HostMatcher::from_entries(names.iter().map(String::as_str));
        let start = std::time::Instant::now();
        let mut hits = 0;
        for i in 0..10_000 {
            if m.matches(&format!("www.site{i}.example")) {
                hits += 1;
            }
            if m.matches(&format!("www.other{i}.example")) {
                hits += 1;
            }
        }
        assert_eq!(hits, 10_000);
        // 20,000 lookups; generous for a debug build on a shared machine.
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }
}
