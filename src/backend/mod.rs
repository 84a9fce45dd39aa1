//! Who checks passwords: the legacy nethcti-server, a generic HTTP endpoint, or a local users
//! file. Each returns a [`Verdict`]: on success the canonical name of the account (what
//! authgate keys `sub`, 2FA, lockout and sessions on, whatever alias the login used) and, for
//! nethcti, the credential the legacy application expects upstream. Nothing here logs a
//! password or a credential.

pub mod file;
pub mod http_post;
pub mod nethcti;

use secrecy::SecretString;

use crate::config::BackendConfig;

/// The backend's answer to a password.
pub enum Verdict {
    /// Good password. `user` is the account's canonical name (nethcti: the `username` of
    /// `/user/me`; `http` and `file`: the name as accepted); `credential` is what the legacy
    /// application expects upstream, if any. The caller still checks `user` is usable.
    Accepted {
        user: String,
        credential: Option<SecretString>,
    },
    Rejected,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    #[error("backend timed out")]
    Timeout,
}

pub enum Backend {
    File(file::FileBackend),
    Nethcti(nethcti::NethctiBackend),
    Http(http_post::HttpPostBackend),
}

impl Backend {
    /// Builds the configured backend. Once [`crate::config::Config::validate`] has passed,
    /// only I/O can fail here (the `file` backend reads its users file).
    pub fn from_config(cfg: &BackendConfig) -> Result<Self, BackendError> {
        Ok(match cfg {
            BackendConfig::File(f) => Backend::File(file::FileBackend::open(&f.users_file)?),
            BackendConfig::Nethcti(r) => Backend::Nethcti(nethcti::NethctiBackend::with_ca_file(
                &r.url,
                r.timeout,
                r.ca_file.as_deref(),
            )?),
            BackendConfig::Http(r) => Backend::Http(http_post::HttpPostBackend::with_ca_file(
                &r.url,
                r.timeout,
                r.ca_file.as_deref(),
            )?),
        })
    }

    /// The backend's own login routes: a client reaching them through the proxy could guess
    /// passwords outside lockout and 2FA, so the policy closes them.
    pub fn own_login_routes(&self) -> &'static [&'static str] {
        match self {
            Backend::Nethcti(_) => nethcti::LOGIN_ROUTES,
            Backend::File(_) | Backend::Http(_) => &[],
        }
    }

    pub async fn authenticate(
        &self,
        username: &str,
        password: &SecretString,
    ) -> Result<Verdict, BackendError> {
        match self {
            Backend::File(b) => b.authenticate(username, password).await,
            Backend::Nethcti(b) => b.authenticate(username, password).await,
            Backend::Http(b) => b.authenticate(username, password).await,
        }
    }

    /// Whether [`Backend::session_alive`] and [`Backend::logout`] with `credential` call out to
    /// the backend (only nethcti's, with a credential, does).
    pub fn calls_out(&self, credential: Option<&SecretString>) -> bool {
        matches!((self, credential), (Backend::Nethcti(_), Some(_)))
    }

    /// Whether the legacy session behind `credential` still lives (always true without one).
    pub async fn session_alive(
        &self,
        credential: Option<&SecretString>,
    ) -> Result<bool, BackendError> {
        match (self, credential) {
            (Backend::Nethcti(b), Some(c)) => b.session_alive(c).await,
            _ => Ok(true),
        }
    }

    /// Ends the legacy session behind `credential`, if there is one.
    pub async fn logout(&self, credential: Option<&SecretString>) -> Result<(), BackendError> {
        match (self, credential) {
            (Backend::Nethcti(b), Some(c)) => b.logout(c).await,
            _ => Ok(()),
        }
    }
}
