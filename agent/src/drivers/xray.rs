//! The xray driver: runs xray for `protocol: vless` servers and keeps its
//! users in step with the assignment through xray's gRPC API, without
//! restarting it (design §4, §6).

pub mod api;
