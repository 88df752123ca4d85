//! Client for xray's gRPC API (HandlerService, StatsService).
//!
//! Owns the conversation with one running xray over its API port on
//! loopback: adding and removing VLESS users of an inbound without a restart,
//! listing them, and reading traffic counters. It knows nothing of
//! assignments or reports; the driver decides what to change and when.
//!
//! It must never put a user's UUID into an error, a log line or a `Debug`
//! output: xray echoes a malformed UUID back in its error text, so every
//! error of an add has the UUID cut out before it leaves this module.
//!
//! Idempotence: adding a user xray already has, and removing one it does not
//! have, both succeed, so a driver can replay a whole user set after a
//! restart or a lost answer without tracking what went through.

mod proto;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt as _;
use http::uri::PathAndQuery;
use tonic::client::Grpc;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;
use veil_crds::protocol_server::VlessFlow;
use veil_crds::wire::SecretValue;

/// How long [`XrayApi::connect`] waits for the TCP connection and the
/// HTTP/2 handshake; on loopback anything slower means xray is not up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one call may take from sending to the answer. xray answers user
/// changes in microseconds; five seconds only passes when it is stuck.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Calls [`XrayApi::apply`] keeps in flight at once over the one HTTP/2
/// connection. Enough to hide the round trip (10,000 adds take well under a
/// second); few enough to stay far below HTTP/2's stream limits and to leave
/// xray's other clients room.
pub const PIPELINE_DEPTH: usize = 128;

/// Largest answer accepted. `GetInboundUsers` returns every user with its
/// account, about 100 bytes each; 64 MiB covers over half a million users,
/// where tonic's default of 4 MiB would stop near 40,000.
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// What replaces a user's UUID in any text that leaves this module.
const REDACTED: &str = "<redacted>";

/// The xray user level Veil gives every user; the config's `policy.levels."0"`
/// turns on per-user counters.
const USER_LEVEL: u32 = 0;

/// One VLESS user as xray's API takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VlessUser {
    /// The key xray knows the user by: unique per inbound, compared without
    /// case, never empty.
    pub email: String,
    /// The user's UUID: a credential (`Debug` shows it redacted).
    pub id: SecretValue,
    pub flow: VlessFlow,
}

impl From<&veil_crds::wire::VlessUser> for VlessUser {
    fn from(user: &veil_crds::wire::VlessUser) -> Self {
        Self {
            email: user.email.clone(),
            id: user.id.clone(),
            flow: user.flow,
        }
    }
}

/// One change to an inbound's user set, for [`XrayApi::apply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserOp {
    /// Add the user; a user with that email already present counts as done.
    Add(VlessUser),
    /// Remove the user with this email; an absent one counts as done.
    Remove { email: String },
}

impl UserOp {
    /// The email the change is about: how results are labelled.
    pub fn email(&self) -> &str {
        match self {
            Self::Add(user) => &user.email,
            Self::Remove { email } => email,
        }
    }

    fn into_email(self) -> String {
        match self {
            Self::Add(user) => user.email,
            Self::Remove { email } => email,
        }
    }
}

/// One user's traffic counters as xray holds them (bytes since xray started
/// or since the last read with `reset`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserCounters {
    pub email: String,
    /// Bytes from the client.
    pub uplink: u64,
    /// Bytes to the client.
    pub downlink: u64,
}

/// Why a call to xray's API failed.
#[derive(Debug, thiserror::Error)]
pub enum XrayApiError {
    /// No HTTP/2 connection to the API could be made within
    /// [`CONNECT_TIMEOUT`]: xray is not running, still starting, or its `api`
    /// section listens elsewhere.
    #[error("cannot connect to xray's API at {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: tonic::transport::Error,
    },
    /// xray did not answer `method` within [`REQUEST_TIMEOUT`].
    #[error("xray's API did not answer {method} within {after:?}")]
    Timeout {
        method: &'static str,
        after: Duration,
    },
    /// The connection broke under `method`: xray stopped or restarted while
    /// the call was on its way, or the connection was already dead. The next
    /// call reconnects.
    #[error("the connection to xray's API broke during {method}: {message}")]
    Transport {
        method: &'static str,
        message: String,
    },
    /// xray ended `method` with an error status (or the client could not
    /// reach it: `Unavailable`). `message` is xray's own text with any UUID
    /// cut out; for a missing inbound it names the tag.
    #[error("xray's API failed {method} ({code:?}): {message}")]
    Rpc {
        method: &'static str,
        code: tonic::Code,
        message: String,
    },
    /// Not sent: an earlier call of the same [`XrayApi::apply`] batch failed
    /// in a way that would fail this one too (xray unreachable or stuck), so
    /// the rest of the batch was dropped rather than each waiting out its
    /// own timeout.
    #[error("not sent to xray's API: an earlier change in the batch found it unreachable")]
    BatchAborted,
    /// Refused before sending: xray removes and counts users by email, so a
    /// user without one could never be removed again.
    #[error("a VLESS user needs a non-empty email")]
    EmptyEmail,
}

