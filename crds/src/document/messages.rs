//! Turns serde's terse messages into ones that say what to write instead.

/// Strips serde_yaml_ng's own path prefix and ` at line L column C` suffix.
pub fn bare(message: &str) -> String {
    let mut text = message.to_owned();
    if let Some(at) = text.rfind(" at line ")
        && text[at + 9..]
            .split(' ')
            .next()
            .is_some_and(|n| n.parse::<usize>().is_ok())
        && !text[at..].contains(',')
    {
        text.truncate(at);
    }
    if let Some((prefix, rest)) = text.split_once(": ")
        && !prefix.is_empty()
        && !prefix.contains(char::is_whitespace)
        && !prefix.starts_with('`')
    {
        text = rest.to_owned();
    }
    text
}

/// Names inside backticks, in order: "expected one of `a`, `b`" → [a, b].
fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The closest candidate to `word`, when it is close enough to be a typo.
fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (distance(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn list(items: &[&str]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a Rust type name in serde's `expected …` means to a person writing YAML.
fn expected_in_words(expected: &str) -> Option<&'static str> {
    Some(match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number from 0 up (e.g. `3`)",
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number (e.g. `3`)",
        "f32" | "f64" => "a number (e.g. `0.5`)",
        "a boolean" => "`true` or `false`",
        "a string" => "a string (quote it if it looks like a number or boolean, e.g. \"443\")",
        "a sequence" => "a list (e.g. `[a, b]`, or lines starting with `- `)",
        "a map" => "a mapping of `key: value` lines",
        _ if expected.starts_with("struct ") => "a mapping of `field: value` lines",
        _ => return None,
    })
}

/// Rewrites one deserialization message. Returns the message and, for
/// `missing field`, the field to append to the path.
pub fn humanize(message: &str) -> (String, Option<String>) {
    let message = bare(message);
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let names = backticked(&message);
        let field = rest.split('`').next().unwrap_or_default();
        let valid: Vec<&str> = names.iter().skip(1).copied().collect();
        let mut out = format!("unknown field `{field}`");
        if let Some(best) = suggest(field, &valid) {
            out.push_str(&format!("; did you mean `{best}`?"));
        }
        if valid.is_empty() {
            out.push_str("; this mapping takes no fields");
        } else {
            out.push_str(&format!(
                " (fields here: {}); remove it or fix the spelling",
                list(&valid)
            ));
        }
        return (out, None);
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let names = backticked(&message);
        let value = rest.split('`').next().unwrap_or_default();
        let valid: Vec<&str> = names.iter().skip(1).copied().collect();
        let mut out = format!("`{value}` is not a valid value");
        if let Some(best) = suggest(value, &valid) {
            out.push_str(&format!("; did you mean `{best}`?"));
        }
        out.push_str(&format!(" Write one of: {} (case matters)", list(&valid)));
        return (out, None);
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or_default().to_owned();
        return (
            format!(
                "`{field}` is required; add it (see `kubectl explain` or docs/kinds/ for its format)"
            ),
            Some(field),
        );
    }
    if let Some(rest) = message.strip_prefix("duplicate field `") {
        let field = rest.split('`').next().unwrap_or_default();
        return (
            format!("`{field}` is set twice in this mapping; keep one"),
            None,
        );
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((got, expected)) = rest.split_once(", expected ")
        {
            let wanted =
                expected_in_words(expected).map_or_else(|| expected.to_owned(), str::to_owned);
            return (format!("got {got}, but this field needs {wanted}"), None);
        }
    }
    if message.contains("repetition limit exceeded") || message.contains("recursion limit exceeded")
    {
        return (
            format!(
                "{message}: aliases (`*name`) or nesting expand this document too far (a \"billion laughs\" pattern?); write the values out or nest less"
            ),
            None,
        );
    }
    (message, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_suggestions() {
        let (m, _) = humanize("unknown field `prot`, expected one of `protocol`, `port`, `listen`");
        assert!(
            m.contains("did you mean `port`") || m.contains("did you mean `protocol`"),
            "{m}"
        );
        let (m, _) =
            humanize("unknown variant `Forbidd`, expected one of `Allow`, `Forbid`, `Replace`");
        assert!(m.contains("did you mean `Forbid`"), "{m}");
    }

    #[test]
    fn missing_fields_extend_the_path() {
        let (m, field) = humanize("missing field `port`");
        assert_eq!(field.as_deref(), Some("port"));
        assert!(m.contains("required"));
    }

    #[test]
    fn locations_are_stripped() {
        assert_eq!(
            bare("spec.port: port 0 is out of range at line 3 column 9"),
            "port 0 is out of range"
        );
        let (m, _) =
            humanize("spec.x: invalid value: integer `-1`, expected u32 at line 2 column 4");
        assert_eq!(
            m,
            "got integer `-1`, but this field needs a whole number from 0 up (e.g. `3`)"
        );
    }
}
