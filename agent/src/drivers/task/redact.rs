//! Keeping secrets out of everything a run reports.
//!
//! Two things can leak: credentials written into a repository URL
//! (`https://user:token@host/…`) and environment values (which may come from
//! a `secretKeyRef`). [`strip_url_credentials`] removes the first from any
//! text; [`Mask`] replaces the second. This module only rewrites text; it
//! never logs what it removes.
//!
//! Output is masked one line at a time, so a value spanning several lines
//! (a PEM key, a kubeconfig) is also masked line by line: each of its lines
//! of at least [`MIN_MASKED_LEN`] bytes (as written, and without its
//! leading and trailing whitespace) is a value of its own. Masking is best
//! effort: a task that encodes, splits or reverses a secret prints it.

use veil_crds::wire::TaskAssignment;

/// What replaces a masked value.
pub const MASK: &str = "***";

/// Shortest value that is masked. Shorter values (`1`, `on`, `eu`) occur in
/// ordinary output so often that masking them would garble logs while hiding
/// nothing: no real secret is that short.
pub const MIN_MASKED_LEN: usize = 4;

/// Removes `user[:password]@` from every URL-like `scheme://user@host` in
/// `text`. `git@host:path` (scp-style ssh) carries no secret and is kept.
pub fn strip_url_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // The authority ends at the first `/`, `?`, `#` or whitespace.
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => out.push_str(&authority[at + 1..]),
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Replaces known secret values in text with [`MASK`].
#[derive(Clone, Default)]
pub struct Mask {
    /// Longest first, so a value containing another is masked whole.
    values: Vec<String>,
}

impl Mask {
    /// Masks `values` and, for a value of several lines, each of its lines
    /// (anything shorter than [`MIN_MASKED_LEN`] is ignored).
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut masked: Vec<String> = Vec::new();
        for value in values {
            if value.contains(['\n', '\r']) {
                for line in value.split(['\n', '\r']) {
                    masked.push(line.to_owned());
                    masked.push(line.trim().to_owned());
                }
            }
            masked.push(value);
        }
        masked.retain(|v| v.len() >= MIN_MASKED_LEN);
        masked.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        masked.dedup();
        Self { values: masked }
    }

    /// Every value of the run's environment except the literal `value`s the
    /// task itself declares: those are visible in the TaskRun anyway, while
    /// a value resolved from a `secretKeyRef`, or coming from the Runner
    /// (whose source the agent cannot see), may be secret.
    pub fn for_assignment(assignment: &TaskAssignment) -> Self {
        let literal = |name: &str, value: &str| {
            assignment
                .task
                .env
                .iter()
                .any(|e| e.name == name && e.value.as_deref() == Some(value))
        };
        Self::new(
            assignment
                .env
                .iter()
                .filter(|e| !literal(&e.name, e.value.expose()))
                .map(|e| e.value.expose().to_owned()),
        )
    }

    /// Every value of the run's environment, literal or not: for text the
    /// driver writes itself, which has no business containing any of them.
    pub fn all_env(assignment: &TaskAssignment) -> Self {
        Self::new(assignment.env.iter().map(|e| e.value.expose().to_owned()))
    }

    /// `text` with every masked value replaced by [`MASK`].
    pub fn apply(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for value in &self.values {
            if text.contains(value.as_str()) {
                text = text.replace(value.as_str(), MASK);
            }
        }
        text
    }
}

impl std::fmt::Debug for Mask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mask({} values)", self.values.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_credentials_are_stripped_wherever_they_appear() {
        let cases = [
            (
                "fatal: https://bob:t0ken@git.example/x.git not found",
                "fatal: https://git.example/x.git not found",
            ),
            ("ssh://git@host:22/repo", "ssh://host:22/repo"),
            (
                "https://tok@h/a and http://u:p@h2?q",
                "https://h/a and http://h2?q",
            ),
            ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
            ("file:///srv/repo.git", "file:///srv/repo.git"),
            ("no url here", "no url here"),
        ];
        for (input, want) in cases {
            assert_eq!(strip_url_credentials(input), want, "input: {input}");
        }
    }

    #[test]
    fn mask_replaces_long_values_and_ignores_short_ones() {
        let mask = Mask::new([
            "s3cr3t-value".to_owned(),
            "s3cr3t".to_owned(),
            "eu".to_owned(),
        ]);
        assert_eq!(
            mask.apply("a s3cr3t-value b s3cr3t c eu"),
            "a *** b *** c eu"
        );
        assert_eq!(format!("{mask:?}"), "Mask(2 values)");
    }

    #[test]
    fn a_multi_line_secret_is_masked_line_by_line() {
        let pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n  c2VjcmV0IGJvZHk=\r\nab\n-----END PRIVATE KEY-----\n";
        let mask = Mask::new([pem.to_owned()]);
        for line in pem.lines() {
            let masked = mask.apply(line.trim_end_matches('\r'));
            assert!(
                masked == MASK || line.trim().len() < MIN_MASKED_LEN,
                "{line:?} became {masked:?}"
            );
        }
        assert_eq!(mask.apply("key: c2VjcmV0IGJvZHk= end"), "key: *** end");
        assert_eq!(mask.apply("ab"), "ab", "lines under 4 bytes stay");
    }
}