impl XrayApiError {
    /// Whether trying again later can succeed without changing anything:
    /// xray unreachable, restarting, overloaded or slow. A permanent error
    /// (a missing inbound, a malformed UUID, an empty email) fails the same
    /// way until the config or the user changes.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. }
            | Self::Timeout { .. }
            | Self::Transport { .. }
            | Self::BatchAborted => true,
            Self::Rpc { code, .. } => matches!(
                code,
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Aborted
                    | tonic::Code::Cancelled
            ),
            Self::EmptyEmail => false,
        }
    }

    /// A stable, low-cardinality name for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "connect",
            Self::Timeout { .. } => "timeout",
            Self::Transport { .. } => "transport",
            Self::Rpc { .. } => "rpc",
            Self::BatchAborted => "batch_aborted",
            Self::EmptyEmail => "empty_email",
        }
    }
}

/// A connection to one xray's API. Cheap to clone: clones share the one
/// HTTP/2 connection, which reconnects by itself after xray restarts.
#[derive(Clone, Debug)]
pub struct XrayApi {
    grpc: Grpc<Channel>,
}

impl XrayApi {
    /// Connects to the API at `addr` (plain HTTP/2; the API listens on
    /// loopback only) and fails with [`XrayApiError::Connect`] when nothing
    /// answers within [`CONNECT_TIMEOUT`].
    pub async fn connect(addr: SocketAddr) -> Result<Self, XrayApiError> {
        let channel = endpoint(addr)?
            .connect()
            .await
            .map_err(|source| XrayApiError::Connect { addr, source })?;
        Ok(Self::over(channel))
    }

    /// A client that connects on its first call (and reconnects whenever
    /// needed); until xray listens, each call fails with a transient error.
    /// Fails only if `addr` cannot form a URI, which no socket address does.
    pub fn connect_lazy(addr: SocketAddr) -> Result<Self, XrayApiError> {
        Ok(Self::over(endpoint(addr)?.connect_lazy()))
    }

