//! The spec field tables in `docs/kinds/*.md` match the CRD schemas.
//!
//! Each kind page holds its `## Spec` table between [`BEGIN`] and [`END`];
//! this test renders that table from the kind's `openAPIV3Schema` (the same
//! CRDs `crd_drift` checks, from [`veil_crds::crd::crd`]) and compares.
//! `VEIL_UPDATE_DOCS=1 cargo test -p veil-crds --test docs_tables` (which
//! `make crds` runs) rewrites the regions instead.
//!
//! One row per field, parents before their children and siblings in key
//! order: nested objects recurse with `.`, array items with `[]`, map values
//! with `.*`. Columns: path, type (`string`, `[]object`, `map[string]string`,
//! …), `yes` when the parent lists the field as required, the schema's
//! `default` as JSON (an object default that only repeats its fields' own
//! defaults is left to those rows), and the description on one line with the
//! enum values appended: "One of `a` \| `b`.".

use std::path::PathBuf;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSON, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use veil_crds::kind::Kind;

/// Opens the generated region of a page (the rest of the line is a note to readers).
const BEGIN: &str = "<!-- spec-table:begin (generated from crds/src by `make crds`; edit the Rust doc comments, not this table) -->";
/// Closes the generated region of a page.
const END: &str = "<!-- spec-table:end -->";
/// The table's header lines.
const HEADER: &str = "| field | type | required | default | description |\n|---|---|---|---|---|\n";

/// One row of a field table.
struct Row {
    /// Field path, e.g. `spec.probes.targets[].minBytes`.
    path: String,
    /// Type as Go-like text, e.g. `[]string`.
    type_: String,
    /// Whether the parent object lists this field as required.
    required: bool,
    /// The schema's default as JSON text, e.g. `"5m"` or `3`.
    default: Option<String>,
    /// One-line description, enum values appended.
    description: String,
}

/// The kind page of `kind` relative to the repository root, e.g. `docs/kinds/strategy.md`.
fn page_name(kind: Kind) -> String {
    format!("docs/kinds/{}.md", kind.as_str().to_ascii_lowercase())
}

/// Where the page of `kind` is on disk.
fn page_path(kind: Kind) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(page_name(kind))
}

/// The `openAPIV3Schema` of `kind`'s served version.
fn open_api_schema(kind: Kind) -> JSONSchemaProps {
    let crd = veil_crds::crd::crd(kind).expect("every Veil kind has a CRD");
    let version = crd.spec.versions.into_iter().next().expect("one version");
    version
        .schema
        .and_then(|s| s.open_api_v3_schema)
        .expect("the version has an openAPIV3Schema")
}

/// The schema of array items, when `schema` is an array with one item schema.
fn items(schema: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match &schema.items {
        Some(JSONSchemaPropsOrArray::Schema(item)) => Some(item),
        _ => None,
    }
}

/// The schema of map values, when `schema` is an object with `additionalProperties`.
fn map_values(schema: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match &schema.additional_properties {
        Some(JSONSchemaPropsOrBool::Schema(value)) => Some(value),
        _ => None,
    }
}

/// The type column: `[]` per array level, `map[string]` per map level, then the scalar type.
fn type_name(schema: &JSONSchemaProps) -> String {
    if let Some(item) = items(schema) {
        return format!("[]{}", type_name(item));
    }
    if let Some(value) = map_values(schema) {
        return format!("map[string]{}", type_name(value));
    }
    if schema.x_kubernetes_int_or_string == Some(true) {
        return "int-or-string".to_owned();
    }
    schema.type_.clone().unwrap_or_else(|| "any".to_owned())
}

/// Renders a JSON value compactly, as `serde_json` writes it (`"5m"`, `3`, `["shell"]`).
fn json_text(value: &JSON) -> String {
    value.0.to_string()
}

