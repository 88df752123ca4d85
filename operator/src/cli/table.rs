//! kubectl-style tables from printer columns (the same columns the CRDs declare).

use chrono::{DateTime, Utc};
use serde_json::Value;
use veil_crds::kind::Kind;
use veil_crds::printer;

/// Renders `items` of `kind` as an aligned table: `NAMESPACE` (when listing
/// every namespace), `NAME`, then the kind's printer columns; priority-1
/// columns only when `wide`.
pub fn render(
    kind: Kind,
    items: &[Value],
    wide: bool,
    with_namespace: bool,
    now: DateTime<Utc>,
) -> String {
    let columns: Vec<&printer::PrinterColumn> = kind
        .printer_columns()
        .iter()
        .filter(|c| wide || c.priority == 0)
        .collect();
    let mut rows: Vec<Vec<String>> = Vec::with_capacity(items.len() + 1);
    let mut header = Vec::new();
    if with_namespace {
        header.push("NAMESPACE".to_owned());
    }
    header.push("NAME".to_owned());
    header.extend(columns.iter().map(|c| c.name.to_ascii_uppercase()));
    rows.push(header);
    for item in items {
        let mut row = Vec::new();
        if with_namespace {
            row.push(text(item, "/metadata/namespace"));
        }
        row.push(text(item, "/metadata/name"));
        for column in &columns {
            row.push(printer::render_cell(
                column,
                printer::evaluate(column.json_path, item).as_deref(),
                now,
            ));
        }
        rows.push(row);
    }
    align(&rows)
}

fn text(item: &Value, pointer: &str) -> String {
    item.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Left-aligns cells with three spaces between columns, like kubectl.
pub(super) fn align(rows: &[Vec<String>]) -> String {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..width)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths[i] - cell.chars().count() + 3;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_with_three_spaces() {
        let rows = vec![
            vec!["NAME".to_owned(), "READY".to_owned()],
            vec!["a-long-name".to_owned(), "True".to_owned()],
        ];
        assert_eq!(align(&rows), "NAME          READY\na-long-name   True\n");
    }
}
