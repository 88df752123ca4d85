//! Checks on a Strategy's own zapret `args`, before any node sees them.
//!
//! The nfqws v1 parser of `veil-desync` (in its `Validate` mode) refuses
//! unknown options, options the agent owns (queue, mark, user, capture
//! filters, config files) and profiles without a port filter. On top of
//! that, every option whose value names a file must name one of the
//! Strategy's own `hostlists`/`files` through a placeholder: a literal path
//! would let whoever writes a Strategy make the engine (running as root)
//! read any file on the node and send it out as a fake payload, or append
//! to any file (`--hostlist-auto`).

use veil_desync::args::{ParseMode, parse};

use crate::validate::FieldErrors;

/// Options whose value is (or may be) a file path.
fn file_valued(option: &str) -> bool {
    matches!(
        option,
        "hostlist" | "hostlist-exclude" | "ipset" | "ipset-exclude" | "hostlist-auto"
    ) || option.ends_with("-pattern")
        || (option.starts_with("dpi-desync-fake-") && !option.ends_with("-mod"))
}

/// Whether `value` of a file-valued option is allowed: a placeholder
/// (optionally behind nfqws's `@` or `+OFFSET@`), or for payloads and
/// patterns inline hex (`0x…`) or `!` (zapret's built-in default).
fn allowed_file_value(value: &str) -> bool {
    let is_placeholder = |text: &str| {
        (text.starts_with("{hostlist:") || text.starts_with("{file:"))
            && text.ends_with('}')
            && text.matches('{').count() == 1
    };
    if value.starts_with("0x") || value == "!" || is_placeholder(value) {
        return true;
    }
    let after_offset = match value.strip_prefix('+') {
        Some(rest) => rest.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => value,
    };
    after_offset
        .strip_prefix('@')
        .is_some_and(|rest| is_placeholder(rest) || rest == "!")
}

/// Checks `args` (the Strategy's `spec.zapret.args`) at `path`.
pub(crate) fn validate(args: &[String], path: &str, errors: &mut FieldErrors) {
    if let Err(error) = parse(args, ParseMode::Validate) {
        let at = match error.index() {
            Some(i) => format!("{path}[{i}]"),
            None => path.to_owned(),
        };
        errors.push(at, error.to_string());
        return;
    }
    let mut pending: Option<(usize, &str)> = None;
    for (i, arg) in args.iter().enumerate() {
        let (option, value) = match pending.take() {
            Some((_, option)) => (option, Some(arg.as_str())),
            None => match arg.strip_prefix("--") {
                Some(rest) => match rest.split_once('=') {
                    Some((option, value)) => (option, Some(value)),
                    None if file_valued(rest) => {
                        pending = Some((i, rest));
                        continue;
                    }
                    None => (rest, None),
                },
                None => continue,
            },
        };
        if let Some(value) = value
            && file_valued(option)
            && !allowed_file_value(value)
        {
            errors.push(
                format!("{path}[{i}]"),
                format!(
                    "`--{option}` names a file on the node; list the content in `hostlists`/`files` and write `{{hostlist:NAME}}` or `{{file:NAME}}` instead of a path"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(args: &[&str]) -> Vec<String> {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let mut errors = FieldErrors::default();
        validate(&args, "spec.zapret.args", &mut errors);
        match errors.into_result() {
            Ok(()) => Vec::new(),
            Err(errors) => errors
                .iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect(),
        }
    }

    #[test]
    fn placeholders_hex_and_defaults_are_accepted() {
        assert_eq!(
            check(&[
                "--filter-tcp=443",
                "--hostlist={hostlist:ru}",
                "--dpi-desync=fake,multisplit",
                "--dpi-desync-fake-tls={file:tls}",
                "--dpi-desync-fake-http=0x474554",
                "--dpi-desync-split-pos=1,midsld",
            ]),
            Vec::<String>::new()
        );
        assert!(check(&["--filter-tcp=443", "--dpi-desync-fake-tls=@{file:tls}"]).is_empty());
        assert!(check(&["--filter-tcp=443", "--dpi-desync-fake-tls=!"]).is_empty());
        assert!(check(&["--filter-tcp=443", "--hostlist", "{hostlist:ru}"]).is_empty());
    }

    #[test]
    fn literal_paths_are_refused_with_the_argument_named() {
        let errors = check(&[
            "--filter-tcp=443",
            "--dpi-desync=fake",
            "--dpi-desync-fake-tls=/etc/shadow",
        ]);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("spec.zapret.args[2]: `--dpi-desync-fake-tls` names a file"),
            "{errors:?}"
        );
        let errors = check(&["--filter-tcp=443", "--hostlist", "/etc/passwd"]);
        assert!(errors[0].starts_with("spec.zapret.args[2]"), "{errors:?}");
        let errors = check(&[
            "--filter-tcp=443",
            "--hostlist-auto=/root/.ssh/authorized_keys",
        ]);
        assert!(errors[0].starts_with("spec.zapret.args[1]"), "{errors:?}");
    }

    #[test]
    fn agent_owned_options_and_missing_filters_are_refused() {
        let errors = check(&["--qnum=200", "--filter-tcp=443"]);
        assert!(
            errors[0].starts_with("spec.zapret.args[0]: args[0] `--qnum`"),
            "{errors:?}"
        );
        assert!(
            errors[0].contains("the agent sets this option"),
            "{errors:?}"
        );
        let errors = check(&["--dpi-desync=fake"]);
        assert!(
            errors[0].contains("needs --filter-tcp or --filter-udp"),
            "{errors:?}"
        );
        let errors = check(&["--filter-tcp=443", "@/etc/nfqws.conf"]);
        assert!(
            errors[0].contains("config files are not allowed"),
            "{errors:?}"
        );
    }
}
