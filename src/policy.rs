//! Route policy: which access a request path needs, and where its token may be (the
//! [`Sources`] of the matching route). Pure functions over strings; no transport types, no I/O.
//!
//! Paths are matched after normalisation (percent-decoding, `\` as `/` or not, duplicate slashes and
//! dot segments resolved, query ignored). Because a backend may decode a path once, twice, or
//! honour `;` parameters, the path is read under each of those interpretations and the
//! strictest access among them applies: a trick can only ever make a route *more* protected.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

use crate::config::{self, Access};
use crate::credentials::Sources;

/// A route rule with its methods upper-cased once.
#[derive(Debug, Clone)]
struct Rule {
    prefix: String,
    methods: Option<Vec<String>>,
    access: Access,
    sources: Option<Sources>,
}

/// Compiled `[policy]` section.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Vec<Rule>,
    sources: Sources,
    /// Also read paths as backends that fold case and trim trailing dots and spaces do.
    backend_folds: bool,
    /// Whether any rule's prefix has an upper-case letter.
    upper_case_rules: bool,
    /// `[compat] prefix` when the nethcti-middleware profile is on: denials under it speak
    /// that client's error dialect.
    nethcti_prefix: Option<String>,
}

/// What the policy says about one request.
#[derive(Debug, Clone, Copy)]
pub struct RouteDecision<'p> {
    pub access: Access,
    pub sources: &'p Sources,
}

impl Policy {
    pub fn new(cfg: &config::PolicyConfig) -> Self {
        let rules = if cfg.routes.is_empty() {
            vec![
                Rule::new("/auth/", Access::Public),
                Rule::new("/.well-known/", Access::Public),
                Rule::new("/", Access::Token),
            ]
        } else {
            cfg.routes
                .iter()
                .map(|r| Rule {
                    prefix: r.path_prefix.clone(),
                    methods: r
                        .methods
                        .as_ref()
                        .map(|m| m.iter().map(|s| s.to_ascii_uppercase()).collect()),
                    access: r.access,
                    sources: r.token_sources.as_ref().map(Sources::new),
                })
                .collect()
        };
        Self {
            upper_case_rules: rules
                .iter()
                .any(|r| r.prefix.bytes().any(|b| b.is_ascii_uppercase())),
            rules,
            sources: Sources::new(&cfg.token_sources),
            backend_folds: cfg.backend_folds_paths,
            nethcti_prefix: None,
        }
    }

    /// The query parameters that may carry a token on any route (removed before upstream).
    pub fn all_query_sources(&self) -> impl Iterator<Item = &str> {
        self.sources
            .query()
            .iter()
            .chain(
                self.rules
                    .iter()
                    .filter_map(|r| r.sources.as_ref())
                    .flat_map(|s| s.query().iter()),
            )
            .map(String::as_str)
    }

