//! Client for xray's gRPC API (HandlerService, StatsService).
