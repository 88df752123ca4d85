//! The steps of [`super::parse_documents`], one document at a time.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::messages::humanize;
use super::meta;
use super::yaml::{self, Pos};
use super::{DocumentError, Limits, ParsedObject};
use crate::kind::Kind;
use crate::object::{Object, ObjectKey};
use crate::validate::FieldError;

/// Validation errors located exactly; beyond this many in one document the
/// rest point at the document's start (locating re-reads the document).
const MAX_LOCATED: usize = 50;

pub(super) fn parse_documents(
    text: &str,
    default_namespace: &str,
    limits: &Limits,
) -> Result<Vec<ParsedObject>, Vec<DocumentError>> {
    if text.len() > limits.max_bytes {
        return Err(vec![DocumentError {
            line: 0,
            column: 0,
            object: None,
            path: String::new(),
            message: format!(
                "the text is {} bytes, more than the limit of {} bytes; split it into several files",
                text.len(),
                limits.max_bytes
            ),
        }]);
    }
    let scan = yaml::scan(text, limits.max_objects);
    let mut errors = Vec::new();
    if scan.too_many {
        return Err(vec![DocumentError {
            line: 0,
            column: 0,
            object: None,
            path: String::new(),
            message: format!(
                "the text holds more than {} documents (the limit); split it into several files",
                limits.max_objects
            ),
        }]);
    }
    let line_offsets: Vec<usize> = std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let offset_of = |line: usize| {
        line_offsets
            .get(line.saturating_sub(1))
            .copied()
            .unwrap_or(text.len())
    };
    let syntax_line = scan.syntax_error.as_ref().map(|(pos, _)| pos.line);
    let mut objects: Vec<ParsedObject> = Vec::new();
    let mut seen: BTreeMap<ObjectKey, usize> = BTreeMap::new();
    for (i, start) in scan.starts.iter().enumerate() {
        let from = offset_of(start.line.max(1));
        let to = scan
            .starts
            .get(i + 1)
            .map(|next| next.line)
            .or(syntax_line)
            .filter(|&line| line > start.line)
            .map_or(text.len(), offset_of);
        let doc = Doc {
            text: &text[from..to.max(from)],
            first_line: start.line.max(1),
        };
        match doc.parse(default_namespace) {
            Ok(None) => {}
            Ok(Some(object)) => {
                let key = object.key();
                if let Some(first) = seen.get(&key) {
                    errors.push(DocumentError {
                        line: doc.first_line,
                        column: start.column,
                        object: Some(key.to_string()),
                        path: "metadata.name".into(),
                        message: format!(
                            "{key} is defined twice in this text (first at line {first}); rename or remove one"
                        ),
                    });
                } else {
                    seen.insert(key, doc.first_line);
                    objects.push(ParsedObject {
                        object,
                        line: doc.first_line,
                    });
                }
            }
            Err(mut e) => errors.append(&mut e),
        }
    }
    if let Some((pos, message)) = scan.syntax_error {
        errors.push(syntax_error(text, pos, &message));
    }
    if errors.is_empty() {
        Ok(objects)
    } else {
        Err(errors)
    }
}

fn syntax_error(text: &str, pos: Pos, message: &str) -> DocumentError {
    let line_text = text
        .lines()
        .nth(pos.line.saturating_sub(1))
        .unwrap_or_default();
    let hint = if line_text.starts_with('\t') || line_text.trim_start_matches(' ').starts_with('\t')
    {
        "YAML does not allow tabs for indentation; indent with spaces"
    } else if message.contains("repetition limit") || message.contains("recursion limit") {
        "aliases (`*name`) or nesting expand too far (a \"billion laughs\" pattern?); write the values out"
    } else {
        "fix the YAML syntax: indent with spaces, close quotes and brackets, put `key: value` with a space after the colon"
    };
    let (message, _) = humanize(&strip_positions(message));
    DocumentError {
        line: pos.line,
        column: pos.column,
        object: None,
        path: String::new(),
        message: format!("invalid YAML: {message}; {hint}"),
    }
}

