//! The honest status of kinds whose reconcilers do not exist yet:
//! `Stalled=True` with reason `NotImplemented`, `Ready=False` (no
//! `Reconciling` condition: kstatus reads its absence as "not reconciling").

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use veil_crds::kind::Kind;

use super::conditions::{ConditionUpdate, set_conditions};

/// Reason on every condition of a kind without a reconciler.
pub const REASON: &str = "NotImplemented";

/// Status for an object of `kind` at `generation`.
pub fn status(
    kind: Kind,
    generation: Option<i64>,
    previous: Option<&Value>,
    now: DateTime<Utc>,
) -> Value {
    let message = format!("{kind} objects are accepted and stored but not reconciled yet");
    let mut status = Map::new();
    if let Some(generation) = generation {
        status.insert("observedGeneration".into(), generation.into());
    }
    set_conditions(
        &mut status,
        previous,
        &[
            ConditionUpdate {
                type_: "Ready",
                status: "False",
                reason: REASON,
                message: &message,
            },
            ConditionUpdate {
                type_: "Stalled",
                status: "True",
                reason: REASON,
                message: &message,
            },
        ],
        generation,
        now,
    );
    Value::Object(status)
}
