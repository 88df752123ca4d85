//! Which git repositories a task may check out, and which refs and paths
//! are safe to hand to `git`, `ansible-playbook` and `terraform`.
//!
//! Shared by validation (the operator refuses a TaskRun or Schedule that
//! breaks a rule, naming the field) and by the agent, which checks again
//! before it starts `git` (it never trusts the operator for this).
//!
//! Rules:
//! - URLs: `https://`, `ssh://` and scp-like `user@host:path` by default.
//!   `http://`, `git://` (no transport security: anyone on the path can
//!   serve other code) and `file://` (a path on the node itself) only with
//!   `allowInsecure: true` on the repository. Remote-helper syntax
//!   (`ext::…`, `fd::…`, any `<helper>::`) is never accepted: `ext::` runs
//!   an arbitrary command, which is the shell executor's job.
//! - Refs and paths never start with `-` (git, ansible and terraform would
//!   read them as options, e.g. `--upload-pack=…`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::is_false;
use crate::validate::FieldErrors;

/// A git repository to check out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Repository {
    /// Clone URL: `https://…`, `ssh://…` or `git@host:path`. `http://…`,
    /// `git://…` and `file:///path` need `allowInsecure: true`; `ext::` and
    /// other `<helper>::` URLs are refused.
    pub url: String,
    /// Branch, tag or commit to check out. Default: the remote's default branch.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub ref_: Option<String>,
    /// Accept `http://`, `git://` and `file://` URLs: no transport security
    /// (anyone on the path can swap the code) or a path on the node itself.
    /// For local mirrors and tests. Default: `false`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_insecure: bool,
}

/// URL prefixes accepted without `allowInsecure`.
const SECURE_SCHEMES: &[&str] = &["https://", "ssh://"];

/// URL prefixes accepted only with `allowInsecure: true`.
const INSECURE_SCHEMES: &[&str] = &["http://", "git://", "file://"];

/// Protocols `git` may use (`GIT_ALLOW_PROTOCOL`) for a repository: git
/// itself then refuses any other transport, in redirects and submodules too.
pub fn git_allowed_protocols(allow_insecure: bool) -> &'static str {
    if allow_insecure {
        "https:ssh:http:git:file"
    } else {
        "https:ssh"
    }
}

/// Why a repository URL is refused (a sentence saying what to write
/// instead), or `Ok`.
pub fn check_url(url: &str, allow_insecure: bool) -> Result<(), String> {
    let example = "write e.g. `https://github.com/org/repo.git` or `git@github.com:org/repo.git`";
    if let Some(helper) = remote_helper(url) {
        return Err(format!(
            "`{helper}::` URLs run a git remote helper (`ext::` runs any command on the node) and are never accepted; {example}, or use the shell executor"
        ));
    }
    if url.chars().any(char::is_control) {
        return Err(format!("the URL contains a control character; {example}"));
    }
    if url.is_empty() || url.starts_with('-') || url.contains(char::is_whitespace) {
        return Err(format!("`{url}` is not a git URL; {example}"));
    }
    let lower = url.to_ascii_lowercase();
    if SECURE_SCHEMES.iter().any(|s| lower.starts_with(s)) {
        return Ok(());
    }
    if let Some(scheme) = INSECURE_SCHEMES.iter().find(|s| lower.starts_with(*s)) {
        if allow_insecure {
            return Ok(());
        }
        let why = if *scheme == "file://" {
            "reads a path on the node itself"
        } else {
            "has no transport security (anyone on the path can serve other code)"
        };
        return Err(format!(
            "`{scheme}` {why}; use `https://` or `ssh://`, or set `allowInsecure: true` on the repository if this is intended"
        ));
    }
    if lower.contains("://") {
        return Err(format!(
            "`{url}` uses a scheme git tasks do not accept; {example}"
        ));
    }
    if is_scp_like(url) {
        return Ok(());
    }
    Err(format!("`{url}` is not a git URL; {example}"))
}

/// `user@host:path` (ssh): a host part before the first `:` without `/`,
/// and something after it.
fn is_scp_like(url: &str) -> bool {
    match url.split_once(':') {
        Some((host, path)) => {
            let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
            !host.is_empty()
                && !path.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '[' | ']'))
                && url.contains('@')
        }
        None => false,
    }
}