/// Removes libyaml's ` at line L column C` parts (the error carries them already).
fn strip_positions(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(at) = rest.find(" at line ") {
        out.push_str(&rest[..at]);
        let after = &rest[at + " at line ".len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let after = &after[digits..];
        rest = match after.strip_prefix(" column ") {
            Some(col) => &col[col.bytes().take_while(u8::is_ascii_digit).count()..],
            None => after,
        };
    }
    out.push_str(rest);
    out
}

/// One document's text and where it starts in the whole text.
pub(super) struct Doc<'t> {
    pub text: &'t str,
    /// 1-based line of the document's first line in the whole text.
    pub first_line: usize,
}

/// Fields a document of any Veil kind may have at the top level.
const VEIL_TOP: [&str; 5] = ["apiVersion", "kind", "metadata", "spec", "status"];

/// Reads only `spec`, ignoring the other top-level fields (checked separately;
/// `status` is ignored on purpose).
#[derive(Deserialize)]
struct SpecOnly<S> {
    #[serde(default = "Option::default")]
    spec: Option<S>,
}

impl<'t> Doc<'t> {
    /// An error at `path`, located in the text.
    pub fn error(
        &self,
        object: &Option<String>,
        path: &str,
        message: impl Into<String>,
    ) -> DocumentError {
        let pos =
            yaml::locate(self.text, &yaml::segments(path)).unwrap_or(Pos { line: 1, column: 0 });
        self.at(pos, object, path, message)
    }

    /// An error at a position relative to this document.
    pub fn at(
        &self,
        pos: Pos,
        object: &Option<String>,
        path: &str,
        message: impl Into<String>,
    ) -> DocumentError {
        DocumentError {
            line: pos.line + self.first_line - 1,
            column: pos.column,
            object: object.clone(),
            path: path.to_owned(),
            message: message.into(),
        }
    }

