//! Judging a Strategy by its probes and choosing which member of a failover
//! group is active (design §4d). Apart from [`probe`], [`prober`] and
//! [`saved`], pure: no clock,
//! process, socket or file is touched here — time comes in as an argument,
//! probe results come in as values, and decisions go out as
//! [`failover::Action`]s for the caller to carry out. That keeps every rule
//! testable in memory, table-style.
//!
//! - [`FailPhase`]: the stable names of where a probe failed;
//! - [`score`]: one probe round → its score and the score's parts;
//! - [`evaluation`]: worst of the last `passes` rounds, the baseline taken
//!   right after activation, whether a round failed, `NeverWorked`;
//! - [`probe`]: the probe runner (sockets and the clock): it takes
//!   samples for [`score`];
//! - [`failover`]: the per-group state machine (threshold, hysteresis,
//!   testing candidates one at a time, returning to the primary), whose
//!   state is serialisable so it survives an agent restart;
//! - [`watch`]: one group's rounds scored and fed to its state machine,
//!   and the report the node sends;
//! - [`prober`] and [`saved`]: the agent side — one probe loop per group
//!   that carries out the actions on the engines, and the state files
//!   that survive a restart.

pub mod evaluation;
mod fail_phase;
pub mod failover;
pub mod probe;
pub mod prober;
pub mod saved;
pub mod score;
pub mod watch;

pub use evaluation::{Baseline, Verdict};
pub use fail_phase::FailPhase;
pub use failover::{Action, Event, FailoverConfig, FailoverReport, FailoverState};
pub use score::{RoundScore, Sample, score_round};
pub use watch::GroupWatch;