    fn over(channel: Channel) -> Self {
        Self {
            grpc: Grpc::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES),
        }
    }

    /// Adds `user` to the inbound tagged `inbound_tag` at level 0. Succeeds
    /// when xray already has a user with that email (its UUID and flow are
    /// then left as they were: to change them, remove the user first).
    pub async fn add_user(&self, inbound_tag: &str, user: &VlessUser) -> Result<(), XrayApiError> {
        if user.email.is_empty() {
            return Err(XrayApiError::EmptyEmail);
        }
        let account = proto::VlessAccount {
            id: user.id.expose().to_owned(),
            flow: user.flow.xray_name().to_owned(),
        };
        let operation = proto::AddUserOperation {
            user: Some(proto::User {
                level: USER_LEVEL,
                email: user.email.clone(),
                account: Some(proto::TypedMessage::pack(
                    proto::type_name::VLESS_ACCOUNT,
                    &account,
                )),
            }),
        };
        let request = alter_inbound(
            inbound_tag,
            proto::type_name::ADD_USER_OPERATION,
            &operation,
        );
        match self
            .call::<_, proto::AlterInboundResponse>(proto::path::ALTER_INBOUND, request)
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if is_user_message(&error, &user.email, "already exists") => Ok(()),
            Err(error) => Err(redact(error, user.id.expose())),
        }
    }

    /// Removes the user with `email` from the inbound tagged `inbound_tag`
    /// (emails compare without case). Succeeds when no such user is there;
    /// a missing inbound is still an error.
    pub async fn remove_user(&self, inbound_tag: &str, email: &str) -> Result<(), XrayApiError> {
        if email.is_empty() {
            return Err(XrayApiError::EmptyEmail);
        }
        let operation = proto::RemoveUserOperation {
            email: email.to_owned(),
        };
        let request = alter_inbound(
            inbound_tag,
            proto::type_name::REMOVE_USER_OPERATION,
            &operation,
        );
        match self
            .call::<_, proto::AlterInboundResponse>(proto::path::ALTER_INBOUND, request)
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if is_user_message(&error, email, "not found") => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Applies `ops` to the inbound tagged `inbound_tag`, up to
    /// [`PIPELINE_DEPTH`] at once over the one connection, and returns each
    /// op's email with its result, in the order of `ops`.
    ///
    /// Ops run concurrently, so two ops on the same email in one batch may
    /// land in either order; the caller passes at most one op per email.
    /// Once one op fails transiently (xray unreachable or stuck), ops not yet
    /// sent fail with [`XrayApiError::BatchAborted`] instead of being sent.
    pub async fn apply(
        &self,
        inbound_tag: &str,
        ops: Vec<UserOp>,
    ) -> Vec<(String, Result<(), XrayApiError>)> {
        let unreachable = std::sync::atomic::AtomicBool::new(false);
        let unreachable = &unreachable;
        futures::stream::iter(ops)
            .map(|op| async move {
                use std::sync::atomic::Ordering::Relaxed;
                let result = if unreachable.load(Relaxed) {
                    Err(XrayApiError::BatchAborted)
                } else {
                    let result = match &op {
                        UserOp::Add(user) => self.add_user(inbound_tag, user).await,
                        UserOp::Remove { email } => self.remove_user(inbound_tag, email).await,
                    };
                    if result.as_ref().is_err_and(XrayApiError::is_transient) {
                        unreachable.store(true, Relaxed);
                    }
                    result
                };
                (op.into_email(), result)
            })
            .buffered(PIPELINE_DEPTH)
            .collect()
            .await
    }

    /// The emails of every user in the inbound tagged `inbound_tag`, in no
    /// particular order, as xray stored them. UUIDs are not read.
    pub async fn inbound_users(&self, inbound_tag: &str) -> Result<Vec<String>, XrayApiError> {
        let request = proto::GetInboundUserRequest {
            tag: inbound_tag.to_owned(),
            email: String::new(),
        };
        let response: proto::GetInboundUserResponse =
            self.call(proto::path::GET_INBOUND_USERS, request).await?;
        Ok(response.users.into_iter().map(|user| user.email).collect())
    }

    /// How many users the inbound tagged `inbound_tag` has (users without an
    /// email are not counted by xray).
    pub async fn inbound_users_count(&self, inbound_tag: &str) -> Result<u64, XrayApiError> {
        let request = proto::GetInboundUserRequest {
            tag: inbound_tag.to_owned(),
            email: String::new(),
        };
        let response: proto::GetInboundUsersCountResponse = self
            .call(proto::path::GET_INBOUND_USERS_COUNT, request)
            .await?;
        Ok(u64::try_from(response.count).unwrap_or(0))
    }

    /// Every counter whose name contains `pattern` (empty: all), with its
    /// value; with `reset`, each is set to zero as it is read, so no byte is
    /// counted twice by successive resetting reads. Counters exist only for
    /// what the config enables (`stats`, `policy`) and appear on first use.
    pub async fn query_stats(
        &self,
        pattern: &str,
        reset: bool,
    ) -> Result<Vec<(String, i64)>, XrayApiError> {
        let request = proto::QueryStatsRequest {
            pattern: pattern.to_owned(),
            reset,
        };
        let response: proto::QueryStatsResponse =
            self.call(proto::path::QUERY_STATS, request).await?;
        Ok(response
            .stat
            .into_iter()
            .map(|stat| (stat.name, stat.value))
            .collect())
    }

    /// Per-user traffic, one entry per user with any counter, sorted by
    /// email; with `reset` the counters restart from zero (see
    /// [`query_stats`](Self::query_stats)).
    pub async fn user_traffic(&self, reset: bool) -> Result<Vec<UserCounters>, XrayApiError> {
        let stats = self.query_stats(USER_STAT_PREFIX, reset).await?;
        Ok(user_counters(stats))
    }

    /// The traffic of `emails` only, one query per user: xray matches a
    /// pattern as a substring of counter names, and
    /// `user>>>EMAIL>>>traffic>>>` names exactly that user's two counters
    /// (an email cannot contain `>>>`). Cheaper than [`Self::user_traffic`]
    /// for a few users among many.
    pub async fn traffic_of(
        &self,
        emails: &[String],
        reset: bool,
    ) -> Result<Vec<UserCounters>, XrayApiError> {
        let mut stats = Vec::new();
        for email in emails {
            let pattern = format!("{USER_STAT_PREFIX}{email}>>>traffic>>>");
            stats.extend(self.query_stats(&pattern, reset).await?);
        }
        Ok(user_counters(stats))
    }

    /// Emails of the users with at least one open connection. xray tracks
    /// this only with `statsUserOnline` on in the user's policy level;
    /// otherwise the list is empty.
    pub async fn online_users(&self) -> Result<Vec<String>, XrayApiError> {
        let response: proto::GetAllOnlineUsersResponse = self
            .call(
                proto::path::GET_ALL_ONLINE_USERS,
                proto::GetAllOnlineUsersRequest {},
            )
            .await?;
        Ok(response
            .users
            .iter()
            .filter_map(|name| online_user_email(name))
            .map(str::to_owned)
            .collect())
    }

    /// One unary call with [`REQUEST_TIMEOUT`], told to xray as a deadline
    /// too so it can drop work nobody waits for.
    async fn call<Req, Resp>(
        &self,
        method: &'static str,
        message: Req,
    ) -> Result<Resp, XrayApiError>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = self.grpc.clone();
        let mut request = tonic::Request::new(message);
        request.set_timeout(REQUEST_TIMEOUT);
        let exchange = async move {
            grpc.ready().await.map_err(|error| {
                tonic::Status::unavailable(format!("connection to xray's API: {error}"))
            })?;
            grpc.unary(
                request,
                PathAndQuery::from_static(method),
                ProstCodec::<Req, Resp>::default(),
            )
            .await
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) if broke_in_transport(&status) => Err(XrayApiError::Transport {
                method,
                message: status.message().to_owned(),
            }),
            Ok(Err(status)) => Err(XrayApiError::Rpc {
                method,
                code: status.code(),
                message: status.message().to_owned(),
            }),
            Err(_elapsed) => Err(XrayApiError::Timeout {
                method,
                after: REQUEST_TIMEOUT,
            }),
        }
    }
}

