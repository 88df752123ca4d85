//! Flags of `run --source kube` that say which pod ServiceAccount tokens
//! identify agents (docs/kubernetes.md, "Agent identity").

use crate::node_tokens::review::{
    DEFAULT_AGENT_AUDIENCE, DEFAULT_AGENT_SERVICE_ACCOUNT, ReviewConfig, ServiceAccountRef,
    TokenReviewer,
};

/// Which projected ServiceAccount tokens agents may authenticate with.
#[derive(Clone, Debug, clap::Args)]
pub struct AgentIdentityArgs {
    /// With `--source kube`: the audience agent pod tokens must be issued
    /// for (the DaemonSet's projected `serviceAccountToken.audience`).
    #[arg(long, env = "VEIL_AGENT_AUDIENCE", default_value = DEFAULT_AGENT_AUDIENCE)]
    pub agent_audience: String,
    /// With `--source kube`: the agent DaemonSet's ServiceAccount,
    /// `NAME` (in the operator's namespace) or `NAMESPACE:NAME`; tokens of
    /// any other account identify no agent.
    #[arg(long, env = "VEIL_AGENT_SERVICE_ACCOUNT", default_value = DEFAULT_AGENT_SERVICE_ACCOUNT)]
    pub agent_service_account: String,
}

impl Default for AgentIdentityArgs {
    fn default() -> AgentIdentityArgs {
        AgentIdentityArgs {
            agent_audience: DEFAULT_AGENT_AUDIENCE.to_owned(),
            agent_service_account: DEFAULT_AGENT_SERVICE_ACCOUNT.to_owned(),
        }
    }
}

impl AgentIdentityArgs {
    /// The reviewer for these flags; a bare account name lives in
    /// `operator_namespace`.
    pub fn reviewer(&self, client: kube::Client, operator_namespace: &str) -> TokenReviewer {
        let config = ReviewConfig {
            audience: self.agent_audience.clone(),
            service_account: ServiceAccountRef::parse(
                &self.agent_service_account,
                operator_namespace,
            ),
        };
        tracing::info!(audience = %config.audience, service_account = %config.service_account.user_name(), "agents may authenticate with their pod's ServiceAccount token (TokenReview)");
        TokenReviewer::new(client, config)
    }
}
