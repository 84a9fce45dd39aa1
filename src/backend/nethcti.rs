//! Client for nethcti-server's own login (SPEC 2.3): a successful
//! `POST /authentication/login` answers 401 with `WWW-Authenticate: Digest <nonce>`, and the
//! legacy token is the hex HMAC-SHA1 of `user:password:nonce` keyed by the password. The
//! backend credential handed to the rest of authgate is the `Authorization` value the server
//! expects on every later request, `user:token`.
//!
//! The server accepts one account under several login names (its user name, its main
//! extension number, `user@domain`) and keys the token on the name as typed, so the credential
//! keeps that name; the account's canonical name, which authgate keys everything on, is the
//! `username` that `GET /user/me` answers with that credential right after the login.
//!
//! This module owns that exchange and the session probe and logout that use the credential.
//! It must never log, format or put into an error the password, the nonce-derived token or
//! the credential; they live in [`SecretString`]s and are exposed only to compute the HMAC
//! and to fill the request. A malformed answer is an error value, never a panic.

use std::time::Duration;

/// nethcti-server's own authentication API (`/authentication/login`, `/logout`, ...).
pub const LOGIN_ROUTES: &[&str] = &["/authentication/"];

use aws_lc_rs::hmac;
use reqwest::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};

use super::http_post::{LoginBody, build_client, parse_url, transport_error};
use super::{BackendError, Verdict};
use crate::config::BackendKind;

/// Length of the nonce nethcti-server sends: 20 random bytes in lowercase hex.
const NONCE_LEN: usize = 40;
/// Length of the token: an HMAC-SHA1 tag (20 bytes) in lowercase hex.
const TOKEN_LEN: usize = 40;
/// Largest `/user/me` answer read (the real one lists the user's endpoints: a few KiB).
const MAX_ME_BODY: usize = 1024 * 1024;

/// Talks to one nethcti-server.
#[derive(Clone)]
pub struct NethctiBackend {
    client: reqwest::Client,
    login_url: Url,
    logout_url: Url,
    me_url: Url,
}

impl std::fmt::Debug for NethctiBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NethctiBackend")
            .field("login_url", &self.login_url.as_str())
            .finish_non_exhaustive()
    }
}

impl NethctiBackend {
    /// `base_url` is where nethcti-server's REST API is mounted (e.g.
    /// `http://127.0.0.1:8179`, or `https://host/webrest` behind a proxy); `timeout` bounds
    /// each request from connect to the end of the response.
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, BackendError> {
        Self::with_ca_file(base_url, timeout, None)
    }

    /// [`Self::new`], an `https` url checked against `ca_file` alone (`backend.ca_file`).
    pub fn with_ca_file(
        base_url: &str,
        timeout: Duration,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, BackendError> {
        let base = parse_url(BackendKind::Nethcti, base_url)?;
        let endpoint = |suffix: &str| {
            let mut url = base.clone();
            let path = format!("{}{suffix}", base.path().trim_end_matches('/'));
            url.set_path(&path);
            url
        };
        Ok(Self {
            client: build_client(timeout, ca_file)?,
            login_url: endpoint("/authentication/login"),
            logout_url: endpoint("/authentication/logout"),
            me_url: endpoint("/user/me"),
        })
    }

    /// Logs in. Accepted carries the credential `username:token` (the name as typed, which the
    /// server keys the token on) and the canonical account name from `/user/me`. A username
    /// that could not survive inside that header (empty, `:` or a control character) is
    /// rejected without asking the server.
    pub async fn authenticate(
        &self,
        username: &str,
        password: &SecretString,
    ) -> Result<Verdict, BackendError> {
        if !username_is_usable(username) {
            return Ok(Verdict::Rejected);
        }
        let response = self
            .client
            .post(self.login_url.clone())
            .json(&LoginBody {
                username,
                password: password.expose_secret(),
            })
            .send()
            .await
            .map_err(transport_error)?;
        match response.status() {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                return Err(BackendError::Unavailable(
                    "nethcti-server is not ready (503)".to_owned(),
                ));
            }
            status => {
                return Err(BackendError::Unavailable(format!(
                    "nethcti login answered {status}, expected 401"
                )));
            }
        }
        let mut challenges = response.headers().get_all(WWW_AUTHENTICATE).iter();
        let (Some(challenge), None) = (challenges.next(), challenges.next()) else {
            // No challenge at all is the server's "wrong credentials"; several are a server
            // we do not understand, and guessing which one counts would be unsafe.
            return if response.headers().contains_key(WWW_AUTHENTICATE) {
                Err(BackendError::Unavailable(
                    "nethcti login sent several WWW-Authenticate headers".to_owned(),
                ))
            } else {
                Ok(Verdict::Rejected)
            };
        };
        let nonce = parse_challenge(challenge.as_bytes()).ok_or_else(|| {
            BackendError::Unavailable(
                "nethcti login sent a WWW-Authenticate that is not `Digest <40 lowercase hex>`"
                    .to_owned(),
            )
        })?;
        let credential = credential(username, password, nonce);
        match self.canonical_name(&credential).await {
            Ok(user) => Ok(Verdict::Accepted {
                user,
                credential: Some(credential),
            }),
            Err(e) => {
                // Do not leave a legacy session behind that nobody will ever use or end.
                let _ = self.logout(&credential).await;
                Err(e)
            }
        }
    }

