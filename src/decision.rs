//! The check every proxy path shares: request facts in, [`Decision`] out. Transport-neutral
//! (no axum, no tonic) and free of I/O: route policy, token lookup, verification (cached),
//! token kind, second factor and the in-memory revocation set.
//!
//! This is also the one place that turns a denial into what the client sees (status,
//! `WWW-Authenticate`, JSON body); the gRPC and HTTP adapters only copy those fields into their
//! own types, so they cannot disagree.

use std::borrow::Cow;
use std::sync::Arc;

use secrecy::ExposeSecret;

use crate::config::Access;
use crate::credentials::{self, AUTHORIZATION, COOKIE, Found, Headers, Sources};
pub use crate::policy::Dialect;
use crate::policy::Policy;
use crate::revocation::Revocations;
use crate::token::{Invalid, Kind, TokenError, TokenService, Verified};

pub const X_AUTH_USER: &str = "x-auth-user";
pub const X_AUTH_SESSION: &str = "x-auth-session";

/// The facts of one request, as any proxy reports them.
pub struct Request<'a> {
    pub method: &'a str,
    /// Path and query as the client sent them.
    pub path: &'a str,
    pub headers: &'a dyn Headers,
}

#[derive(Debug)]
pub enum Decision {
    Allow(Allow),
    Deny(Denial),
}

impl Decision {
    pub fn outcome(&self) -> Outcome {
        match self {
            Decision::Allow(_) => Outcome::Allow,
            Decision::Deny(d) => d.outcome(),
        }
    }
}

/// What to change in the upstream request when allowing.
#[derive(Debug, Default)]
pub struct Allow {
    /// The authenticated user and session; `None` on a public route.
    pub user: Option<Arc<str>>,
    pub session: Option<Arc<str>>,
    /// The token's `amr`, comma-separated (`pwd`, `pwd,otp`, `svc`); empty on a public route.
    /// A static string for every combination authgate mints: reporting it copies nothing.
    pub amr: Cow<'static, str>,
    /// Headers to set, replacing any client copy.
    pub set_headers: Vec<(&'static str, String)>,
    /// Headers to remove (client copies of ours, the bearer token).
    pub remove_headers: Vec<&'static str>,
    /// Query parameters that carried a token.
    pub remove_query: Vec<String>,
}

/// Why a request is refused. A normal outcome, not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// No credentials on a route that needs them.
    NoToken,
    /// Something that cannot be a token (wrong shape, duplicated, oversized).
    Malformed,
    /// A token that is not genuine.
    Invalid(Invalid),
    Expired,
    NotYetValid,
    /// A genuine token of a session that has ended.
    Revoked,
    /// A genuine token of the wrong kind (refresh or MFA-pending) used as an access token.
    WrongKind,
    /// The route needs a second factor the token does not carry.
    MfaRequired,
    /// The route is closed to everyone (`access = "deny"`).
    RouteClosed,
    /// A service token (`amr` ["svc"]) where a user's token is needed.
    ServiceToken,
    /// A user's token on a route for service tokens only (`access = "service"`).
    ServiceOnly,
}

/// What a check came to, as counted by the metrics: allow, or the kind of denial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    NoToken,
    Malformed,
    InvalidToken,
    Expired,
    NotYetValid,
    Revoked,
    WrongTokenType,
    MfaRequired,
    RouteClosed,
}

impl Outcome {
    /// Every outcome, in the order of their `as usize` values.
    pub const ALL: [Outcome; 10] = [
        Outcome::Allow,
        Outcome::NoToken,
        Outcome::Malformed,
        Outcome::InvalidToken,
        Outcome::Expired,
        Outcome::NotYetValid,
        Outcome::Revoked,
        Outcome::WrongTokenType,
        Outcome::MfaRequired,
        Outcome::RouteClosed,
    ];

    /// A low-cardinality label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::NoToken => "no_token",
            Outcome::Malformed => "malformed",
            Outcome::InvalidToken => "invalid_token",
            Outcome::Expired => "expired",
            Outcome::NotYetValid => "not_yet_valid",
            Outcome::Revoked => "revoked",
            Outcome::WrongTokenType => "wrong_token_type",
            Outcome::MfaRequired => "mfa_required",
            Outcome::RouteClosed => "route_closed",
        }
    }
}

