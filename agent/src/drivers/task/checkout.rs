//! Checking a task's repository out into its work dir with `git`, no shell.
//!
//! `git init`, then a depth-1 `git fetch` of the ref (branch, tag or full
//! commit id; the remote's `HEAD` when no ref is given) and a detached
//! checkout of it. When a shallow fetch of the ref fails and the ref looks
//! like a commit id (servers may refuse unadvertised commits, and an
//! abbreviated id cannot be fetched by name), every branch and tag is fetched
//! in full and the commit checked out from them.
//!
//! The URL never appears in an argument list, `.git/config`, a line or a
//! message with its credentials: git gets it through `GIT_CONFIG_*`
//! environment variables (so `ps` does not show it and a kept work dir does
//! not store it), and git's output is stripped of `user:password@`.
//! Prompts are disabled (`GIT_TERMINAL_PROMPT=0`, ssh `BatchMode=yes`), so a
//! missing credential fails instead of hanging until the timeout. Submodules
//! are not checked out.
//!
//! Hostile input: the URL and ref are checked again here (the rules of
//! [`veil_crds::task_run::check_url`]), git may use only the protocols the
//! repository allows (`GIT_ALLOW_PROTOCOL`: `https` and `ssh`, plus `http`,
//! `git` and `file` with `allowInsecure`; never `ext`), the ref follows
//! `--end-of-options` in `git fetch`, and `git checkout` (which does not
//! take that before git 2.43) gets the checked ref followed by `--`.

use std::ffi::OsString;
use std::path::Path;

use veil_crds::task_run::{Repository, check_ref, check_url, git_allowed_protocols};

use super::TaskError;
use super::redact::strip_url_credentials;
use super::session::{Session, Step};
use crate::supervisor::{Completion, Stream};

/// stderr lines of a failed git command quoted in the message.
const STDERR_TAIL_LINES: usize = 5;

/// The remote name the URL is configured under.
const REMOTE: &str = "origin";

/// Fetches `repository` into the empty directory `dir` and checks out its ref.
///
/// # Errors
///
/// [`TaskError::CheckoutFailed`] with git's stderr tail when git fails;
/// [`TaskError::Timeout`], [`TaskError::Cancelled`] or a start error when
/// the run is stopped or git cannot run.
pub(super) async fn checkout(
    session: &mut Session,
    git: &Path,
    repository: &Repository,
    dir: &Path,
) -> Result<(), TaskError> {
    let url = strip_url_credentials(&repository.url);
    let reference = repository.ref_.as_deref().unwrap_or("HEAD");
    check_url(&repository.url, repository.allow_insecure)
        .and_then(|()| check_ref(reference))
        .map_err(|why| {
            TaskError::InvalidTask(format!("repository: {}", strip_url_credentials(&why)))
        })?;
    let protocols = git_allowed_protocols(repository.allow_insecure);
    session
        .note(&format!(
            "checking out {url} at {reference} into {}",
            dir.display()
        ))
        .await;
    let git_step =
        |label: &str, args: &[&str]| git_command(git, dir, &repository.url, protocols, label, args);
    let failed = |detail: String| TaskError::CheckoutFailed {
        url: url.clone(),
        reference: reference.to_owned(),
        detail,
    };

    let init = git_step("git init", &["init", "--quiet", "."]);
    run_git(session, &init).await?.map_err(failed)?;

    let shallow = git_step(
        "git fetch --depth 1",
        &[
            "fetch",
            "--depth",
            "1",
            "--no-tags",
            "--end-of-options",
            REMOTE,
            reference,
        ],
    );
    let target = match run_git(session, &shallow).await? {
        Ok(()) => "FETCH_HEAD",
        Err(detail) if looks_like_commit(reference) => {
            session
                .note("shallow fetch failed; fetching all branches and tags to find the commit")
                .await;
            let full = git_step(
                "git fetch",
                &[
                    "fetch",
                    "--tags",
                    "--end-of-options",
                    REMOTE,
                    "+refs/heads/*:refs/remotes/origin/*",
                ],
            );
            run_git(session, &full)
                .await?
                .map_err(|full_detail| failed(format!("{detail}; then {full_detail}")))?;
            reference
        }
        Err(detail) => return Err(failed(detail)),
    };
    let switch = git_step(
        "git checkout",
        &["checkout", "--quiet", "--detach", target, "--"],
    );
    run_git(session, &switch).await?.map_err(failed)?;

    let head = git_step("git rev-parse HEAD", &["rev-parse", "HEAD"]);
    let completion = session.run(&head).await?;
    if let Some(commit) = first_stdout_line(&completion) {
        session.note(&format!("checked out commit {commit}")).await;
    }
    Ok(())
}

