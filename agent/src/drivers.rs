//! Drivers: the parts of the agent that turn an assignment into real
//! processes on this node (design §6). Each driver runs its processes through
//! the [supervisor](crate::supervisor) and reports what it observed; none of
//! them talks to the operator itself.

pub mod task;
pub mod vless_client;
pub mod xray;
pub mod zapret;
