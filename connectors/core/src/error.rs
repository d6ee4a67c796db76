use std::time::Duration;

/// What went wrong talking to an ITSM, phrased as what the caller does next.
///
/// Messages never contain credentials or tokens.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// Credentials were refused (401) or lack a permission (403). Fatal until an admin acts.
    #[error("connector {connector}: {message}")]
    Unauthorized {
        /// The connector instance id.
        connector: String,
        /// What the ITSM said, without secrets.
        message: String,
    },
    /// The ITSM throttled us; wait at least `retry_after` before the next call.
    #[error("connector {connector}: rate limited, retry after {retry_after:?}")]
    RateLimited {
        /// The connector instance id.
        connector: String,
        /// From `Retry-After` (or a default when the header is absent).
        retry_after: Duration,
    },
    /// The record does not exist or is hidden by an ACL.
    #[error("connector {connector}: not found: {message}")]
    NotFound {
        /// The connector instance id.
        connector: String,
        /// What the ITSM said.
        message: String,
    },
    /// A timeout, a refused connection or a 5xx: worth retrying later.
    #[error("connector {connector}: transient failure: {message}")]
    Transient {
        /// The connector instance id.
        connector: String,
        /// What happened.
        message: String,
    },
    /// The request or the answer is wrong in a way a retry will not fix (4xx, malformed body).
    #[error("connector {connector}: {message}")]
    Permanent {
        /// The connector instance id.
        connector: String,
        /// What happened.
        message: String,
    },
    /// The connector's configuration is unusable.
    #[error("connector {connector}: configuration: {message}")]
    Config {
        /// The connector instance id.
        connector: String,
        /// Which key is wrong and why.
        message: String,
    },
}

impl ConnectorError {
    /// `Ok` when configuration validation found nothing; otherwise one [`ConnectorError::Config`]
    /// listing every problem, so an admin fixes them all in one go.
    pub fn config_problems(connector: &str, problems: Vec<String>) -> Result<(), Self> {
        if problems.is_empty() {
            return Ok(());
        }
        Err(Self::Config {
            connector: connector.to_owned(),
            message: problems.join("; "),
        })
    }

    /// Whether the same call may succeed if made again later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Transient { .. })
    }

    /// The least time to wait before retrying, when the ITSM said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}
