//! HTTP client for the agent protocol (design §5): register, long-poll the
//! assignment, post reports. Retries and pacing belong to the caller.
//!
//! The node token is sent as a bearer token and never logged, and only
//! over a connection [`crate::trust`] accepts.

use std::time::Duration;

use crate::token_file::NodeToken;
use crate::trust::{Trust, TrustError};
use veil_crds::wire::{
    AGENT_PATH, Assignment, AssignmentUpdate, NodeReport, RegisterRequest, RegisterResponse,
    ReportAck,
};

/// Why a call to the operator failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Network trouble or the operator is away: retry with backoff.
    /// Also a TLS refusal (pin mismatch): the message says why.
    #[error("operator unreachable: {}", crate::trust::error_chain(.0))]
    Unreachable(#[source] reqwest::Error),
    /// 401: the token is missing, wrong or revoked. Retrying will not help.
    #[error("the operator rejected the node token (401): {0}")]
    Unauthorized(String),
    /// 403: the token belongs to another node.
    #[error("the token is for another node (403): {0}")]
    Forbidden(String),
    /// 409: the operator forgot this agent (it restarted): register again.
    #[error("the operator asks to register again: {0}")]
    RegisterAgain(String),
    /// Any other answer.
    #[error("the operator answered {status}: {message}")]
    Status { status: u16, message: String },
}

impl ClientError {
    /// Whether retrying later can succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable(_) | ClientError::RegisterAgain(_) => true,
            ClientError::Status { status, .. } => *status >= 500 || *status == 429,
            ClientError::Unauthorized(_) | ClientError::Forbidden(_) => false,
        }
    }

    /// Whether the operator refused a *report* for good, for what it
    /// carries: 400, 413, 422, or 403 (the token was accepted at
    /// registration, so a 403 names something in the report that is not
    /// this node's). Sending it again would be refused again, so it must
    /// not block the reports behind it. 401 is not one: the token itself
    /// is refused, and every report waits for a valid one.
    pub fn is_refusal(&self) -> bool {
        match self {
            ClientError::Forbidden(_) => true,
            ClientError::Status { status, .. } => matches!(status, 400 | 413 | 422),
            _ => false,
        }
    }
}

/// A connection to one operator.
#[derive(Clone)]
pub struct OperatorClient {
    base: String,
    token: NodeToken,
    http: reqwest::Client,
}

impl std::fmt::Debug for OperatorClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl OperatorClient {
    /// `base` like `https://10.0.0.1:7070`; `token` as read from the token
    /// file. Refuses before connecting a URL that `trust` does not allow
    /// ([`crate::trust::check_url`]).
    pub fn new(
        base: &str,
        token: &str,
        trust: &Trust,
        insecure_plaintext: bool,
    ) -> Result<OperatorClient, TrustError> {
        crate::trust::check_url(base, trust, insecure_plaintext)?;
        let http = trust
            .http_client(reqwest::Client::builder().connect_timeout(Duration::from_secs(5)))?;
        Ok(OperatorClient {
            base: format!("{}{AGENT_PATH}", base.trim_end_matches('/')),
            token: NodeToken::fixed(token),
            http,
        })
    }

    /// The same client, sending the current content of `token` instead
    /// (a token file that may be rotated).
    pub fn with_token(self, token: NodeToken) -> OperatorClient {
        OperatorClient { token, ..self }
    }

    /// `POST register`.
    pub async fn register(
        &self,
        request: &RegisterRequest,
    ) -> Result<RegisterResponse, ClientError> {
        let response = self
            .http
            .post(format!("{}/register", self.base))
            .bearer_auth(self.token.current())
            .timeout(Duration::from_secs(15))
            .json(request)
            .send()
            .await
            .map_err(ClientError::Unreachable)?;
        decode(response).await
    }

    /// `GET assignment?after=REV&delta=true`: the deltas from revision
    /// `after` or the whole state (an operator that predates deltas answers
    /// with the plain assignment, taken as the whole state); `Ok(None)`
    /// when nothing newer came within the long-poll.
    pub async fn assignment(
        &self,
        after: u64,
        wait: Duration,
    ) -> Result<Option<AssignmentUpdate>, ClientError> {
        let response = self
            .http
            .get(format!("{}/assignment", self.base))
            .query(&[
                ("after", after.to_string()),
                ("wait", wait.as_secs().to_string()),
                ("delta", "true".to_owned()),
            ])
            .bearer_auth(self.token.current())
            .timeout(wait + Duration::from_secs(10))
            .send()
            .await
            .map_err(ClientError::Unreachable)?;
        if response.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let answer: Answer = decode(response).await?;
        Ok(Some(match answer {
            Answer::Update(update) => update,
            Answer::Plain(assignment) => AssignmentUpdate::Full(assignment),
        }))
    }

    /// `POST report`.
    pub async fn report(&self, report: &NodeReport) -> Result<ReportAck, ClientError> {
        let response = self
            .http
            .post(format!("{}/report", self.base))
            .bearer_auth(self.token.current())
            .timeout(Duration::from_secs(15))
            .json(report)
            .send()
            .await
            .map_err(ClientError::Unreachable)?;
        decode(response).await
    }
}

/// An assignment answer from an operator with or without deltas.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Answer {
    Update(AssignmentUpdate),
    Plain(Assignment),
}

async fn decode<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> Result<T, ClientError> {
    let status = response.status();
    if status.is_success() {
        return response.json().await.map_err(ClientError::Unreachable);
    }
    let message = response
        .json::<serde_json::Value>()
        .await
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| status.to_string());
    Err(match status.as_u16() {
        401 => ClientError::Unauthorized(message),
        403 => ClientError::Forbidden(message),
        409 => ClientError::RegisterAgain(message),
        code => ClientError::Status {
            status: code,
            message,
        },
    })
}