    fn parse(&self, default_namespace: &str) -> Result<Option<Object>, Vec<DocumentError>> {
        let mut value = yaml::bounded_value(self.text).map_err(|e| {
            let pos = yaml::position(&e).unwrap_or(Pos { line: 1, column: 0 });
            vec![self.at(pos, &None, "", humanize(&e.to_string()).0)]
        })?;
        let Some(map) = value.as_object_mut() else {
            return match value {
                Value::Null => Ok(None),
                other => Err(vec![self.error(
                    &None,
                    "",
                    format!(
                        "a document must be a mapping with `apiVersion`, `kind`, `metadata` and `spec`, not {}",
                        describe(&other)
                    ),
                )]),
            };
        };
        let (kind, object) = meta::identify(self, map)?;
        let allowed: &[&str] = if kind == Kind::Secret {
            &meta::SECRET_TOP
        } else {
            &VEIL_TOP
        };
        let mut errors = Vec::new();
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                errors.push(self.error(
                    &object,
                    key,
                    format!(
                        "unknown top-level field `{key}`; a {kind} has only {}. Move it under `spec` or remove it",
                        allowed.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        let metadata = meta::metadata(self, kind, map, &object, default_namespace, &mut errors);
        if kind == Kind::Secret {
            let secret = meta::secret(self, map, &object, &mut errors);
            return match (metadata, secret, errors.is_empty()) {
                (Some(metadata), Some(mut secret), true) => {
                    secret.metadata = metadata;
                    Ok(Some(Object::Secret(Box::new(secret))))
                }
                _ => Err(errors),
            };
        }
        let built = self.typed(kind, &object, metadata.unwrap_or_default());
        match built {
            Ok(object) if errors.is_empty() => Ok(Some(object)),
            Ok(_) => Err(errors),
            Err(mut more) => {
                errors.append(&mut more);
                Err(errors)
            }
        }
    }

    /// Deserializes `spec` from the YAML text (for positions), then runs `validate()`.
    fn spec<S: DeserializeOwned>(
        &self,
        object: &Option<String>,
        required: bool,
    ) -> Result<Option<S>, Vec<DocumentError>> {
        let Some(doc) = serde_yaml_ng::Deserializer::from_str(self.text).next() else {
            return Ok(None);
        };
        match serde_path_to_error::deserialize::<_, SpecOnly<S>>(doc) {
            Ok(SpecOnly { spec: None }) if required => Err(vec![self.error(
                object,
                "spec",
                "`spec` is required; add the `spec:` mapping (see docs/kinds/ for its fields)",
            )]),
            Ok(SpecOnly { spec }) => Ok(spec),
            Err(e) => {
                let mut path = e.path().to_string();
                if path == "." {
                    path.clear();
                }
                let (message, field) = humanize(&e.inner().to_string());
                if let Some(field) = field {
                    path = if path.is_empty() {
                        field
                    } else {
                        format!("{path}.{field}")
                    };
                }
                // serde_yaml_ng stamps the offending node's position on every
                // error, including the messages of Veil's own value types;
                // without one, point at the path (or the document start).
                let pos = yaml::position(e.inner())
                    .or_else(|| yaml::locate(self.text, &yaml::segments(&path)))
                    .unwrap_or(Pos { line: 1, column: 0 });
                Err(vec![self.at(pos, object, &path, message)])
            }
        }
    }

    /// Turns cross-field errors into located document errors.
    fn check(
        &self,
        object: &Option<String>,
        result: Result<(), Vec<FieldError>>,
    ) -> Result<(), Vec<DocumentError>> {
        result.map_err(|errors| {
            errors
                .into_iter()
                .enumerate()
                .map(|(i, e)| {
                    if i < MAX_LOCATED {
                        self.error(object, &e.path, e.message)
                    } else {
                        self.at(Pos { line: 1, column: 0 }, object, &e.path, e.message)
                    }
                })
                .collect()
        })
    }

    fn typed(
        &self,
        kind: Kind,
        object: &Option<String>,
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    ) -> Result<Object, Vec<DocumentError>> {
        macro_rules! build {
            ($variant:ident, $m:ident, $spec:ty, $required:expr) => {{
                let spec: $spec = self.spec::<$spec>(object, $required)?.unwrap_or_default();
                self.check(object, spec.validate())?;
                Ok(Object::$variant(Box::new($m::$variant {
                    metadata,
                    spec,
                    status: None,
                })))
            }};
            ($variant:ident, $m:ident, $spec:ty) => {{
                let Some(spec) = self.spec::<$spec>(object, true)? else {
                    return Err(vec![self.error(object, "spec", "`spec` is required")]);
                };
                self.check(object, spec.validate())?;
                Ok(Object::$variant(Box::new($m::$variant {
                    metadata,
                    spec,
                    status: None,
                })))
            }};
        }
        use crate::{
            protocol_server as ps, runner as rn, schedule as sc, strategy as st, task_run as tr,
            veil_node as vn, vless_key as vk,
        };
        match kind {
            Kind::VeilNode => build!(VeilNode, vn, vn::VeilNodeSpec, false),
            Kind::ProtocolServer => build!(ProtocolServer, ps, ps::ProtocolServerSpec),
            Kind::VlessKey => build!(VlessKey, vk, vk::VlessKeySpec),
            Kind::Strategy => build!(Strategy, st, st::StrategySpec),
            Kind::Runner => build!(Runner, rn, rn::RunnerSpec),
            Kind::Schedule => build!(Schedule, sc, sc::ScheduleSpec),
            Kind::TaskRun => build!(TaskRun, tr, tr::TaskRunSpec),
            Kind::Secret => Err(vec![self.error(
                object,
                "",
                "internal: Secret reached the typed path",
            )]),
        }
    }
}

/// "a list", "the string `x`", … for messages about a whole document.
pub(super) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(_) => "a number".into(),
        Value::String(_) => "a plain string".into(),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}