impl Denial {
    pub fn status(self) -> u16 {
        match self {
            Denial::NoToken
            | Denial::Malformed
            | Denial::Invalid(_)
            | Denial::Expired
            | Denial::NotYetValid
            | Denial::Revoked => 401,
            Denial::WrongKind
            | Denial::MfaRequired
            | Denial::RouteClosed
            | Denial::ServiceToken
            | Denial::ServiceOnly => 403,
        }
    }

    /// RFC 6750 section 3 error code, if any.
    pub fn error_code(self) -> Option<&'static str> {
        match self {
            Denial::NoToken | Denial::RouteClosed => None,
            Denial::Malformed => Some("invalid_request"),
            Denial::Invalid(_) | Denial::Expired | Denial::NotYetValid | Denial::Revoked => {
                Some("invalid_token")
            }
            Denial::WrongKind
            | Denial::MfaRequired
            | Denial::ServiceToken
            | Denial::ServiceOnly => Some("insufficient_scope"),
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Denial::NoToken => "a bearer token is required",
            Denial::Malformed => "malformed credentials",
            Denial::Invalid(why) => why.description(),
            Denial::Expired => "token expired",
            Denial::NotYetValid => "token not yet valid",
            Denial::Revoked => "token revoked",
            Denial::WrongKind => "not an access token",
            Denial::MfaRequired => "a second factor is required",
            Denial::RouteClosed => "this route is closed",
            Denial::ServiceToken => "a service token is not accepted here",
            Denial::ServiceOnly => "this route accepts service tokens only",
        }
    }

    pub fn outcome(self) -> Outcome {
        match self {
            Denial::NoToken => Outcome::NoToken,
            Denial::Malformed => Outcome::Malformed,
            Denial::Invalid(_) => Outcome::InvalidToken,
            Denial::Expired => Outcome::Expired,
            Denial::NotYetValid => Outcome::NotYetValid,
            Denial::Revoked => Outcome::Revoked,
            Denial::WrongKind | Denial::ServiceToken | Denial::ServiceOnly => {
                Outcome::WrongTokenType
            }
            Denial::MfaRequired => Outcome::MfaRequired,
            Denial::RouteClosed => Outcome::RouteClosed,
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 section 3); none for a closed route, where
    /// no credential would help.
    pub fn www_authenticate(self) -> Option<String> {
        self.challenge(Dialect::OAuth)
    }

    fn challenge(self, dialect: Dialect) -> Option<String> {
        let realm = dialect.realm();
        Some(match self.error_code() {
            None if self == Denial::RouteClosed => return None,
            None => format!(r#"Bearer realm="{realm}""#),
            Some(code) => format!(
                r#"Bearer realm="{realm}", error="{code}", error_description="{}""#,
                self.description()
            ),
        })
    }

    /// The `error` of the JSON body: the RFC 6750 code, else what sort of refusal it is.
    pub fn json_error(self) -> &'static str {
        match self {
            Denial::RouteClosed => "access_denied",
            d => d.error_code().unwrap_or("unauthorized"),
        }
    }

    /// Why, as one stable snake_case word for logs and the proxy's metadata (`no_token`,
    /// `expired`, `revoked`, ...): the metrics outcome, with the two service-token refusals
    /// told apart.
    pub fn reason(self) -> &'static str {
        match self {
            Denial::ServiceToken => "service_token",
            Denial::ServiceOnly => "service_only",
            d => d.outcome().label(),
        }
    }

    /// `{"error","error_description"}`.
    pub fn json_body(self) -> String {
        self.body(Dialect::OAuth)
    }

    fn body(self, dialect: Dialect) -> String {
        match dialect {
            Dialect::OAuth => serde_json::json!({
                "error": self.json_error(),
                "error_description": self.description(),
            }),
            Dialect::Nethcti => dialect_body(self.status(), self.description(), self.json_error()),
        }
        .to_string()
    }

    /// Everything a client sees of this denial, in the error dialect of its route.
    pub fn response(self, dialect: Dialect) -> DenialResponse {
        DenialResponse {
            status: self.status(),
            www_authenticate: self.challenge(dialect),
            body: self.body(dialect),
        }
    }
}

