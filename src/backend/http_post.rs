//! The generic `http` backend: POST `{"username","password"}` to one URL and let the status
//! decide (2xx accepts, 401/403 reject, anything else means the backend is unavailable).
//!
//! It also holds the transport pieces both HTTP-speaking backends share: building a client
//! and turning a transport failure into a [`BackendError`]. It must never log or put into an
//! error message the password, the request body, or a URL's userinfo; it follows no redirects
//! (a password must not be re-posted to wherever a 3xx points) and ignores proxy environment
//! variables (a proxy is not configured for authgate just because the process inherited one).

use std::path::Path;
use std::time::Duration;

use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::{BackendError, Verdict};
use crate::config::BackendKind;

/// The login body both `http` and `nethcti` send. Borrowed, so the password is not copied
/// outside the request body.
#[derive(Serialize)]
pub(super) struct LoginBody<'a> {
    pub(super) username: &'a str,
    pub(super) password: &'a str,
}

/// Parses and checks a configured backend URL by the rules `check-config` applies
/// ([`crate::config::backend_url`]).
pub(super) fn parse_url(kind: BackendKind, url: &str) -> Result<Url, BackendError> {
    crate::config::backend_url(kind, url).map_err(BackendError::Unavailable)
}

/// A client whose every request, connection included, ends within `timeout`; `https` checked
/// against `ca_file` alone when given, else the public roots (see [`crate::tls`]).
pub(super) fn build_client(
    timeout: Duration,
    ca_file: Option<&Path>,
) -> Result<reqwest::Client, BackendError> {
    if timeout.is_zero() {
        return Err(BackendError::Unavailable(
            "backend timeout must be greater than zero".to_owned(),
        ));
    }
    let tls = crate::tls::client_config(ca_file, &[b"http/1.1"])
        .map_err(|e| BackendError::Unavailable(format!("backend.ca_file: {e}")))?;
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| BackendError::Unavailable(format!("cannot build http client: {e}")))
}

/// Maps a transport failure: timeouts to [`BackendError::Timeout`], the rest to
/// [`BackendError::Unavailable`] with the error chain (minus the URL) as the message.
pub(super) fn transport_error(err: reqwest::Error) -> BackendError {
    if err.is_timeout() {
        return BackendError::Timeout;
    }
    let err = err.without_url();
    let mut message = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    BackendError::Unavailable(message)
}

/// Checks passwords by POSTing them to a URL.
#[derive(Clone)]
pub struct HttpPostBackend {
    client: reqwest::Client,
    url: Url,
}

impl std::fmt::Debug for HttpPostBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpPostBackend")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl HttpPostBackend {
    /// `url` is the full login endpoint; `timeout` bounds each request from connect to the
    /// end of the response.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, BackendError> {
        Self::with_ca_file(url, timeout, None)
    }

    /// [`Self::new`], an `https` url checked against `ca_file` alone (`backend.ca_file`).
    pub fn with_ca_file(
        url: &str,
        timeout: Duration,
        ca_file: Option<&Path>,
    ) -> Result<Self, BackendError> {
        Ok(Self {
            client: build_client(timeout, ca_file)?,
            url: parse_url(BackendKind::Http, url)?,
        })
    }

    /// 2xx: accepted under the name as sent, no backend credential. 401/403: rejected. Anything else, including a
    /// redirect: unavailable.
    pub async fn authenticate(
        &self,
        username: &str,
        password: &SecretString,
    ) -> Result<Verdict, BackendError> {
        let response = self
            .client
            .post(self.url.clone())
            .json(&LoginBody {
                username,
                password: password.expose_secret(),
            })
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        if status.is_success() {
            Ok(Verdict::Accepted {
                user: username.to_owned(),
                credential: None,
            })
        } else if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            Ok(Verdict::Rejected)
        } else {
            Err(BackendError::Unavailable(format!(
                "http backend answered {status}"
            )))
        }
    }
}
