//! `veil-operator validate PATH…`: offline check of YAML files or directories.

use std::path::{Path, PathBuf};

use crate::source::dir::{DirOptions, DirSource};

use super::CliError;

/// Arguments of `validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Files or directories to check (directories are read like `run --source dir:`).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// Prints every error as `file:line:column: object: field: message` and
/// fails when there is any; prints a one-line summary otherwise.
pub fn validate(args: &ValidateArgs) -> Result<(), CliError> {
    let mut objects = 0;
    let mut errors = 0;
    for path in &args.paths {
        if path.is_file() {
            match validate_file(path) {
                Ok(count) => objects += count,
                Err(lines) => {
                    errors += lines.len();
                    lines.iter().for_each(|line| println!("{line}"));
                }
            }
            continue;
        }
        let snapshot = DirSource::new(path.clone(), DirOptions::default()).reload();
        objects += snapshot.objects.len();
        for error in &snapshot.errors {
            errors += 1;
            println!("{}", located(path, error));
        }
    }
    if errors > 0 {
        return Err(CliError::Invalid(errors));
    }
    println!("{objects} object(s) valid");
    Ok(())
}

/// Parses one file; `Err` holds one printable line per error.
fn validate_file(path: &Path) -> Result<usize, Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("{}: cannot read: {e}", path.display())])?;
    let limits = veil_crds::document::Limits::default();
    veil_crds::document::parse_documents(&text, "default", &limits)
        .map(|objects| objects.len())
        .map_err(|errors| {
            errors
                .iter()
                .map(|e| format!("{}:{}:{}: {}", path.display(), e.line, e.column, Bare(e)))
                .collect()
        })
}

/// A document error without its `line …, column …:` prefix.
struct Bare<'a>(&'a veil_crds::document::DocumentError);

impl std::fmt::Display for Bare<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = self.0;
        if let Some(object) = &e.object {
            write!(f, "{object}: ")?;
        }
        if !e.path.is_empty() {
            write!(f, "{}: ", e.path)?;
        }
        f.write_str(&e.message)
    }
}

fn located(root: &Path, error: &crate::source::SourceError) -> String {
    match &error.file {
        Some(file) if root.is_dir() => {
            let mut e = error.clone();
            e.file = Some(root.join(file));
            e.to_string()
        }
        _ => error.to_string(),
    }
}