/// The error body of nethcti-middleware: `{"code","message","data":null}`, plus authgate's
/// `error` code.
pub fn dialect_body(status: u16, message: &str, error: &str) -> serde_json::Value {
    serde_json::json!({ "code": status, "message": message, "data": null, "error": error })
}

/// A denial as the client sees it: status, challenge and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenialResponse {
    pub status: u16,
    pub www_authenticate: Option<String>,
    pub body: String,
}

impl From<TokenError> for Denial {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Malformed => Denial::Malformed,
            TokenError::Invalid(why) => Denial::Invalid(why),
            TokenError::Expired => Denial::Expired,
            TokenError::NotYetValid => Denial::NotYetValid,
        }
    }
}

/// Rules about the request itself, whatever the route: a proxy that keeps repeated headers
/// apart (HTTP, Envoy's raw `header_map`) must not let a second `Authorization` pass unseen.
fn request_rules(headers: &dyn Headers) -> Result<(), Denial> {
    if headers.repeated(AUTHORIZATION) {
        return Err(Denial::Malformed);
    }
    Ok(())
}

/// The token of a request in `sources`, after the request-level rules.
pub fn request_token<'r>(
    sources: &Sources,
    headers: &'r dyn Headers,
    raw_path: &'r str,
) -> Result<Cow<'r, str>, Denial> {
    request_rules(headers)?;
    match credentials::find_token(sources, headers, raw_path) {
        Found::Token(t, _) => Ok(t),
        Found::None => Err(Denial::NoToken),
        Found::Malformed => Err(Denial::Malformed),
    }
}

/// Shared, immutable after start-up: the decision logic with its inputs.
pub struct Checker {
    pub tokens: Arc<TokenService>,
    pub policy: Policy,
    pub revocations: Arc<Revocations>,
}

impl Checker {
    /// The one authenticate path (the check, the login API, the socket relay): a genuine,
    /// current access token of a session that has not ended.
    /// Service tokens are refused here (403): they open `access = "service"` routes only.
    pub fn authenticate(&self, token: &str) -> Result<Arc<Verified>, Denial> {
        let verified = self.authenticate_any(token)?;
        if verified.is_service() {
            return Err(Denial::ServiceToken);
        }
        Ok(verified)
    }

    /// A genuine, current access token of a session that has not ended, a user's or a
    /// service's.
    fn authenticate_any(&self, token: &str) -> Result<Arc<Verified>, Denial> {
        let verified = self.tokens.verify(token)?;
        if verified.kind != Kind::Access {
            return Err(Denial::WrongKind);
        }
        if self.revocations.is_revoked(&verified.sid) {
            return Err(Denial::Revoked);
        }
        Ok(verified)
    }

    /// [`Self::authenticate`] for the token a request carries in `sources`.
    pub fn authenticate_request(
        &self,
        sources: &Sources,
        headers: &dyn Headers,
        raw_path: &str,
    ) -> Result<Arc<Verified>, Denial> {
        self.authenticate(&request_token(sources, headers, raw_path)?)
    }

    /// The error dialect of the route of `raw_path`.
    pub fn dialect(&self, raw_path: &str) -> Dialect {
        self.policy.dialect(raw_path)
    }

    pub fn check(&self, req: &Request<'_>) -> Decision {
        match self.decide(req) {
            Ok(allow) => Decision::Allow(allow),
            Err(denial) => Decision::Deny(denial),
        }
    }

