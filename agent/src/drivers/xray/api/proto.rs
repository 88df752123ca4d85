//! Hand-written protobuf messages for the parts of xray's API that Veil uses.
//!
//! Each struct holds only the fields we read or write; prost skips every
//! other field on decode, so a user's account (which carries the UUID) is
//! never decoded from xray's answers. Field numbers and full names follow
//! xray-core v1.260327.0; a change there shows up as a failing test against
//! the real binary, not as a silent mismatch.

/// Full protobuf names that xray resolves a `TypedMessage` by.
pub mod type_name {
    pub const ADD_USER_OPERATION: &str = "xray.app.proxyman.command.AddUserOperation";
    pub const REMOVE_USER_OPERATION: &str = "xray.app.proxyman.command.RemoveUserOperation";
    pub const VLESS_ACCOUNT: &str = "xray.proxy.vless.Account";
}

/// gRPC method paths (`/package.Service/Method`).
pub mod path {
    pub const ALTER_INBOUND: &str = "/xray.app.proxyman.command.HandlerService/AlterInbound";
    pub const GET_INBOUND_USERS: &str = "/xray.app.proxyman.command.HandlerService/GetInboundUsers";
    pub const GET_INBOUND_USERS_COUNT: &str =
        "/xray.app.proxyman.command.HandlerService/GetInboundUsersCount";
    pub const QUERY_STATS: &str = "/xray.app.stats.command.StatsService/QueryStats";
    pub const GET_ALL_ONLINE_USERS: &str = "/xray.app.stats.command.StatsService/GetAllOnlineUsers";
}

/// A message packed with its type name, so xray can pick the operation or
/// account kind at run time.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypedMessage {
    #[prost(string, tag = "1")]
    pub r#type: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

impl TypedMessage {
    /// Packs `message` under its full protobuf name.
    pub fn pack(type_name: &str, message: &impl prost::Message) -> Self {
        Self {
            r#type: type_name.to_owned(),
            value: message.encode_to_vec(),
        }
    }
}

/// A user of any proxy protocol; `account` holds the protocol's own account.
#[derive(Clone, PartialEq, prost::Message)]
pub struct User {
    #[prost(uint32, tag = "1")]
    pub level: u32,
    #[prost(string, tag = "2")]
    pub email: String,
    #[prost(message, optional, tag = "3")]
    pub account: Option<TypedMessage>,
}

/// A user as read back from xray: the account (and so the UUID) is left out.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UserSummary {
    #[prost(string, tag = "2")]
    pub email: String,
}

/// The VLESS account of one user.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VlessAccount {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub flow: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AddUserOperation {
    #[prost(message, optional, tag = "1")]
    pub user: Option<User>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RemoveUserOperation {
    #[prost(string, tag = "1")]
    pub email: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AlterInboundRequest {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(message, optional, tag = "2")]
    pub operation: Option<TypedMessage>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AlterInboundResponse {}

/// An empty `email` asks for every user of the inbound.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetInboundUserRequest {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(string, tag = "2")]
    pub email: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetInboundUserResponse {
    #[prost(message, repeated, tag = "1")]
    pub users: Vec<UserSummary>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetInboundUsersCountResponse {
    #[prost(int64, tag = "1")]
    pub count: i64,
}

/// `pattern` is a substring match on counter names; empty matches all.
#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryStatsRequest {
    #[prost(string, tag = "1")]
    pub pattern: String,
    #[prost(bool, tag = "2")]
    pub reset: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Stat {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int64, tag = "2")]
    pub value: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryStatsResponse {
    #[prost(message, repeated, tag = "1")]
    pub stat: Vec<Stat>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetAllOnlineUsersRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetAllOnlineUsersResponse {
    #[prost(string, repeated, tag = "1")]
    pub users: Vec<String>,
}