/// Runs a git step: `Ok(Ok(()))` when it exited 0, `Ok(Err(detail))` when it
/// failed (the detail names the command and quotes its stderr tail).
async fn run_git(session: &mut Session, step: &Step) -> Result<Result<(), String>, TaskError> {
    let completion = session.run(step).await?;
    Ok(match session.require_success(step, &completion) {
        Ok(()) => Ok(()),
        Err(error) => {
            let tail = stderr_tail(&completion);
            Err(if tail.is_empty() {
                error.to_string()
            } else {
                format!("{error}: {tail}")
            })
        }
    })
}

fn git_command(
    git: &Path,
    dir: &Path,
    url: &str,
    protocols: &str,
    label: &str,
    args: &[&str],
) -> Step {
    let mut step = Step::new(label, git, dir.to_path_buf());
    step.args = args.iter().map(OsString::from).collect();
    step.strip_urls = true;
    step.announce = false;
    step.env = vec![
        ("GIT_TERMINAL_PROMPT".into(), "0".into()),
        ("GIT_ALLOW_PROTOCOL".into(), protocols.into()),
        ("GIT_SSH_COMMAND".into(), "ssh -o BatchMode=yes".into()),
        // Quiet, deterministic init and checkout output.
        ("GIT_CONFIG_COUNT".into(), "3".into()),
        (
            "GIT_CONFIG_KEY_0".into(),
            format!("remote.{REMOTE}.url").into(),
        ),
        ("GIT_CONFIG_VALUE_0".into(), url.into()),
        ("GIT_CONFIG_KEY_1".into(), "init.defaultBranch".into()),
        ("GIT_CONFIG_VALUE_1".into(), "main".into()),
        ("GIT_CONFIG_KEY_2".into(), "advice.detachedHead".into()),
        ("GIT_CONFIG_VALUE_2".into(), "false".into()),
    ];
    step
}

/// 7 to 40 hex digits: possibly a commit id rather than a branch or tag name.
fn looks_like_commit(reference: &str) -> bool {
    (7..=40).contains(&reference.len()) && reference.chars().all(|c| c.is_ascii_hexdigit())
}

fn stderr_tail(completion: &Completion) -> String {
    let lines: Vec<&str> = completion
        .recent_lines
        .iter()
        .filter(|l| l.stream == Stream::Stderr && !l.text.trim().is_empty())
        .map(|l| l.text.trim())
        .collect();
    let tail = &lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..];
    strip_url_credentials(&tail.join(" | "))
}

fn first_stdout_line(completion: &Completion) -> Option<String> {
    completion
        .recent_lines
        .iter()
        .find(|l| l.stream == Stream::Stdout && !l.text.trim().is_empty())
        .map(|l| l.text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_ids_are_told_from_names() {
        for (reference, commit) in [
            ("3f9a1c2", true),
            ("3f9a1c2e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39", true),
            ("main", false),
            ("v1.2.0", false),
            ("abc", false),
            ("deadbeefcafe-feature", false),
        ] {
            assert_eq!(looks_like_commit(reference), commit, "{reference}");
        }
    }
}