    /// Access needed by `method` on `raw_path` (path plus optional query, as received).
    pub fn route(&self, method: &str, raw_path: &str) -> RouteDecision<'_> {
        let path = raw_path.split(['?', '#']).next().unwrap_or("");
        let (access, rule) = if is_plain(path) {
            // The common case: its only reading, and (when backends fold) its folded one.
            self.strictest(method, std::iter::once(path))
        } else {
            let readings = interpretations(path, self.backend_folds);
            self.strictest(method, readings.iter().map(String::as_str))
        };
        RouteDecision {
            access,
            sources: rule
                .and_then(|r| r.sources.as_ref())
                .unwrap_or(&self.sources),
        }
    }

    /// The strictest access among the first matches of every reading (case-folded too when
    /// backends fold case). No rule at all: a token is needed.
    fn strictest<'a>(
        &self,
        method: &str,
        readings: impl Iterator<Item = &'a str>,
    ) -> (Access, Option<&Rule>) {
        let access_of = |rule: Option<&Rule>| rule.map_or(Access::Token, |r| r.access);
        let mut strictest: Option<(Access, Option<&Rule>)> = None;
        for reading in readings {
            let exact = self.first_match(method, reading, false);
            // Folding changes nothing when neither side has an upper-case letter.
            let fold = self.backend_folds
                && (self.upper_case_rules || reading.bytes().any(|b| b.is_ascii_uppercase()));
            let folded = fold.then(|| self.first_match(method, reading, true));
            for rule in std::iter::once(exact).chain(folded) {
                let access = access_of(rule);
                let combined = strictest.map_or(access, |(a, _)| stricter(a, access));
                if strictest.is_none_or(|(a, _)| combined != a) {
                    strictest = Some((combined, rule));
                }
            }
        }
        strictest.unwrap_or((Access::Token, None))
    }

    fn first_match(&self, method: &str, path: &str, fold: bool) -> Option<&Rule> {
        self.rules.iter().find(|r| {
            prefix_matches(&r.prefix, path, fold)
                && r.methods
                    .as_ref()
                    .is_none_or(|m| m.iter().any(|x| x.eq_ignore_ascii_case(method)))
        })
    }

    /// Puts `prefixes` first, refused outright, unless a configured route names a path under
    /// one of them itself (the operator then decides). For a backend's own login routes,
    /// where a client could guess passwords outside lockout and 2FA.
    pub fn deny_first(self, prefixes: &[&str]) -> Self {
        self.first(Access::Deny, prefixes)
    }

    /// Puts `prefixes` first with `access`, unless a configured route names a path under one
    /// of them itself.
    fn first(mut self, access: Access, prefixes: &[&str]) -> Self {
        for prefix in prefixes.iter().rev() {
            let named = self
                .rules
                .iter()
                .any(|r| prefix_matches(prefix, &r.prefix, true));
            if !named {
                self.upper_case_rules |= prefix.bytes().any(|b| b.is_ascii_uppercase());
                self.rules.insert(0, Rule::new(prefix, access));
            }
        }
        self
    }

    /// The nethcti-middleware profile under `prefix` (SPEC 2.7): the proxy strips `prefix`
    /// before nethcti-server, so `prefix/authentication/` is its legacy login (closed) and
    /// `prefix/static/` its public files; denials under `prefix` speak the client's dialect.
    pub fn with_nethcti_profile(self, prefix: &str) -> Self {
        let static_files = format!("{prefix}/static/");
        let legacy_login = format!("{prefix}/authentication/");
        let mut policy = self
            .first(Access::Public, &[&static_files])
            .first(Access::Deny, &[&legacy_login]);
        policy.nethcti_prefix = Some(prefix.to_owned());
        policy
    }

    /// The error dialect of the route of `raw_path`: nethcti-middleware's under its prefix
    /// (when the profile is on), authgate's own elsewhere.
    pub fn dialect(&self, raw_path: &str) -> Dialect {
        let Some(prefix) = &self.nethcti_prefix else {
            return Dialect::OAuth;
        };
        let path = raw_path.split(['?', '#']).next().unwrap_or("");
        let under = |p: &str| prefix_matches(prefix, p, true);
        if under(path) || under(&normalise(path)) {
            Dialect::Nethcti
        } else {
            Dialect::OAuth
        }
    }
}

/// How errors look to the client of a route: authgate's own RFC 6749/6750 shape, or the
/// nethcti-middleware shape its client reads (SPEC 2.7, under `[compat] prefix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `{"error","error_description"}`, realm `authgate`.
    OAuth,
    /// `{"code","message","data":null}` (and `error`, so tooling keyed on it still works),
    /// realm `nethcti`.
    Nethcti,
}

impl Dialect {
    pub(crate) fn realm(self) -> &'static str {
        match self {
            Dialect::OAuth => "authgate",
            Dialect::Nethcti => "nethcti",
        }
    }

    /// `WWW-Authenticate` for a 401 or 403 of this dialect that is not a token denial (a
    /// failed login): `Bearer realm="..."`.
    pub fn plain_challenge(self) -> String {
        format!(r#"Bearer realm="{}""#, self.realm())
    }
}