/// An enum value as shown in "One of": strings without quotes, others as JSON.
fn enum_value_text(value: &JSON) -> String {
    match &value.0 {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The enum of a field, or of its (innermost) array items.
fn enum_values(schema: &JSONSchemaProps) -> Option<&[JSON]> {
    match &schema.enum_ {
        Some(values) => Some(values),
        None => items(schema).and_then(enum_values),
    }
}

/// Escapes text for a markdown table cell.
fn escape_cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// The description column: the field's description (else its items'), on one
/// line, then " One of `a` \| `b`." when the field or its items are an enum.
fn description(schema: &JSONSchemaProps) -> String {
    let text = schema
        .description
        .as_deref()
        .or_else(|| items(schema).and_then(|i| i.description.as_deref()))
        .unwrap_or_default();
    let mut line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    line = escape_cell(&line);
    if let Some(values) = enum_values(schema) {
        let listed: Vec<String> = values
            .iter()
            .map(|v| format!("`{}`", escape_cell(&enum_value_text(v))))
            .collect();
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&format!("One of {}.", listed.join(" \\| ")));
    }
    line
}

/// The object an object's field defaults add up to: each property's own
/// default (or, for a nested object, what its fields add up to). `None` when
/// no property has a default.
fn implied_default(schema: &JSONSchemaProps) -> Option<serde_json::Value> {
    let fields: serde_json::Map<String, serde_json::Value> = schema
        .properties
        .iter()
        .flatten()
        .filter_map(|(name, field)| {
            let value = match &field.default {
                Some(default) => Some(default.0.clone()),
                None => implied_default(field),
            };
            value.map(|v| (name.clone(), v))
        })
        .collect();
    (!fields.is_empty()).then_some(serde_json::Value::Object(fields))
}

/// The default column: the schema's default, except an object default that
/// only repeats its fields' defaults (those rows already show them).
fn default_text(schema: &JSONSchemaProps) -> Option<String> {
    let default = schema.default.as_ref()?;
    if implied_default(schema).as_ref() == Some(&default.0) {
        return None;
    }
    Some(json_text(default))
}

/// The row of one field.
fn row(path: &str, schema: &JSONSchemaProps, required: bool) -> Row {
    Row {
        path: path.to_owned(),
        type_: type_name(schema),
        required,
        default: default_text(schema),
        description: description(schema),
    }
}

/// Appends rows for the fields nested in `schema` (found at `path`): its
/// properties, its array items' properties (`path[]`) and its map values'
/// properties (`path.*`), each property followed by its own children.
fn push_children(path: &str, schema: &JSONSchemaProps, rows: &mut Vec<Row>) {
    if let Some(item) = items(schema) {
        push_children(&format!("{path}[]"), item, rows);
        return;
    }
    if let Some(value) = map_values(schema) {
        push_children(&format!("{path}.*"), value, rows);
        return;
    }
    let required = schema.required.as_deref().unwrap_or_default();
    for (name, field) in schema.properties.iter().flatten() {
        let field_path = format!("{path}.{name}");
        rows.push(row(&field_path, field, required.contains(name)));
        push_children(&field_path, field, rows);
    }
}

/// Every row under the top-level property `root` (e.g. `spec`) of a kind's schema.
fn rows(schema: &JSONSchemaProps, root: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    if let Some(top) = schema.properties.as_ref().and_then(|p| p.get(root)) {
        push_children(root, top, &mut rows);
    }
    rows
}

/// The markdown table: header, then one line per row.
fn render_table(rows: &[Row]) -> String {
    let mut table = HEADER.to_owned();
    for r in rows {
        let default = r
            .default
            .as_deref()
            .map(|d| format!("`{d}`"))
            .unwrap_or_default();
        let required = if r.required { "yes" } else { "" };
        table.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            r.path,
            r.type_,
            required,
            escape_cell(&default),
            r.description
        ));
    }
    table
}

/// The text between the markers: `(start, end)` byte offsets of the region
/// (after the begin marker's line, up to the end marker).
fn region(page: &str) -> Option<(usize, usize)> {
    let begin = page.find(BEGIN)?;
    let start = begin + page[begin..].find('\n')? + 1;
    let end = start + page[start..].find(END)?;
    Some((start, end))
}

/// The generated region of `kind`'s page: its spec table, set off from the
/// markers by blank lines so that markdown renders the table on its own.
fn generated_region(kind: Kind) -> String {
    let table = render_table(&rows(&open_api_schema(kind), "spec"));
    format!("\n{table}\n")
}