/// Whether `status` was made on this side from an I/O or connection failure
/// rather than sent by xray. tonic reports a connection that died under a
/// call as `Unknown`, the code xray also uses for all its own refusals; only
/// the local error attached as the source tells the two apart.
fn broke_in_transport(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::transport::Error>() || error.is::<std::io::Error>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// The API's address as an endpoint: plain HTTP/2 (xray's API has no TLS).
fn endpoint(addr: SocketAddr) -> Result<Endpoint, XrayApiError> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map(|endpoint| endpoint.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true))
        .map_err(|source| XrayApiError::Connect { addr, source })
}

fn alter_inbound(
    inbound_tag: &str,
    type_name: &str,
    operation: &impl prost::Message,
) -> proto::AlterInboundRequest {
    proto::AlterInboundRequest {
        tag: inbound_tag.to_owned(),
        operation: Some(proto::TypedMessage::pack(type_name, operation)),
    }
}

/// Whether xray answered with its per-user message, `User EMAIL already
/// exists.` or `User EMAIL not found.` (wrapped in its error chain). Anchoring
/// on the email keeps `handler not found: TAG` (a missing inbound) an error.
fn is_user_message(error: &XrayApiError, email: &str, outcome: &str) -> bool {
    let XrayApiError::Rpc { code, message, .. } = error else {
        return false;
    };
    *code == tonic::Code::Unknown
        && message
            .to_lowercase()
            .contains(&format!("user {} {outcome}", email.to_lowercase()))
}

/// Cuts `secret` out of xray's message.
fn redact(error: XrayApiError, secret: &str) -> XrayApiError {
    match error {
        XrayApiError::Rpc {
            method,
            code,
            message,
        } if !secret.is_empty() => XrayApiError::Rpc {
            method,
            code,
            message: message.replace(secret, REDACTED),
        },
        other => other,
    }
}

/// Counter names are `user>>>EMAIL>>>traffic>>>uplink|downlink` and
/// `user>>>EMAIL>>>online`.
const USER_STAT_PREFIX: &str = "user>>>";
const UPLINK_SUFFIX: &str = ">>>traffic>>>uplink";
const DOWNLINK_SUFFIX: &str = ">>>traffic>>>downlink";
const ONLINE_SUFFIX: &str = ">>>online";

/// Folds user traffic counters into one entry per email, sorted by email;
/// other counters are ignored. The email is whatever lies between the fixed
/// prefix and suffix, so emails with `.`, `@` or even `>>>` survive.
fn user_counters(stats: impl IntoIterator<Item = (String, i64)>) -> Vec<UserCounters> {
    let mut by_email: BTreeMap<String, UserCounters> = BTreeMap::new();
    for (name, value) in stats {
        let Some(rest) = name.strip_prefix(USER_STAT_PREFIX) else {
            continue;
        };
        let (email, uplink) = if let Some(email) = rest.strip_suffix(UPLINK_SUFFIX) {
            (email, true)
        } else if let Some(email) = rest.strip_suffix(DOWNLINK_SUFFIX) {
            (email, false)
        } else {
            continue;
        };
        // Counters only grow; a negative value would be xray's bug, read as nothing.
        let value = u64::try_from(value).unwrap_or(0);
        let entry = by_email
            .entry(email.to_owned())
            .or_insert_with(|| UserCounters {
                email: email.to_owned(),
                ..UserCounters::default()
            });
        if uplink {
            entry.uplink += value;
        } else {
            entry.downlink += value;
        }
    }
    by_email.into_values().collect()
}

/// The email in an online-map name, `user>>>EMAIL>>>online`.
fn online_user_email(name: &str) -> Option<&str> {
    name.strip_prefix(USER_STAT_PREFIX)?
        .strip_suffix(ONLINE_SUFFIX)
}