    /// The `username` of `GET /user/me` with a fresh credential: the account's canonical name.
    async fn canonical_name(&self, credential: &SecretString) -> Result<String, BackendError> {
        let header = credential_header(credential).ok_or_else(|| {
            BackendError::Unavailable("nethcti credential is not a header value".to_owned())
        })?;
        let mut response = self
            .client
            .get(self.me_url.clone())
            .header(AUTHORIZATION, header)
            .send()
            .await
            .map_err(transport_error)?;
        if !response.status().is_success() {
            return Err(unexpected("user/me after a login", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
            if body.len() + chunk.len() > MAX_ME_BODY {
                return Err(BackendError::Unavailable(
                    "nethcti user/me answer is too large".to_owned(),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        #[derive(serde::Deserialize)]
        struct Me {
            username: String,
        }
        serde_json::from_slice::<Me>(&body)
            .map(|me| me.username)
            .map_err(|_| {
                BackendError::Unavailable(
                    "nethcti user/me answer has no string `username`".to_owned(),
                )
            })
    }

    /// Whether the server still honours `credential` (`GET /user/me`): 200 yes, 401/403 no.
    /// Each call slides the server-side idle expiry, as any use of the token does.
    pub async fn session_alive(&self, credential: &SecretString) -> Result<bool, BackendError> {
        let Some(header) = credential_header(credential) else {
            // Not even a valid header value: no server session can be behind it.
            return Ok(false);
        };
        let response = self
            .client
            .get(self.me_url.clone())
            .header(AUTHORIZATION, header)
            .send()
            .await
            .map_err(transport_error)?;
        match response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Ok(false),
            status => Err(unexpected("user/me", status)),
        }
    }

    /// Ends the server session. A credential the server no longer knows (401) counts as
    /// logged out: the goal, a dead token, holds either way.
    pub async fn logout(&self, credential: &SecretString) -> Result<(), BackendError> {
        let Some(header) = credential_header(credential) else {
            return Ok(());
        };
        let response = self
            .client
            .post(self.logout_url.clone())
            .header(AUTHORIZATION, header)
            .send()
            .await
            .map_err(transport_error)?;
        match response.status() {
            s if s.is_success() => Ok(()),
            StatusCode::UNAUTHORIZED => Ok(()),
            status => Err(unexpected("logout", status)),
        }
    }
}

fn unexpected(what: &str, status: StatusCode) -> BackendError {
    BackendError::Unavailable(format!("nethcti {what} answered {status}"))
}

/// A username goes verbatim into `Authorization: user:token`; one with a `:` would make the
/// header ambiguous and a control character could not be sent at all.
fn username_is_usable(username: &str) -> bool {
    !username.is_empty() && !username.chars().any(|c| c == ':' || c.is_control())
}

/// The nonce of `Digest <nonce>`, if it is exactly 40 lowercase hex characters. The scheme
/// name is case-insensitive (RFC 9110 section 11.1); the nonce is not.
fn parse_challenge(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, nonce) = value.split_once(' ')?;
    let nonce = nonce.trim_start_matches(' ');
    let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    (scheme.eq_ignore_ascii_case("Digest")
        && nonce.len() == NONCE_LEN
        && nonce.bytes().all(lower_hex))
    .then_some(nonce)
}

/// The legacy token: lowercase hex of HMAC-SHA1(key = password, message =
/// `username:password:nonce`).
pub fn legacy_token(username: &str, password: &SecretString, nonce: &str) -> SecretString {
    let mut hex = String::with_capacity(TOKEN_LEN);
    push_token(&mut hex, username, password, nonce);
    SecretString::from(hex)
}

/// The backend credential, `username:token`, built in one allocation so no stray copy of the
/// token is left behind.
fn credential(username: &str, password: &SecretString, nonce: &str) -> SecretString {
    let mut value = String::with_capacity(username.len() + 1 + TOKEN_LEN);
    value.push_str(username);
    value.push(':');
    push_token(&mut value, username, password, nonce);
    SecretString::from(value)
}

fn push_token(out: &mut String, username: &str, password: &SecretString, nonce: &str) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let password = password.expose_secret();
    // The message contains the password: build it at its final size and wipe it on drop.
    let mut message = secrecy::zeroize::Zeroizing::new(String::with_capacity(
        username.len() + password.len() + nonce.len() + 2,
    ));
    message.push_str(username);
    message.push(':');
    message.push_str(password);
    message.push(':');
    message.push_str(nonce);
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, password.as_bytes());
    let tag = hmac::sign(&key, message.as_bytes());
    for b in tag.as_ref() {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

/// The credential as a header value marked sensitive (kept out of HTTP/2 header tables and
/// `Debug` output), or `None` if it cannot be one.
fn credential_header(credential: &SecretString) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_bytes(credential.expose_secret().as_bytes()).ok()?;
    value.set_sensitive(true);
    Some(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn spec_test_vector() {
        let token = legacy_token(
            "alice",
            &SecretString::from("secret"),
            "a4b888b2d096249ce5b5ad63413842d5df335f17",
        );
        assert_eq!(
            token.expose_secret(),
            "15372d36008c1fd11c4a362b373529f72bfeaca2"
        );
        let cred = credential(
            "alice",
            &SecretString::from("secret"),
            "a4b888b2d096249ce5b5ad63413842d5df335f17",
        );
        assert_eq!(
            cred.expose_secret(),
            "alice:15372d36008c1fd11c4a362b373529f72bfeaca2"
        );
    }

    #[test]
    fn challenge_parsing() {
        let nonce = "a4b888b2d096249ce5b5ad63413842d5df335f17";
        assert_eq!(
            parse_challenge(format!("Digest {nonce}").as_bytes()),
            Some(nonce)
        );
        assert_eq!(
            parse_challenge(format!("digest  {nonce}").as_bytes()),
            Some(nonce)
        );
        for bad in [
            String::new(),
            "Digest".to_owned(),
            "Digest ".to_owned(),
            nonce.to_owned(),
            format!("Basic {nonce}"),
            format!("Digest {}", nonce.to_uppercase()),
            format!("Digest {}", &nonce[..39]),
            format!("Digest {nonce}0"),
            format!("Digest {nonce} extra"),
            format!("Digest {}g", &nonce[..39]),
            format!("Digest realm=\"x\", nonce=\"{nonce}\""),
        ] {
            assert_eq!(parse_challenge(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(parse_challenge(b"Digest \xff\xfe"), None);
    }

    #[test]
    fn usernames_that_break_the_header_are_refused() {
        assert!(username_is_usable("alice"));
        assert!(username_is_usable("alice smith"));
        assert!(username_is_usable("zoë"));
        for bad in ["", "a:b", ":", "a\nb", "a\rb", "a\0", "a\u{7f}", "a\u{85}"] {
            assert!(!username_is_usable(bad), "{bad:?}");
        }
    }
}