impl Rule {
    fn new(prefix: &str, access: Access) -> Self {
        Self {
            prefix: prefix.into(),
            methods: None,
            access,
            sources: None,
        }
    }
}

/// `/auth/` matches `/auth/x` and `/auth`; `/api` matches `/api`, `/api/x` but not `/apix`.
/// With `fold`, ASCII case does not count.
fn prefix_matches(prefix: &str, path: &str, fold: bool) -> bool {
    let eq = |a: &[u8], b: &[u8]| {
        if fold {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };
    let (prefix, path) = (prefix.as_bytes(), path.as_bytes());
    let starts = path.len() >= prefix.len() && eq(&path[..prefix.len()], prefix);
    if prefix.ends_with(b"/") {
        starts || eq(path, &prefix[..prefix.len() - 1])
    } else {
        starts && (path.len() == prefix.len() || path[prefix.len()] == b'/')
    }
}

/// A path every backend reads the same way (but for case): absolute, nothing encoded, no
/// `\\`, `;` or space, no dot or empty segments, no segment ending in a dot.
fn is_plain(path: &str) -> bool {
    path.starts_with('/')
        && !path
            .bytes()
            .any(|b| matches!(b, b'%' | b'\\' | b';' | b' '))
        && !path.contains("/.")
        && !path.contains("./")
        && !path.ends_with('.')
        && !path.contains("//")
}

/// The readings of `path` a backend might make: percent-decoded once or until stable (at
/// most five rounds), `\\` as a separator or as a plain character (nginx keeps it, some
/// backends split on it), `;` segment parameters kept or dropped. All normalised. With
/// `trim`, also each of those with trailing dots and spaces cut from every segment, as
/// Windows/IIS-hosted backends read `/admin.` or `/admin%20` as `/admin`. (A plain path is its
/// only reading; `route` does not ask for it.)
fn interpretations(path: &str, trim: bool) -> Vec<String> {
    let once = decode(path).into_owned();
    let mut full = once.clone();
    for _ in 0..4 {
        let next = decode(&full);
        if next == full {
            break;
        }
        full = next.into_owned();
    }
    let mut out: Vec<String> = Vec::new();
    for decoded in [&once, &full] {
        let without_params = decoded.contains(';').then(|| {
            decoded
                .split('/')
                .map(|seg| seg.split(';').next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("/")
        });
        for variant in std::iter::once(decoded).chain(without_params.as_ref()) {
            for backslash_separates in [false, true] {
                let n = normalise_with(variant, backslash_separates);
                let trimmed = trim.then(|| trim_segments(&n));
                for reading in std::iter::once(n).chain(trimmed) {
                    if !out.contains(&reading) {
                        out.push(reading);
                    }
                }
            }
        }
    }
    out
}

/// `normalised` with trailing dots and spaces cut from each segment (segments left empty
/// dropped), keeping a trailing slash.
fn trim_segments(normalised: &str) -> String {
    let mut out = String::with_capacity(normalised.len());
    for seg in normalised.split('/').filter(|s| !s.is_empty()) {
        let seg = seg.trim_end_matches(['.', ' ']);
        if !seg.is_empty() {
            out.push('/');
            out.push_str(seg);
        }
    }
    if out.is_empty() || normalised.ends_with('/') {
        out.push('/');
    }
    out
}

fn decode(s: &str) -> Cow<'_, str> {
    percent_decode_str(s).decode_utf8_lossy()
}

/// Resolves `\\`, empty and dot segments; the result starts with `/` and has no `//`.
/// The stricter of two accesses. A service route and a user route read from one request
/// admit no token at all: that request is denied.
fn stricter(a: Access, b: Access) -> Access {
    let user = |x| matches!(x, Access::Token | Access::Mfa);
    match (a, b) {
        (Access::Service, x) | (x, Access::Service) if user(x) => Access::Deny,
        _ => a.max(b),
    }
}

pub fn normalise(path: &str) -> String {
    normalise_with(path, true)
}

fn normalise_with(path: &str, backslash_separates: bool) -> String {
    let unified: Cow<'_, str> = if backslash_separates && path.contains('\\') {
        Cow::Owned(path.replace('\\', "/"))
    } else {
        Cow::Borrowed(path)
    };
    let mut segments: Vec<&str> = Vec::new();
    for seg in unified.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    let last = unified.rsplit('/').next().unwrap_or("");
    if out.is_empty() || last.is_empty() || last == "." || last == ".." {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::credentials::present_query_params;
    use proptest::prelude::*;

    fn default_policy() -> Policy {
        Policy::new(&config::PolicyConfig::default())
    }

    #[test]
    fn normalise_resolves_dots_and_slashes() {
        for (input, want) in [
            ("/", "/"),
            ("", "/"),
            ("/a//b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/../../etc", "/etc"),
            ("/auth/", "/auth/"),
            ("/auth/..", "/"),
            ("\\auth\\..\\admin", "/admin"),
            ("/a/b/.", "/a/b/"),
        ] {
            assert_eq!(normalise(input), want, "{input}");
        }
    }

    #[test]
    fn defaults_make_auth_and_well_known_public() {
        let p = default_policy();
        assert_eq!(p.route("POST", "/auth/login").access, Access::Public);
        assert_eq!(
            p.route("GET", "/.well-known/jwks.json").access,
            Access::Public
        );
        assert_eq!(p.route("GET", "/api/x").access, Access::Token);
        assert_eq!(p.route("GET", "/").access, Access::Token);
        assert_eq!(p.route("GET", "/authx").access, Access::Token);
    }

    #[test]
    fn path_tricks_do_not_reach_public_routes() {
        let p = default_policy();
        for trick in [
            "/auth/../admin",
            "/auth/%2e%2e/admin",
            "/auth/%2E%2E/admin",
            "/auth/..%2Fadmin",
            "/auth/..%2fadmin",
            "/auth%2F..%2Fadmin",
            "//auth/../admin",
            "/admin?x=/auth/login",
            "/admin#/auth/login",
            "/auth/%252e%252e/admin",
            "/auth/..%252Fadmin",
            "/auth/..;/admin",
            "/auth\\..\\admin",
            "/auth\\admin",
            "/auth%5Cadmin",
            "/auth%5C..%5Cadmin",
            "/.well-known/../admin",
            "/auth/./../admin",
        ] {
            assert_eq!(p.route("GET", trick).access, Access::Token, "{trick}");
        }
    }

    #[test]
    fn strictest_interpretation_wins_both_ways() {
        // Protected under one reading, public under another: protected.
        let p = default_policy();
        assert_eq!(
            p.route("GET", "/x/..%252F..%252Fauth/login").access,
            Access::Token
        );
        assert_eq!(
            p.route("GET", "/auth/login%3Bjsessionid=1").access,
            Access::Public
        );
    }

    #[test]
    fn methods_and_mfa_routes() {
        let cfg: config::PolicyConfig = toml::from_str(
            r#"
[[routes]]
path_prefix = "/admin"
access = "mfa"
[[routes]]
path_prefix = "/public"
methods = ["get"]
access = "public"
[[routes]]
path_prefix = "/"
access = "token"
"#,
        )
        .unwrap();
        let p = Policy::new(&cfg);
        assert_eq!(p.route("GET", "/admin/users").access, Access::Mfa);
        assert_eq!(p.route("GET", "/administrator").access, Access::Token);
        assert_eq!(p.route("GET", "/public/x").access, Access::Public);
        assert_eq!(p.route("POST", "/public/x").access, Access::Token);
        assert_eq!(p.route("GET", "/public/../admin").access, Access::Mfa);
    }

    fn admin_mfa(backend_folds_paths: bool) -> Policy {
        let mut cfg: config::PolicyConfig = toml::from_str(
            r#"
[[routes]]
path_prefix = "/admin"
access = "mfa"
[[routes]]
path_prefix = "/"
access = "token"
"#,
        )
        .unwrap();
        cfg.backend_folds_paths = backend_folds_paths;
        Policy::new(&cfg)
    }

    /// Backends that fold case or trim trailing dots and spaces (Express, IIS, Spring) read
    /// these as `/admin`: so does the policy, by default.
    const FOLDED_ADMIN: [&str; 11] = [
        "/ADMIN",
        "/Admin/users",
        "/%41DMIN",
        "/%61dmin",
        "/admin.",
        "/admin./users",
        "/admin%20",
        "/admin%2e",
        "/admin..;/",
        "/ADMIN..;/users",
        "/admin .",
    ];

    #[test]
    fn case_and_trailing_readings_reach_mfa_routes() {
        let p = admin_mfa(true);
        for path in FOLDED_ADMIN {
            assert_eq!(p.route("GET", path).access, Access::Mfa, "{path}");
        }
        // Neighbours stay what they are.
        for path in ["/administrator", "/admins", "/api/admin.", "/adm"] {
            assert_eq!(p.route("GET", path).access, Access::Token, "{path}");
        }
        // Exact matching when the operator says every backend matches exactly.
        let exact = admin_mfa(false);
        assert_eq!(exact.route("GET", "/ADMIN").access, Access::Token);
        assert_eq!(exact.route("GET", "/admin").access, Access::Mfa);
    }

    #[test]
    fn folding_never_opens_a_public_route() {
        let p = default_policy();
        for path in ["/AUTH/login", "/Auth/login", "/.WELL-KNOWN/jwks.json"] {
            assert_eq!(p.route("GET", path).access, Access::Token, "{path}");
        }
        assert_eq!(p.route("GET", "/auth./login").access, Access::Token);
    }

    #[test]
    fn a_service_route_read_as_a_user_route_too_is_denied() {
        assert_eq!(stricter(Access::Service, Access::Token), Access::Deny);
        assert_eq!(stricter(Access::Mfa, Access::Service), Access::Deny);
        assert_eq!(stricter(Access::Public, Access::Service), Access::Service);
        assert_eq!(stricter(Access::Service, Access::Deny), Access::Deny);
        assert_eq!(stricter(Access::Token, Access::Mfa), Access::Mfa);
    }

    #[test]
    fn backend_login_routes_are_closed_first() {
        let p = default_policy().deny_first(&["/authentication/"]);
        for path in [
            "/authentication/login",
            "/authentication",
            "/Authentication/login",
            "/x/../authentication/login",
            "/%61uthentication/login",
            "/auth/../authentication/login",
        ] {
            assert_eq!(p.route("POST", path).access, Access::Deny, "{path}");
        }
        assert_eq!(p.route("GET", "/api/x").access, Access::Token);
        assert_eq!(p.route("POST", "/auth/login").access, Access::Public);
        // A configured route under it is the operator's decision.
        let cfg: config::PolicyConfig = toml::from_str(
            r#"
[[routes]]
path_prefix = "/authentication/logout"
access = "token"
[[routes]]
path_prefix = "/"
access = "token"
"#,
        )
        .unwrap();
        let p = Policy::new(&cfg).deny_first(&["/authentication/"]);
        assert_eq!(
            p.route("POST", "/authentication/login").access,
            Access::Token
        );
    }

    #[test]
    fn lists_query_params_to_remove() {
        let p = default_policy();
        let got = present_query_params(
            "/x?a=1&access_token=t&b=2&authorization=x",
            p.all_query_sources(),
        );
        assert_eq!(
            got,
            vec!["access_token".to_owned(), "authorization".to_owned()]
        );
        assert!(present_query_params("/x?a=1", p.all_query_sources()).is_empty());
    }

    proptest! {
        #[test]
        fn routing_never_panics_and_normalised_paths_are_canonical(path in "[/a-z.%2eEfF;\\\\?#]{0,40}") {
            let p = default_policy();
            let _ = p.route("GET", &path);
            let n = normalise(&path);
            prop_assert!(n.starts_with('/'));
            prop_assert!(!n.contains("//"));
            prop_assert!(!n.split('/').any(|s| s == ".." || s == "."));
        }
    }
}