    fn decide(&self, req: &Request<'_>) -> Result<Allow, Denial> {
        let route = self.policy.route(req.method, req.path);
        if route.access == Access::Deny {
            return Err(Denial::RouteClosed);
        }
        if route.access == Access::Public {
            request_rules(req.headers)?;
            return Ok(Allow {
                remove_headers: vec![X_AUTH_USER, X_AUTH_SESSION],
                remove_query: self.token_params(req.path),
                ..Allow::default()
            });
        }
        let verified =
            self.authenticate_any(&request_token(route.sources, req.headers, req.path)?)?;
        // The cached verdict already holds amr: telling the kinds apart costs no I/O.
        match (route.access, verified.is_service()) {
            (Access::Service, false) => return Err(Denial::ServiceOnly),
            (Access::Service, true) => {}
            (_, true) => return Err(Denial::ServiceToken),
            (Access::Mfa, false) if !verified.has_otp() => return Err(Denial::MfaRequired),
            (_, false) => {}
        }
        let mut set_headers = vec![
            (X_AUTH_USER, verified.sub.to_string()),
            (X_AUTH_SESSION, verified.sid.to_string()),
        ];
        let mut remove_headers = Vec::new();
        match &verified.credential {
            Some(c) => set_headers.push((AUTHORIZATION, c.expose_secret().to_owned())),
            None => remove_headers.push(AUTHORIZATION),
        }
        // Our cookie does not travel on to the backend either (whether or not it was the
        // token used this time).
        if let Some(name) = route.sources.cookie()
            && let Some(cookies) = req.headers.get(COOKIE)
            && credentials::cookie(cookies, name).is_some()
        {
            match credentials::without_cookie(cookies, name) {
                Some(rest) => set_headers.push((COOKIE, rest)),
                None => remove_headers.push(COOKIE),
            }
        }
        Ok(Allow {
            user: Some(verified.sub.clone()),
            session: Some(verified.sid.clone()),
            amr: verified.amr_label(),
            set_headers,
            remove_headers,
            remove_query: self.token_params(req.path),
        })
    }

