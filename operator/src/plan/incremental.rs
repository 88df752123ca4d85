//! Incremental planning: a [`Planner`] keeps what the last pass computed
//! and recomputes only what the changes since reach. Its plan equals
//! [`super::plan`]'s (the reference) for the same inputs: the property
//! test in `tests/incremental.rs` checks that after every step of random
//! histories.
//!
//! Today the VlessKeys, by far the most numerous objects, are planned
//! incrementally (see [`super::vless::KeyCache`] for what marks a key);
//! the other kinds are planned whole each pass.

use super::{Plan, PlanInputs, plan_with, vless};

/// The planner the controller keeps from pass to pass.
#[derive(Default)]
pub struct Planner {
    keys: vless::KeyCache,
}

impl Planner {
    /// Plans `inputs`; the same plan as [`super::plan`] gives.
    pub fn step(&mut self, inputs: &PlanInputs<'_>) -> Plan {
        plan_with(inputs, Some(&mut self.keys))
    }
}
