//! `[server]`: the HTTP API's address, who may use it, and its limits.
//!
//! The API can start cameras, so it is a way into the host. A `listen` address off loopback
//! needs a token unless the owner opts out in so many words (`allow_unauthenticated`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// `[server]`: the HTTP API.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Default `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Bearer token required by every `/api/*` route. Default: none. At most one of `token`,
    /// `token_env` and `token_file` may be set.
    #[serde(default)]
    pub token: Option<String>,
    /// The name of an environment variable holding the token, so it need not sit in this file.
    #[serde(default)]
    pub token_env: Option<String>,
    /// A file holding the token (trailing whitespace ignored), e.g. a Docker or Kubernetes secret.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Serve the API off loopback without a token. Default false: vigil refuses to start.
    #[serde(default)]
    pub allow_unauthenticated: bool,
    /// Serve `/metrics` without the token. Default false.
    #[serde(default)]
    pub public_metrics: bool,
    /// Accept `file://` camera URLs through the API (they read files on this host). Default false.
    #[serde(default)]
    pub api_file_sources: bool,
    /// Most live event streams (SSE) open at once; more get 503. Default 32.
    #[serde(default = "default_sse_clients")]
    pub max_sse_clients: usize,
    /// Longest an API request may take before it is answered 503, seconds. Default 30.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: f64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            token: None,
            token_env: None,
            token_file: None,
            allow_unauthenticated: false,
            public_metrics: false,
            api_file_sources: false,
            max_sse_clients: default_sse_clients(),
            request_timeout_secs: default_request_timeout(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_sse_clients() -> usize {
    32
}
fn default_request_timeout() -> f64 {
    30.0
}

/// The API's bearer token. Only its SHA-256 is kept, and requests are compared against it in
/// constant time, so neither the token's bytes nor its length show in timing.
#[derive(Clone)]
pub struct ApiToken([u8; 32]);

impl ApiToken {
    /// The token `secret`.
    pub fn new(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    /// Whether `given` is the token.
    pub fn matches(&self, given: &str) -> bool {
        let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        self.0.ct_eq(&given).into()
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(***)")
    }
}

impl ServerConfig {
    /// The address to listen on (checked by [`ServerConfig::validate`]).
    pub fn addr(&self) -> Result<SocketAddr, String> {
        self.listen.parse().map_err(|e| format!("not an address: {e}"))
    }

    /// The token from `token`, `token_env` or `token_file`, or `None` if none is set. The reason
    /// of an error never holds the token.
    pub fn token(&self) -> Result<Option<ApiToken>, (&'static str, String)> {
        let secret = match (&self.token, &self.token_env, &self.token_file) {
            (None, None, None) => return Ok(None),
            (Some(t), None, None) => t.clone(),
            (None, Some(var), None) => std::env::var(var)
                .map_err(|_| ("token_env", format!("environment variable `{var}` is not set (or not UTF-8)")))?,
            (None, None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| ("token_file", format!("cannot read {}: {e}", path.display())))?
                .trim_end()
                .to_string(),
            _ => return Err(("token", "set only one of token, token_env and token_file".into())),
        };
        if secret.trim().is_empty() {
            return Err(("token", "the token is empty".into()));
        }
        Ok(Some(ApiToken::new(&secret)))
    }

    /// Checks the section; on error returns the offending key and the reason. The token's
    /// variable or file is only read at start ([`ServerConfig::token`]): it may exist only where
    /// vigil runs (a container's secret), not where the file is checked.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let addr = self.addr().map_err(|r| ("listen", r))?;
        let sources = [self.token.is_some(), self.token_env.is_some(), self.token_file.is_some()];
        if sources.iter().filter(|s| **s).count() > 1 {
            return Err(("token", "set only one of token, token_env and token_file".into()));
        }
        if !sources.contains(&true) && !addr.ip().is_loopback() && !self.allow_unauthenticated {
            return Err((
                "listen",
                format!(
                    "{addr} is reachable from other hosts, and the API can start cameras: set [server] token, \
                     token_env or token_file, or allow_unauthenticated = true to serve it to anyone"
                ),
            ));
        }
        if !(1..=10_000).contains(&self.max_sse_clients) {
            return Err(("max_sse_clients", "must be 1..=10000".into()));
        }
        if !(self.request_timeout_secs > 0.0 && self.request_timeout_secs <= 3600.0) {
            return Err(("request_timeout_secs", "must be in (0, 3600]".into()));
        }
        Ok(())
    }

    /// [`ServerConfig::request_timeout_secs`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.request_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_compares_by_value() {
        let t = ApiToken::new("s3cret-token");
        assert!(t.matches("s3cret-token"));
        assert!(!t.matches("s3cret-toke"));
        assert!(!t.matches(""));
        assert_eq!(format!("{t:?}"), "ApiToken(***)");
    }

    #[test]
    fn public_listen_needs_a_token_or_the_opt_out() {
        let open = ServerConfig { listen: "0.0.0.0:8080".into(), ..Default::default() };
        let (field, reason) = open.validate().unwrap_err();
        assert_eq!(field, "listen");
        assert!(reason.contains("token") && reason.contains("allow_unauthenticated"), "{reason}");
        ServerConfig { allow_unauthenticated: true, ..open.clone() }.validate().unwrap();
        ServerConfig { token: Some("t0ken".into()), ..open.clone() }.validate().unwrap();
        ServerConfig { listen: "[::1]:8080".into(), ..Default::default() }.validate().unwrap();
    }

    #[test]
    fn token_from_a_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        let cfg = ServerConfig { token_file: Some(file), ..Default::default() };
        assert!(cfg.token().unwrap().unwrap().matches("from-file"));
        let cfg = ServerConfig { token_env: Some("VIGIL_TEST_NO_SUCH_VAR".into()), ..Default::default() };
        cfg.validate().unwrap();
        assert_eq!(cfg.token().unwrap_err().0, "token_env");
        let both = ServerConfig { token: Some("a".into()), token_env: Some("B".into()), ..Default::default() };
        assert_eq!(both.validate().unwrap_err().0, "token");
        let empty = ServerConfig { token: Some(" ".into()), ..Default::default() };
        assert_eq!(empty.token().unwrap_err().1, "the token is empty");
    }
}