/// The complaint about a page without both markers.
fn missing_markers(kind: Kind) -> String {
    format!(
        "{} has no `{BEGIN}` … `{END}` region around its spec table",
        page_name(kind)
    )
}

/// Compares (or with `update`, rewrites) the region of `kind`'s page; `Err`
/// names the page and the problem.
fn check_page(kind: Kind, update: bool) -> Result<(), String> {
    let path = page_path(kind);
    let io_error = |e: std::io::Error| format!("{}: {e}", page_name(kind));
    let page = std::fs::read_to_string(&path).map_err(io_error)?;
    let (start, end) = region(&page).ok_or_else(|| missing_markers(kind))?;
    let generated = generated_region(kind);
    if page[start..end] == generated {
        return Ok(());
    }
    if update {
        let updated = format!("{}{generated}{}", &page[..start], &page[end..]);
        return std::fs::write(&path, updated).map_err(io_error);
    }
    Err(format!(
        "{}: the spec table differs from the {} CRD schema",
        page_name(kind),
        kind.as_str()
    ))
}

#[test]
fn kind_pages_spec_tables_match_the_crd_schemas() {
    let update = std::env::var("VEIL_UPDATE_DOCS").is_ok_and(|v| v == "1");
    let stale: Vec<String> = Kind::VEIL
        .into_iter()
        .filter_map(|kind| check_page(kind, update).err())
        .collect();
    assert!(
        stale.is_empty(),
        "docs/kinds/ is out of date with crds/src:\n  {}\nrun `VEIL_UPDATE_DOCS=1 cargo test -p veil-crds --test docs_tables` (or `make crds`) and commit the result",
        stale.join("\n  ")
    );
}

#[test]
fn a_nested_schema_renders_paths_types_defaults_and_enums() {
    let schema: JSONSchemaProps = serde_json::from_value(serde_json::json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["mode"],
                "properties": {
                    "mode": {"type": "string", "description": "How.\n  Really.", "enum": ["a", "b"]},
                    "targets": {"type": "array", "description": "Targets.", "items": {
                        "type": "object",
                        "properties": {"tls": {"type": "array", "items": {"type": "string", "enum": ["1.2"]}}}
                    }},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "every": {"type": "string", "default": "5m", "description": "a|b"}
                }
            }
        }
    }))
    .unwrap();
    let table = render_table(&rows(&schema, "spec"));
    let expected = format!(
        "{HEADER}\
         | `spec.every` | string |  | `\"5m\"` | a\\|b |\n\
         | `spec.labels` | map[string]string |  |  |  |\n\
         | `spec.mode` | string | yes |  | How. Really. One of `a` \\| `b`. |\n\
         | `spec.targets` | []object |  |  | Targets. |\n\
         | `spec.targets[].tls` | []string |  |  | One of `1.2`. |\n"
    );
    assert_eq!(table, expected);
}

#[test]
fn an_object_default_is_shown_only_when_its_fields_do_not_imply_it() {
    let schema: JSONSchemaProps = serde_json::from_value(serde_json::json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "implied": {"type": "object", "default": {"n": 1}, "properties": {
                        "n": {"type": "integer", "default": 1}
                    }},
                    "own": {"type": "object", "default": {"n": 2}, "properties": {
                        "n": {"type": "integer", "default": 1}
                    }}
                }
            }
        }
    }))
    .unwrap();
    let defaults: Vec<(String, Option<String>)> = rows(&schema, "spec")
        .into_iter()
        .map(|r| (r.path, r.default))
        .collect();
    let expected = [
        ("spec.implied", None),
        ("spec.implied.n", Some("1")),
        ("spec.own", Some(r#"{"n":2}"#)),
        ("spec.own.n", Some("1")),
    ]
    .map(|(p, d)| (p.to_owned(), d.map(str::to_owned)));
    assert_eq!(defaults, expected);
}

#[test]
fn the_region_lies_between_the_markers() {
    let page = format!("# T\n\n{BEGIN}\nold\n{END}\nafter\n");
    let (start, end) = region(&page).unwrap();
    assert_eq!(&page[start..end], "old\n");
    assert!(region("# no markers\n").is_none());
}