    /// The query parameters of `path` that may carry a token on some route: removed before
    /// the request goes upstream.
    fn token_params(&self, path: &str) -> Vec<String> {
        credentials::present_query_params(path, self.policy.all_query_sources())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::clock::Clock;
    use crate::config::Config;
    use secrecy::SecretString;

    const T0: u64 = 1_800_000_000;

    /// Headers as a proxy that keeps repeated fields apart reports them.
    struct H(Vec<(String, String)>);
    impl Headers for H {
        fn get(&self, name: &str) -> Option<&str> {
            self.0
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        }
        fn repeated(&self, name: &str) -> bool {
            self.0.iter().filter(|(k, _)| k == name).count() > 1
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        clock: Clock,
        checker: Checker,
    }

    fn fixture(extra: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[store]\npath = {:?}\n{extra}",
            dir.path().to_str().unwrap()
        );
        let cfg = Config::from_toml_str(&text).unwrap();
        let clock = Clock::manual(T0);
        let tokens = Arc::new(TokenService::new(&cfg, clock.clone()).unwrap());
        let checker = Checker {
            tokens,
            policy: Policy::new(&cfg.policy),
            revocations: Arc::new(Revocations::new(clock.clone())),
        };
        Fixture {
            _dir: dir,
            clock,
            checker,
        }
    }

    impl Fixture {
        fn token(&self, kind: Kind, amr: &[&str]) -> String {
            self.checker
                .tokens
                .mint(kind, "alice", "sid-1", amr, 900, None)
                .unwrap()
                .0
        }

        fn check(&self, path: &str, headers: &[(&str, &str)]) -> Decision {
            self.check_with("GET", path, headers)
        }

        fn check_with(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Decision {
            let h = H(headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect());
            self.checker.check(&Request {
                method,
                path,
                headers: &h,
            })
        }

        fn bearer(&self, path: &str, token: &str) -> Decision {
            self.check(path, &[("authorization", &format!("Bearer {token}"))])
        }
    }

    fn denial(d: Decision) -> Denial {
        match d {
            Decision::Deny(d) => d,
            Decision::Allow(a) => panic!("allowed: {a:?}"),
        }
    }

    fn allow(d: Decision) -> Allow {
        match d {
            Decision::Allow(a) => a,
            Decision::Deny(d) => panic!("denied: {d:?}"),
        }
    }

    #[test]
    fn outcomes_are_listed_in_index_order() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i, "{o:?}");
        }
    }

    #[test]
    fn service_tokens_open_service_routes_only_and_user_tokens_never_do() {
        let f = fixture(
            "[[policy.routes]]\npath_prefix = \"/svc/\"\naccess = \"service\"\n\
             [[policy.routes]]\npath_prefix = \"/mfa/\"\naccess = \"mfa\"\n\
             [[policy.routes]]\npath_prefix = \"/auth/\"\naccess = \"public\"\n",
        );
        let svc = f.token(Kind::Access, &["svc"]);
        let user = f.token(Kind::Access, &["pwd", "otp"]);
        let a = allow(f.bearer("/svc/x", &svc));
        assert_eq!(a.user.as_deref(), Some("alice"));
        assert_eq!(a.amr, "svc");
        assert!(a.set_headers.contains(&(X_AUTH_SESSION, "sid-1".into())));
        assert!(!a.set_headers.iter().any(|(k, _)| *k == AUTHORIZATION));
        assert_eq!(a.remove_headers, vec![AUTHORIZATION]);
        for path in ["/api", "/mfa/x"] {
            let d = denial(f.bearer(path, &svc));
            assert_eq!((d, d.status()), (Denial::ServiceToken, 403), "{path}");
            assert_eq!(d.error_code(), Some("insufficient_scope"));
        }
        assert_eq!(denial(f.bearer("/svc/x", &user)), Denial::ServiceOnly);
        assert_eq!(Denial::ServiceOnly.reason(), "service_only");
        assert_eq!(allow(f.bearer("/mfa/x", &user)).amr, "pwd,otp");
        assert_eq!(denial(f.bearer("/svc/x", &user)).status(), 403);
        allow(f.bearer("/mfa/x", &user));
        // The login API's own bearer check refuses them too.
        assert_eq!(
            f.checker.authenticate(&svc).unwrap_err(),
            Denial::ServiceToken
        );
        // Revoked like any session.
        f.checker.revocations.revoke("sid-1", T0 + 1000);
        assert_eq!(denial(f.bearer("/svc/x", &svc)), Denial::Revoked);
    }

    #[test]
    fn no_token_is_401_without_error_code() {
        let f = fixture("");
        let d = denial(f.check("/api", &[]));
        assert_eq!(d.status(), 401);
        assert_eq!(d.www_authenticate().unwrap(), r#"Bearer realm="authgate""#);
        let body: serde_json::Value = serde_json::from_str(&d.json_body()).unwrap();
        assert!(body["error"].is_string());
    }

    #[test]
    fn valid_access_token_is_allowed_and_rewrites_headers() {
        let f = fixture("");
        let t = f.token(Kind::Access, &["pwd"]);
        let a = allow(f.bearer("/api/x?y=1", &t));
        assert_eq!(a.user.as_deref(), Some("alice"));
        assert!(matches!(a.amr, Cow::Borrowed("pwd")), "{:?}", a.amr);
        assert!(a.set_headers.contains(&(X_AUTH_USER, "alice".into())));
        assert!(a.set_headers.contains(&(X_AUTH_SESSION, "sid-1".into())));
        assert_eq!(a.remove_headers, vec![AUTHORIZATION]);
        assert!(a.remove_query.is_empty());
    }

    #[test]
    fn backend_credential_replaces_the_bearer_token() {
        let f = fixture("");
        let cred = SecretString::from("alice:15372d".to_owned());
        let (t, _) = f
            .checker
            .tokens
            .mint(Kind::Access, "alice", "s", &["pwd"], 900, Some(&cred))
            .unwrap();
        let a = allow(f.bearer("/api", &t));
        assert!(
            a.set_headers
                .contains(&(AUTHORIZATION, "alice:15372d".into()))
        );
        assert!(a.remove_headers.is_empty());
    }

    #[test]
    fn cookie_token_is_accepted_and_kept_from_the_backend() {
        let f = fixture("");
        let t = f.token(Kind::Access, &["pwd"]);
        let a = allow(f.check(
            "/api",
            &[(
                "cookie",
                &format!("theme=dark; authgate_access={t}; lang=it"),
            )],
        ));
        assert!(
            a.set_headers
                .contains(&(COOKIE, "theme=dark; lang=it".into())),
            "{a:?}"
        );
        let a = allow(f.check("/api", &[("cookie", &format!("authgate_access={t}"))]));
        assert!(a.remove_headers.contains(&COOKIE));
        // With the token in the header, a cookie copy is removed all the same.
        let a = allow(f.check(
            "/api",
            &[
                ("authorization", &format!("Bearer {t}")),
                ("cookie", &format!("a=1; authgate_access={t}")),
            ],
        ));
        assert!(a.set_headers.contains(&(COOKIE, "a=1".into())), "{a:?}");
        // Without our cookie the Cookie header is left alone.
        let a = allow(f.check(
            "/api",
            &[("authorization", &format!("Bearer {t}")), ("cookie", "a=1")],
        ));
        assert!(
            !a.set_headers.iter().any(|(k, _)| *k == COOKIE) && !a.remove_headers.contains(&COOKIE)
        );
        assert!(!a.set_headers.iter().any(|(k, _)| *k == COOKIE));
    }

    #[test]
    fn query_token_is_accepted_and_removed() {
        let f = fixture("");
        let t = f.token(Kind::Access, &["pwd"]);
        let a = allow(f.check(&format!("/events?a=1&access_token={t}"), &[]));
        assert_eq!(a.remove_query, vec!["access_token".to_owned()]);
        let a = allow(f.check(&format!("/events?authorization=Bearer%20{t}"), &[]));
        assert_eq!(a.remove_query, vec!["authorization".to_owned()]);
    }

    #[test]
    fn expiry_follows_the_clock_even_when_cached() {
        let f = fixture("");
        let t = f.token(Kind::Access, &["pwd"]);
        allow(f.bearer("/api", &t));
        f.clock.advance(900 + 31);
        let d = denial(f.bearer("/api", &t));
        assert_eq!((d.status(), d), (401, Denial::Expired));
        assert_eq!(d.reason(), "expired");
        assert!(
            d.www_authenticate()
                .unwrap()
                .contains(r#"error="invalid_token""#)
        );
    }

    #[test]
    fn refresh_and_mfa_tokens_are_not_access_tokens() {
        let f = fixture("");
        for kind in [Kind::Refresh, Kind::Mfa] {
            let d = denial(f.bearer("/api", &f.token(kind, &["pwd"])));
            assert_eq!(d.status(), 403);
            assert!(
                d.www_authenticate()
                    .unwrap()
                    .contains(r#"error="insufficient_scope""#)
            );
        }
    }

    #[test]
    fn revoked_session_is_refused_at_once() {
        let f = fixture("");
        let t = f.token(Kind::Access, &["pwd"]);
        allow(f.bearer("/api", &t));
        f.checker.revocations.revoke("sid-1", T0 + 900);
        assert_eq!(denial(f.bearer("/api", &t)), Denial::Revoked);
    }

    #[test]
    fn mfa_routes_need_otp_in_amr() {
        let f = fixture(
            "[[policy.routes]]\npath_prefix = \"/admin\"\naccess = \"mfa\"\n[[policy.routes]]\npath_prefix = \"/\"\naccess = \"token\"\n",
        );
        let pwd = f.token(Kind::Access, &["pwd"]);
        assert_eq!(denial(f.bearer("/admin/x", &pwd)), Denial::MfaRequired);
        allow(f.bearer("/other", &pwd));
        let otp = f.token(Kind::Access, &["pwd", "otp"]);
        allow(f.bearer("/admin/x", &otp));
    }

    #[test]
    fn public_routes_strip_identity_headers_only() {
        let f = fixture("");
        let a = allow(f.check("/auth/login", &[("x-auth-user", "mallory")]));
        assert!(a.user.is_none() && a.amr.is_empty());
        assert_eq!(a.remove_headers, vec![X_AUTH_USER, X_AUTH_SESSION]);
        assert!(a.set_headers.is_empty());
        // A spoofed identity header is no credential.
        assert_eq!(
            denial(f.check("/api", &[("x-auth-user", "alice")])),
            Denial::NoToken
        );
    }

    #[test]
    fn malformed_and_forged_tokens() {
        let f = fixture("");
        let d = denial(f.check("/api", &[("authorization", "Bearer a.b.c, Bearer d.e.f")]));
        assert_eq!(
            d.www_authenticate().unwrap(),
            r#"Bearer realm="authgate", error="invalid_request", error_description="malformed credentials""#
        );
        assert_eq!(d.status(), 401);
        let long = "a".repeat(64 * 1024);
        assert_eq!(denial(f.bearer("/api", &long)), Denial::Malformed);
        assert_eq!(denial(f.bearer("/api", "x.y.z")).status(), 401);
    }

    #[test]
    fn a_repeated_authorization_header_is_malformed_on_every_route() {
        let f = fixture("");
        let t = f.token(Kind::Access, &["pwd"]);
        let twice = [
            ("authorization", format!("Bearer {t}")),
            ("authorization", "Bearer x.y.z".to_owned()),
        ];
        let twice: Vec<(&str, &str)> = twice.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for path in ["/api", "/auth/login"] {
            assert_eq!(denial(f.check(path, &twice)), Denial::Malformed, "{path}");
        }
        let h = H(twice
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect());
        let api = f
            .checker
            .authenticate_request(&Sources::HEADER_ONLY, &h, "/");
        assert_eq!(api.err(), Some(Denial::Malformed));
    }

    #[test]
    fn closed_routes_refuse_every_token_with_403_and_no_challenge() {
        let f = fixture(
            "[[policy.routes]]\npath_prefix = \"/internal\"\naccess = \"deny\"\n[[policy.routes]]\npath_prefix = \"/\"\naccess = \"token\"\n",
        );
        let otp = f.token(Kind::Access, &["pwd", "otp"]);
        for d in [f.bearer("/internal/x", &otp), f.check("/INTERNAL", &[])] {
            let d = denial(d);
            assert_eq!((d, d.status()), (Denial::RouteClosed, 403));
            assert_eq!(d.www_authenticate(), None);
            let body: serde_json::Value = serde_json::from_str(&d.json_body()).unwrap();
            assert_eq!(body["error"], "access_denied");
        }
        allow(f.bearer("/other", &otp));
    }

    #[test]
    fn hs256_deployment_rejects_eddsa_and_vice_versa() {
        let hs = fixture("[tokens]\nalgorithm = \"HS256\"\n");
        let ed = fixture("");
        let t = ed.token(Kind::Access, &["pwd"]);
        assert_eq!(
            denial(hs.bearer("/api", &t)),
            Denial::Invalid(Invalid::Algorithm)
        );
        let t = hs.token(Kind::Access, &["pwd"]);
        assert_eq!(
            denial(ed.bearer("/api", &t)),
            Denial::Invalid(Invalid::Algorithm)
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// The check over arbitrary input: never panics, answers only 200/401/403, and every
        /// denial renders as a valid header value and JSON.
        #[test]
        fn check_is_total(
            method in "[A-Z]{0,8}",
            path in "[ -~]{0,64}",
            auth in "[ -~]{0,128}",
            cookie in "[ -~]{0,64}",
        ) {
            let f = fixture_cached();
            let d = f.check_with(&method, &path, &[("authorization", &auth), ("cookie", &cookie)]);
            if let Decision::Deny(d) = d {
                proptest::prop_assert!(matches!(d.status(), 401 | 403));
                proptest::prop_assert!(d.www_authenticate().is_none_or(|v| http::HeaderValue::from_str(&v).is_ok()));
                proptest::prop_assert!(serde_json::from_str::<serde_json::Value>(&d.json_body()).is_ok());
            }
        }
    }

    fn fixture_cached() -> &'static Fixture {
        static F: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
        F.get_or_init(|| fixture(""))
    }
}
