//! Typed configuration: the TOML file, its built-in defaults and the `AUTHGATE_<SECTION>__<KEY>`
//! environment overrides. Everything is validated once here, at start-up; later layers take the
//! typed values and never parse configuration themselves. A bad key is reported by its dotted
//! name so `check-config` can tell the operator exactly what to fix.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Everything authgate can be told. Unknown keys are errors in every section.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: Listen,
    pub backend: Backend,
    pub tokens: Tokens,
    pub store: Store,
    pub totp: Totp,
    pub lockout: Lockout,
    pub policy: Policy,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// ext_authz v3 and grpc.health.v1.
    pub grpc: SocketAddr,
    /// `/authz`, `/auth/*`, JWKS, health and metrics.
    pub http: SocketAddr,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[serde(deserialize_with = "duration")]
    pub drain_grace: Duration,
    /// Peers whose `X-Forwarded-For` is believed (its last entry is the client address used
    /// for lockout and the audit log). Your proxy's address; loopback by default.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            grpc: SocketAddr::from(([127, 0, 0, 1], 9191)),
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            drain_grace: Duration::from_secs(10),
            trusted_proxies: vec![
                std::net::IpAddr::from([127, 0, 0, 1]),
                std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            ],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Nethcti,
    Http,
    File,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backend {
    /// Who checks passwords: "nethcti", "http" or "file".
    pub kind: BackendKind,
    /// Base URL of the legacy backend (nethcti) or the URL to POST credentials to (http).
    pub url: String,
    /// Users file of the `file` backend: one `name:<argon2id PHC hash>` per line.
    pub users_file: PathBuf,
    /// Upper bound of one backend call.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
}

