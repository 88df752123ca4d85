//! `veil-operator logs taskrun NAME [-f]`: a task run's full output.

use std::time::Duration;

use serde_json::Value;

use super::get::{Connection, GetError};

/// Arguments of `logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Kind: only `taskrun` (or `taskruns`, `tr`) has logs.
    pub kind: String,
    /// The TaskRun's name.
    pub name: String,
    /// Namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Keep printing new output until the run finishes.
    #[arg(short, long)]
    pub follow: bool,
    #[command(flatten)]
    pub connection: Connection,
}

/// Prints the log; with `--follow`, polls until the run has finished.
pub async fn logs(args: LogsArgs) -> Result<(), GetError> {
    if !matches!(
        veil_crds::kind::Kind::from_cli_name(&args.kind),
        Some(veil_crds::kind::Kind::TaskRun)
    ) {
        return Err(GetError::UnknownKind(
            args.kind.clone(),
            "taskrun".to_owned(),
        ));
    }
    let mut after = 0i64;
    loop {
        let body = args
            .connection
            .request(&format!(
                "/v1/logs/taskruns/{}/{}?after={after}",
                args.namespace, args.name
            ))
            .await?;
        for chunk in body["chunks"].as_array().into_iter().flatten() {
            print!("{}", chunk["text"].as_str().unwrap_or_default());
            after = chunk["seq"].as_i64().unwrap_or(after);
        }
        if !args.follow || body["finished"] == Value::Bool(true) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