/// The helper name of `<helper>::<address>`, git's remote-helper syntax.
fn remote_helper(url: &str) -> Option<&str> {
    let (helper, _) = url.split_once("::")?;
    let plain = !helper.is_empty()
        && helper
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '.' | '_'));
    plain.then_some(helper)
}

/// Why a ref is refused, or `Ok`.
pub fn check_ref(reference: &str) -> Result<(), String> {
    if reference.starts_with('-') {
        return Err(format!(
            "`{reference}` starts with `-`, which git would read as an option; write a branch, tag or commit, e.g. `main` or `v1.2.0`"
        ));
    }
    if reference.is_empty()
        || reference.contains(char::is_whitespace)
        || reference.chars().any(char::is_control)
    {
        return Err(format!(
            "`{reference}` is not a branch, tag or commit; write e.g. `main` or `v1.2.0`"
        ));
    }
    Ok(())
}

/// Why a path inside the work dir is refused, or `Ok`: it must be relative,
/// without `..`, and must not start with `-` (a tool would read it as an
/// option).
pub fn check_relative_path(path: &str, example: &str) -> Result<(), String> {
    if path.starts_with('-') {
        return Err(format!(
            "`{path}` starts with `-`, which the tool would read as an option; write e.g. {example}"
        ));
    }
    let relative = !path.is_empty()
        && !path.starts_with('/')
        && !path.chars().any(char::is_control)
        && !path.split(['/', '\\']).any(|part| part == "..");
    if relative {
        Ok(())
    } else {
        Err(format!(
            "`{path}` must be a relative path inside the working directory without `..`, e.g. {example}"
        ))
    }
}

impl Repository {
    /// Checks the URL and the ref; `path` is the repository's field path.
    pub fn validate(&self, path: &str, errors: &mut FieldErrors) {
        if let Err(message) = check_url(&self.url, self.allow_insecure) {
            errors.push(format!("{path}.url"), message);
        }
        if let Some(reference) = &self.ref_
            && let Err(message) = check_ref(reference)
        {
            errors.push(format!("{path}.ref"), message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_urls_are_accepted_insecure_ones_only_when_allowed() {
        for url in [
            "https://github.com/org/repo.git",
            "ssh://git@host:22/repo",
            "git@github.com:org/repo.git",
            "deploy@10.0.0.1:repos/site.git",
        ] {
            assert_eq!(check_url(url, false), Ok(()), "{url}");
        }
        for url in [
            "http://mirror.lan/repo.git",
            "git://mirror.lan/repo.git",
            "file:///srv/repo.git",
            "FILE:///srv/repo.git",
        ] {
            let error = check_url(url, false).unwrap_err();
            assert!(error.contains("allowInsecure: true"), "{url}: {error}");
            assert_eq!(check_url(url, true), Ok(()), "{url}");
        }
    }

    #[test]
    fn remote_helpers_and_option_like_urls_are_never_accepted() {
        for url in [
            "ext::sh -c touch% /tmp/pwned",
            "ext::ssh",
            "fd::3",
            "-uhttps://x",
            "--upload-pack=touch /tmp/x",
            "/srv/repo.git",
            "repo",
            "ftp://host/repo",
            "",
        ] {
            assert!(check_url(url, true).is_err(), "{url} was accepted");
        }
        let error = check_url("ext::sh -c id", true).unwrap_err();
        assert!(error.contains("`ext::`"), "{error}");
    }

    #[test]
    fn refs_and_paths_starting_with_a_dash_are_refused() {
        assert!(check_ref("--upload-pack=touch /tmp/x").is_err());
        assert!(check_ref("-b").is_err());
        assert_eq!(check_ref("v1.2.0"), Ok(()));
        assert!(check_relative_path("--syntax-check", "`site.yml`").is_err());
        assert!(check_relative_path("-chdir=/", "`.`").is_err());
        assert!(check_relative_path("../x", "`.`").is_err());
        assert_eq!(check_relative_path("infra/prod", "`.`"), Ok(()));
    }

    #[test]
    fn git_protocol_list_follows_allow_insecure() {
        assert_eq!(git_allowed_protocols(false), "https:ssh");
        assert!(git_allowed_protocols(true).contains("file"));
    }
}