impl Default for Backend {
    fn default() -> Self {
        Self {
            kind: BackendKind::File,
            url: "http://127.0.0.1:8179".into(),
            users_file: PathBuf::from("./data/users"),
            timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum Algorithm {
    EdDSA,
    ES256,
    RS256,
    HS256,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tokens {
    pub issuer: String,
    pub audience: String,
    pub algorithm: Algorithm,
    #[serde(deserialize_with = "duration")]
    pub access_ttl: Duration,
    #[serde(deserialize_with = "duration")]
    pub refresh_ttl: Duration,
    /// Clock skew allowed on exp, nbf and iat.
    #[serde(deserialize_with = "duration")]
    pub leeway: Duration,
    /// Upper bound of the verified-token cache, in bytes.
    pub cache_bytes: u64,
    /// After a refresh token is rotated, presenting it again within this time returns the
    /// same new pair instead of counting as reuse (a browser's double refresh, two tabs).
    /// "0s" disables it: every second use revokes the session.
    #[serde(deserialize_with = "duration")]
    pub refresh_reuse_grace: Duration,
}

impl Default for Tokens {
    fn default() -> Self {
        Self {
            issuer: "authgate".into(),
            audience: "authgate".into(),
            algorithm: Algorithm::EdDSA,
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            leeway: Duration::from_secs(30),
            cache_bytes: 48 * 1024 * 1024,
            refresh_reuse_grace: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Embedded,
    Redis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Store {
    pub kind: StoreKind,
    /// Directory for keys and the embedded database.
    pub path: PathBuf,
    /// Redis URL when `kind = "redis"`.
    pub url: Option<String>,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            kind: StoreKind::Embedded,
            path: PathBuf::from("./data"),
            url: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Totp {
    /// Issuer shown in authenticator apps.
    pub issuer: String,
}

impl Default for Totp {
    fn default() -> Self {
        Self {
            issuer: "NethVoice".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Lockout {
    pub max_failures: u32,
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
    #[serde(deserialize_with = "duration")]
    pub lock_for: Duration,
}

impl Default for Lockout {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window: Duration::from_secs(300),
            lock_for: Duration::from_secs(900),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Public,
    Token,
    Mfa,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub path_prefix: String,
    /// Only these methods match (any method when absent).
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    pub access: Access,
    /// Where to look for the token on this route (the global `policy.token_sources` when absent).
    #[serde(default)]
    pub token_sources: Option<TokenSources>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenSources {
    /// `Authorization: Bearer`.
    pub header: bool,
    /// Query parameters, in order.
    pub query: Vec<String>,
    /// Cookie name; empty disables.
    pub cookie: String,
}

impl Default for TokenSources {
    fn default() -> Self {
        Self {
            header: true,
            query: vec!["access_token".into(), "authorization".into()],
            cookie: "authgate_access".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// First match wins; without any, `/auth/` and `/.well-known/` are public, the rest `token`.
    pub routes: Vec<Route>,
    pub token_sources: TokenSources,
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))
}

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration at `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    fn invalid(key: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

impl Config {
    /// Parses and validates TOML text (no environment overrides).
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let value: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::invalid("(file)", e.message()))?;
        Self::from_table(value)
    }

    /// Loads `path` (or `./authgate.toml` if present, else defaults) and applies the
    /// `AUTHGATE_<SECTION>__<KEY>` overrides found in `env`.
    pub fn load(
        path: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let default_path = std::path::Path::new("authgate.toml");
        let path = path.or_else(|| default_path.exists().then_some(default_path));
        let mut table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::invalid("(file)", e.message()))?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut table, env)?;
        Self::from_table(table)
    }

    fn from_table(table: toml::Table) -> Result<Self, ConfigError> {
        let config: Config = serde_path_error(table)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.tokens;
        if t.issuer.is_empty() {
            return Err(ConfigError::invalid("tokens.issuer", "must not be empty"));
        }
        if t.audience.is_empty() {
            return Err(ConfigError::invalid("tokens.audience", "must not be empty"));
        }
        if t.access_ttl < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "tokens.access_ttl",
                "must be at least 1s",
            ));
        }
        if t.refresh_ttl < t.access_ttl {
            return Err(ConfigError::invalid(
                "tokens.refresh_ttl",
                "must not be shorter than tokens.access_ttl",
            ));
        }
        if t.leeway > Duration::from_secs(300) {
            return Err(ConfigError::invalid("tokens.leeway", "at most 5m"));
        }
        if t.refresh_reuse_grace > Duration::from_secs(300) {
            return Err(ConfigError::invalid(
                "tokens.refresh_reuse_grace",
                "at most 5m",
            ));
        }
        if self.backend.kind != BackendKind::File {
            let ok =
                self.backend.url.starts_with("http://") || self.backend.url.starts_with("https://");
            if !ok {
                return Err(ConfigError::invalid(
                    "backend.url",
                    "must be an http(s) URL",
                ));
            }
        }
        if self.store.kind == StoreKind::Redis && self.store.url.is_none() {
            return Err(ConfigError::invalid(
                "store.url",
                "required when store.kind = \"redis\"",
            ));
        }
        if self.lockout.max_failures == 0 {
            return Err(ConfigError::invalid(
                "lockout.max_failures",
                "must be at least 1",
            ));
        }
        for (i, r) in self.policy.routes.iter().enumerate() {
            if !r.path_prefix.starts_with('/') {
                return Err(ConfigError::invalid(
                    &format!("policy.routes[{i}].path_prefix"),
                    "must start with '/'",
                ));
            }
        }
        Ok(())
    }
}

/// Deserialises, naming the dotted key (`tokens.access_ttl`, `policy.routes[0].access`) at fault.
fn serde_path_error(table: toml::Table) -> Result<Config, ConfigError> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let key = e.path().to_string();
        let message = e.into_inner().to_string();
        ConfigError::invalid(if key == "." { "(file)" } else { &key }, message)
    })
}

/// Applies `AUTHGATE_<SECTION>__<KEY>=value` overrides. Values are parsed as TOML when they
/// parse (numbers, booleans, arrays), otherwise taken as strings.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("AUTHGATE_") else {
            continue;
        };
        // Variables without `__` are not overrides: AUTHGATE_LOG, or the AUTHGATE_*_PORT
        // service links Kubernetes injects for a Service named authgate-*.
        if !rest.contains("__") {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::invalid(
                &name,
                "expected AUTHGATE_<SECTION>__<KEY>",
            ));
        }
        let value = parse_env_value(&raw);
        let mut cursor = &mut *table;
        for part in &path[..path.len() - 1] {
            let entry = cursor
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            cursor = entry
                .as_table_mut()
                .ok_or_else(|| ConfigError::invalid(&path.join("."), "is not a section"))?;
        }
        cursor.insert(path[path.len() - 1].clone(), value);
    }
    Ok(())
}

fn parse_env_value(raw: &str) -> toml::Value {
    let wrapped = format!("v = {raw}");
    match wrapped.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::from_toml_str("").unwrap();
        assert_eq!(c.tokens.access_ttl, Duration::from_secs(900));
        assert_eq!(c.listen.grpc.port(), 9191);
        assert_eq!(c.policy.token_sources.cookie, "authgate_access");
    }

    #[test]
    fn spec_example_parses() {
        let text = r#"
[listen]
grpc = "127.0.0.1:9191"
http = "127.0.0.1:8080"
[backend]
kind = "nethcti"
url = "http://127.0.0.1:8179"
[tokens]
issuer = "authgate"
audience = "authgate"
algorithm = "ES256"
access_ttl = "15m"
refresh_ttl = "30d"
leeway = "30s"
[store]
kind = "embedded"
path = "./data"
[totp]
issuer = "NethVoice"
[lockout]
max_failures = 5
window = "5m"
lock_for = "15m"
[[policy.routes]]
path_prefix = "/auth/"
access = "public"
[[policy.routes]]
path_prefix = "/"
access = "mfa"
methods = ["GET"]
[policy.token_sources]
header = true
query = ["access_token", "authorization"]
cookie = "authgate_access"
"#;
        let c = Config::from_toml_str(text).unwrap();
        assert_eq!(c.tokens.algorithm, Algorithm::ES256);
        assert_eq!(c.policy.routes.len(), 2);
        assert_eq!(c.policy.routes[1].access, Access::Mfa);
        assert_eq!(c.tokens.refresh_ttl, Duration::from_secs(30 * 86400));
    }

    fn bad_key(text: &str) -> String {
        match Config::from_toml_str(text).unwrap_err() {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(
            bad_key("[tokens]\naccess_ttl = \"soon\""),
            "tokens.access_ttl"
        );
        assert_eq!(bad_key("[tokens]\nbogus = 1"), "tokens.bogus");
        assert_eq!(bad_key("[nope]\nx = 1"), "nope");
        assert_eq!(
            bad_key("[tokens]\nalgorithm = \"none\""),
            "tokens.algorithm"
        );
        assert_eq!(bad_key("[tokens]\nissuer = \"\""), "tokens.issuer");
        assert_eq!(
            bad_key("[tokens]\nrefresh_reuse_grace = \"1h\""),
            "tokens.refresh_reuse_grace"
        );
        assert_eq!(bad_key("[listen]\ngrpc = \"nowhere\""), "listen.grpc");
        assert_eq!(
            bad_key("[[policy.routes]]\npath_prefix = \"x\"\naccess = \"public\""),
            "policy.routes[0].path_prefix"
        );
    }

    #[test]
    fn env_overrides_apply() {
        let env = vec![
            (
                "AUTHGATE_BACKEND__URL".to_owned(),
                "http://127.0.0.1:9".to_owned(),
            ),
            ("AUTHGATE_LOCKOUT__MAX_FAILURES".to_owned(), "7".to_owned()),
            ("AUTHGATE_TOKENS__ACCESS_TTL".to_owned(), "5m".to_owned()),
            ("UNRELATED".to_owned(), "x".to_owned()),
            ("AUTHGATE_LOG".to_owned(), "debug".to_owned()),
            (
                "AUTHGATE_REDIS_PORT".to_owned(),
                "tcp://10.0.0.1:6379".to_owned(),
            ),
        ];
        let c = Config::load(Some(std::path::Path::new("/dev/null")), env).unwrap();
        assert_eq!(c.backend.url, "http://127.0.0.1:9");
        assert_eq!(c.lockout.max_failures, 7);
        assert_eq!(c.tokens.access_ttl, Duration::from_secs(300));
    }

    #[test]
    fn env_override_of_unknown_key_is_an_error() {
        let env = vec![("AUTHGATE_TOKENS__NOPE".to_owned(), "1".to_owned())];
        let err = Config::load(Some(std::path::Path::new("/dev/null")), env).unwrap_err();
        assert!(err.to_string().contains("tokens.nope"), "{err}");
    }
}
