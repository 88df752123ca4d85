//! The JSONPath subset printer columns use.

use serde_json::Value;

/// One step of a parsed path.
pub(super) enum Step<'a> {
    Field(&'a str),
    Index(usize),
    /// `[?(@.KEY=="VALUE")]`: the first array element whose `KEY` equals `VALUE`.
    Filter(&'a str, &'a str),
}

pub(super) fn parse_path(path: &str) -> Option<Vec<Step<'_>>> {
    let mut steps = Vec::new();
    let mut rest = path.strip_prefix('.').unwrap_or(path);
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            let inner = &after[..end];
            if let Some(filter) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (key, value) = filter.split_once("==")?;
                let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
                steps.push(Step::Filter(key.trim(), value));
            } else {
                steps.push(Step::Index(inner.parse().ok()?));
            }
            rest = &after[end + 1..];
            rest = rest.strip_prefix('.').unwrap_or(rest);
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            steps.push(Step::Field(&rest[..end]));
            rest = &rest[end..];
            rest = rest.strip_prefix('.').unwrap_or(rest);
        }
    }
    Some(steps)
}

/// Evaluates the JSONPath subset printer columns use: dotted fields, `[N]`
/// indices and `[?(@.type=="Ready")]` filters. Returns `None` when the path
/// leads nowhere or to `null`; strings as they are, other values as JSON.
pub fn evaluate(json_path: &str, object: &Value) -> Option<String> {
    let mut current = object;
    for step in parse_path(json_path)? {
        current = match step {
            Step::Field(name) => current.get(name)?,
            Step::Index(i) => current.get(i)?,
            Step::Filter(key, value) => current
                .as_array()?
                .iter()
                .find(|item| item.get(key).and_then(Value::as_str) == Some(value))?,
        };
    }
    match current {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}
