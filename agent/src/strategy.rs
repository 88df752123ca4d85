//! Judging a Strategy by its probes and choosing which member of a failover
//! group is active (design §4d). Apart from [`probe`], pure: no clock,
//! process, socket or file is touched here — time comes in as an argument,
//! probe results come in as values, and decisions go out as
//! [`failover::Action`]s for the caller to carry out. That keeps every rule
//! testable in memory, table-style.
//!
//! - [`FailPhase`]: the stable names of where a probe failed;
//! - [`score`]: one probe round → its score and the score's parts;
//! - [`evaluation`]: worst of the last `passes` rounds, the baseline taken
//!   right after activation, whether a round failed, `NeverWorked`;
//! - [`probe`]: the probe runner — the one part here that touches sockets
//!   and the clock: it takes samples for [`score`];
//! - [`failover`]: the per-group state machine (threshold, hysteresis,
//!   testing candidates one at a time, returning to the primary), whose
//!   state is serialisable so it survives an agent restart;
//! - [`watch`]: the active member's score, baseline and failed rounds as
//!   the node reports them (what runs today, before failover is wired).
//!
//! Not here: scheduling probe rounds, starting candidate engines,
//! persisting the state, reporting it. Those belong to the agent runtime.

pub mod evaluation;
mod fail_phase;
pub mod failover;
pub mod probe;
pub mod prober;
pub mod score;
pub mod watch;

pub use evaluation::{Baseline, Verdict};
pub use fail_phase::FailPhase;
pub use failover::{Action, Event, FailoverConfig, FailoverReport, FailoverState};
pub use score::{RoundScore, Sample, score_round};
pub use watch::ActiveWatch;
