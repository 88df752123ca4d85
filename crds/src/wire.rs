//! Messages between `veil-operator` and `veil-agent` (design §5).
//!
//! The operator↔agent protocol types — `Assignment` (a node's whole desired
//! state with a monotonic revision) and `NodeReport` (applied revision,
//! per-workload state, traffic deltas, task-run updates and log chunks, each
//! with a sequence number) — will live here (issue 4). No types yet: nothing
//! crosses that boundary before the agent protocol exists.
