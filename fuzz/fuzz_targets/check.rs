//! Fuzz target for the whole check: `Checker::check` over method, path, `Authorization` and
//! `Cookie`, followed by the gRPC response builder, with the invariants a client or the
//! backend relies on asserted after every call.
//!
//! One `Checker` is built once (keys in a temporary directory, a manual clock) with a policy
//! that has public, token, MFA, method-restricted and custom-token-source routes. A handful of
//! genuine tokens are minted at start-up (access with and without `otp`, with a backend
//! credential, refresh, MFA-pending, revoked, not yet valid, and one signed by a foreign key) so
//! inputs can splice them in whole, mutated, truncated or re-assembled with forged headers and
//! payloads: the fuzzer reaches the cache-hit and allow paths, not only parse failures.
//!
//! Invariants:
//! - nothing panics (the check, the denial renderings, `grpc::check_response`);
//! - a denial is 401 or 403, its `WWW-Authenticate` is a valid header value and its JSON body
//!   has a string `error`; the gRPC answer carries the same status;
//! - an allow on a non-public route names a user and session, and only for a genuine access
//!   token of ours that is current, not revoked, and carries `otp` on an MFA route;
//! - an allow on a public route names nobody and only strips the identity headers;
//! - the accepted token does not travel upstream in `Authorization` or in its cookie;
//! - an exact `Authorization: Bearer <minted token>` gets exactly the expected decision.

#![no_main]

use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use authgate::clock::Clock;
use authgate::config::{Access, Config};
use authgate::decision::{Allow, Checker, Decision, Denial, Request};
use authgate::policy::{self, Policy};
use authgate::revocation::Revocations;
use authgate::token::{Kind, TokenService};
use envoy_types::ext_authz::v3::pb::HttpResponse;
use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;

// The hostile-token builders of the tests, one source for both (only a part is used here).
#[allow(dead_code)]
#[path = "../../tests/support/hostile.rs"]
mod hostile;

const T0: u64 = 1_800_000_000;
const TTL: u64 = 900;
const LEEWAY: u64 = 30;
/// `iat` of the token minted in the future.
const LATER: u64 = T0 + 3600;
const CREDENTIAL: &str = "bob:legacy-0123456789abcdef";

const POLICY: &str = r#"
[tokens]
access_ttl = "15m"
leeway = "30s"

[[policy.routes]]
path_prefix = "/auth/"
access = "public"

[[policy.routes]]
path_prefix = "/.well-known/"
access = "public"

[[policy.routes]]
path_prefix = "/admin"
access = "mfa"

[[policy.routes]]
path_prefix = "/docs"
methods = ["get", "HEAD"]
access = "public"

[[policy.routes]]
path_prefix = "/events"
access = "token"
[policy.routes.token_sources]
header = false
query = ["ticket", "access_token"]
cookie = ""

[[policy.routes]]
path_prefix = "/app/"
access = "token"
[policy.routes.token_sources]
cookie = "app_session"

[[policy.routes]]
path_prefix = "/"
access = "token"
"#;

/// The tokens minted at start-up.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum Minted {
    Pwd,
    Otp,
    Cred,
    Refresh,
    Mfa,
    Revoked,
    Future,
    Foreign,
}

const ALL_MINTED: [Minted; 8] = [
    Minted::Pwd,
    Minted::Otp,
    Minted::Cred,
    Minted::Refresh,
    Minted::Mfa,
    Minted::Revoked,
    Minted::Future,
    Minted::Foreign,
];

/// What each minted token is, as the oracle needs it.
struct Spec {
    minted: Minted,
    kind: Kind,
    sub: &'static str,
    sid: &'static str,
    amr: &'static [&'static str],
    iat: u64,
    /// Signed with our key (the foreign one is not).
    ours: bool,
    revoked: bool,
    credential: bool,
}

const SPECS: [Spec; 8] = [
    Spec {
        minted: Minted::Pwd,
        kind: Kind::Access,
        sub: "alice",
        sid: "sid-pwd",
        amr: &["pwd"],
        iat: T0,
        ours: true,
        revoked: false,
        credential: false,
    },
    Spec {
        minted: Minted::Otp,
        kind: Kind::Access,
        sub: "alice",
        sid: "sid-otp",
        amr: &["pwd", "otp"],
        iat: T0,
        ours: true,
        revoked: false,
        credential: false,
    },
    Spec {
        minted: Minted::Cred,
        kind: Kind::Access,
        sub: "bob",
        sid: "sid-cred",
        amr: &["pwd"],
        iat: T0,
        ours: true,
        revoked: false,
        credential: true,
    },
    Spec {
        minted: Minted::Refresh,
        kind: Kind::Refresh,
        sub: "alice",
        sid: "sid-refresh",
        amr: &["pwd", "otp"],
        iat: T0,
        ours: true,
        revoked: false,
        credential: false,
    },
    Spec {
        minted: Minted::Mfa,
        kind: Kind::Mfa,
        sub: "alice",
        sid: "sid-mfa",
        amr: &["pwd"],
        iat: T0,
        ours: true,
        revoked: false,
        credential: false,
    },
    Spec {
        minted: Minted::Revoked,
        kind: Kind::Access,
        sub: "alice",
        sid: "sid-revoked",
        amr: &["pwd", "otp"],
        iat: T0,
        ours: true,
        revoked: true,
        credential: false,
    },
    Spec {
        minted: Minted::Future,
        kind: Kind::Access,
        sub: "carol",
        sid: "sid-future",
        amr: &["pwd", "otp"],
        iat: LATER,
        ours: true,
        revoked: false,
        credential: false,
    },
    Spec {
        minted: Minted::Foreign,
        kind: Kind::Access,
        sub: "mallory",
        sid: "sid-foreign",
        amr: &["pwd", "otp"],
        iat: T0,
        ours: false,
        revoked: false,
        credential: false,
    },
];

fn spec(m: Minted) -> &'static Spec {
    &SPECS[m as usize]
}

struct Fixture {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    clock: Clock,
    checker: Checker,
    tokens: Vec<String>,
    /// `kid` of our signing key, for forged headers.
    kid: String,
}

impl Fixture {
    fn token(&self, m: Minted) -> &str {
        &self.tokens[m as usize]
    }

    /// A segment (0 header, 1 payload, 2 signature) of a minted token.
    fn segment(&self, m: Minted, i: usize) -> &str {
        hostile::segment(self.token(m), i)
    }
}

fn service(dir: &tempfile::TempDir, clock: &Clock) -> (Config, TokenService) {
    let text = format!("[store]\npath = {:?}\n{POLICY}", dir.path());
    let cfg = Config::from_toml_str(&text).expect("fuzz config");
    let tokens = TokenService::new(&cfg, clock.clone()).expect("token service");
    (cfg, tokens)
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let ours = tempfile::tempdir().expect("temp dir");
        let theirs = tempfile::tempdir().expect("temp dir");
        let clock = Clock::manual(T0);
        let (cfg, tokens) = service(&ours, &clock);
        let (_, foreign) = service(&theirs, &clock);
        let credential = SecretString::from(CREDENTIAL.to_owned());
        let mut minted = Vec::new();
        for (i, s) in SPECS.iter().enumerate() {
            assert_eq!(s.minted as usize, i);
            clock.set(s.iat);
            let svc = if s.ours { &tokens } else { &foreign };
            let cred = s.credential.then_some(&credential);
            let (t, _) = svc
                .mint(s.kind, s.sub, s.sid, s.amr, TTL, cred)
                .expect("mint");
            minted.push(t);
        }
        clock.set(T0);
        let kid = hostile::jwt_part(&minted[0], 0)["kid"]
            .as_str()
            .expect("kid")
            .to_owned();
        let revocations = Revocations::new(clock.clone());
        for s in SPECS.iter().filter(|s| s.revoked) {
            revocations.revoke(s.sid, LATER + TTL + LEEWAY);
        }
        let checker = Checker {
            tokens: Arc::new(tokens),
            policy: Policy::new(&cfg.policy),
            revocations: Arc::new(revocations),
        };
        Fixture {
            _dirs: (ours, theirs),
            clock,
            checker,
            tokens: minted,
            kid,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Structured input

#[derive(Arbitrary, Debug)]
struct Input {
    method: Method,
    path: PathIn,
    authorization: Option<AuthIn>,
    cookie: Option<CookieIn>,
    /// Seconds after `T0 - 100` (clock at `T0` when absent); crosses iat, exp and leeway.
    now: Option<u16>,
}

#[derive(Arbitrary, Debug)]
enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    LowerGet,
    Raw(String),
}

impl Method {
    fn render(&self) -> String {
        match self {
            Method::Get => "GET".into(),
            Method::Head => "HEAD".into(),
            Method::Post => "POST".into(),
            Method::Put => "PUT".into(),
            Method::Delete => "DELETE".into(),
            Method::Options => "OPTIONS".into(),
            Method::LowerGet => "get".into(),
            Method::Raw(s) => s.clone(),
        }
    }
}

/// Characters a token is mutated with: the b64token alphabet plus separators that matter.
const ALPHABET: &[u8] = b"ABCXYZabcxyz019-_.~+/= ,;\"%\\\t";

#[derive(Arbitrary, Debug)]
enum TokenPart {
    Minted(Minted),
    /// One character replaced.
    Mutated {
        which: Minted,
        at: u16,
        with: u8,
    },
    Truncated {
        which: Minted,
        len: u16,
    },
    /// Minted token concatenated with itself (reaches the length limit).
    Repeated {
        which: Minted,
        times: u8,
    },
    /// Segments of minted tokens mixed: header of one, payload of another, signature of a third.
    Spliced {
        header: Minted,
        payload: Minted,
        signature: Minted,
    },
    Forged(Box<Forged>),
    Raw(String),
}

impl TokenPart {
    fn render(&self, f: &Fixture) -> String {
        match self {
            TokenPart::Minted(m) => f.token(*m).to_owned(),
            TokenPart::Mutated { which, at, with } => {
                let mut bytes = f.token(*which).as_bytes().to_vec();
                let i = usize::from(*at) % bytes.len().max(1);
                if let Some(b) = bytes.get_mut(i) {
                    *b = ALPHABET[usize::from(*with) % ALPHABET.len()];
                }
                String::from_utf8_lossy(&bytes).into_owned()
            }
            TokenPart::Truncated { which, len } => {
                let t = f.token(*which);
                t[..usize::from(*len) % (t.len() + 1)].to_owned()
            }
            TokenPart::Repeated { which, times } => f.token(*which).repeat(usize::from(*times)),
            TokenPart::Spliced {
                header,
                payload,
                signature,
            } => hostile::compact(
                f.segment(*header, 0),
                f.segment(*payload, 1),
                f.segment(*signature, 2),
            ),
            TokenPart::Forged(forged) => forged.render(f),
            TokenPart::Raw(s) => s.clone(),
        }
    }
}

/// A JWS assembled from chosen header fields, claims and signature.
#[derive(Arbitrary, Debug)]
struct Forged {
    header: ForgedHeader,
    payload: ForgedPayload,
    signature: ForgedSig,
}

#[derive(Arbitrary, Debug)]
enum ForgedHeader {
    Fields {
        alg: Alg,
        typ: Typ,
        kid: Kid,
    },
    /// Any text, base64url-encoded.
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Alg {
    EdDSA,
    ES256,
    RS256,
    HS256,
    None,
    Absent,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Typ {
    Access,
    AccessUpper,
    Refresh,
    Mfa,
    Jwt,
    Absent,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Kid {
    Ours,
    Absent,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum ForgedPayload {
    Of(Minted),
    Claims {
        sub: Option<String>,
        sid: Option<String>,
        right_issuer: bool,
        right_audience: bool,
        exp_offset: i32,
        nbf: Option<u32>,
        amr: Vec<String>,
        cred: Option<String>,
    },
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum ForgedSig {
    Of(Minted),
    Empty,
    Raw(Vec<u8>),
}

impl Forged {
    fn render(&self, f: &Fixture) -> String {
        use hostile::{b64json, b64url};
        let header = match &self.header {
            ForgedHeader::Fields { alg, typ, kid } => {
                let mut h = serde_json::Map::new();
                let alg = match alg {
                    Alg::EdDSA => Some("EdDSA".to_owned()),
                    Alg::ES256 => Some("ES256".to_owned()),
                    Alg::RS256 => Some("RS256".to_owned()),
                    Alg::HS256 => Some("HS256".to_owned()),
                    Alg::None => Some("none".to_owned()),
                    Alg::Absent => None,
                    Alg::Raw(s) => Some(s.clone()),
                };
                if let Some(alg) = alg {
                    h.insert("alg".into(), alg.into());
                }
                let typ = match typ {
                    Typ::Access => Some("at+jwt".to_owned()),
                    Typ::AccessUpper => Some("AT+JWT".to_owned()),
                    Typ::Refresh => Some("refresh+jwt".to_owned()),
                    Typ::Mfa => Some("mfa+jwt".to_owned()),
                    Typ::Jwt => Some("JWT".to_owned()),
                    Typ::Absent => None,
                    Typ::Raw(s) => Some(s.clone()),
                };
                if let Some(typ) = typ {
                    h.insert("typ".into(), typ.into());
                }
                match kid {
                    Kid::Ours => {
                        h.insert("kid".into(), f.kid.clone().into());
                    }
                    Kid::Absent => {}
                    Kid::Raw(s) => {
                        h.insert("kid".into(), s.clone().into());
                    }
                }
                b64json(&serde_json::Value::Object(h))
            }
            ForgedHeader::Raw(s) => b64url(s.as_bytes()),
        };
        let payload = match &self.payload {
            ForgedPayload::Of(m) => f.segment(*m, 1).to_owned(),
            ForgedPayload::Claims {
                sub,
                sid,
                right_issuer,
                right_audience,
                exp_offset,
                nbf,
                amr,
                cred,
            } => {
                let mut c = serde_json::json!({
                    "iss": if *right_issuer { "authgate" } else { "someone-else" },
                    "aud": if *right_audience { "authgate" } else { "someone-else" },
                    "iat": T0,
                    "exp": T0.saturating_add_signed(i64::from(*exp_offset)),
                    "jti": "forged",
                    "amr": amr,
                });
                if let Some(sub) = sub {
                    c["sub"] = sub.clone().into();
                }
                if let Some(sid) = sid {
                    c["sid"] = sid.clone().into();
                }
                if let Some(nbf) = nbf {
                    c["nbf"] = (*nbf).into();
                }
                if let Some(cred) = cred {
                    c["cred"] = cred.clone().into();
                }
                b64json(&c)
            }
            ForgedPayload::Raw(s) => b64url(s.as_bytes()),
        };
        let signature = match &self.signature {
            ForgedSig::Of(m) => f.segment(*m, 2).to_owned(),
            ForgedSig::Empty => String::new(),
            ForgedSig::Raw(bytes) => b64url(bytes),
        };
        hostile::compact(&header, &payload, &signature)
    }
}

#[derive(Arbitrary, Debug)]
enum PathIn {
    Structured {
        prefix: Prefix,
        segments: Vec<Segment>,
        query: Option<Vec<QueryPair>>,
        fragment: Option<String>,
    },
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Prefix {
    Empty,
    Root,
    Api,
    AuthLogin,
    Auth,
    WellKnown,
    Admin,
    Docs,
    Events,
    App,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Segment {
    Name(String),
    Dot,
    DotDot,
    EncodedDotDot,
    DoubleEncodedDotDot,
    EncodedSlash,
    Backslash,
    Semicolon(String),
    Empty,
    Auth,
    Admin,
}

impl PathIn {
    fn render(&self, f: &Fixture) -> String {
        let (prefix, segments, query, fragment) = match self {
            PathIn::Structured {
                prefix,
                segments,
                query,
                fragment,
            } => (prefix, segments, query, fragment),
            PathIn::Raw(s) => return s.clone(),
        };
        let mut out = match prefix {
            Prefix::Empty => String::new(),
            Prefix::Root => "/".into(),
            Prefix::Api => "/api".into(),
            Prefix::AuthLogin => "/auth/login".into(),
            Prefix::Auth => "/auth".into(),
            Prefix::WellKnown => "/.well-known/jwks.json".into(),
            Prefix::Admin => "/admin".into(),
            Prefix::Docs => "/docs".into(),
            Prefix::Events => "/events".into(),
            Prefix::App => "/app/".into(),
            Prefix::Raw(s) => s.clone(),
        };
        for seg in segments {
            let (lead, text): (&str, &str) = match seg {
                Segment::Name(s) => ("/", s),
                Segment::Dot => ("/.", ""),
                Segment::DotDot => ("/..", ""),
                Segment::EncodedDotDot => ("/%2e%2E", ""),
                Segment::DoubleEncodedDotDot => ("/%252e%252e", ""),
                Segment::EncodedSlash => ("%2F", ""),
                Segment::Backslash => ("\\", ""),
                Segment::Semicolon(s) => (";", s),
                Segment::Empty => ("/", ""),
                Segment::Auth => ("/auth", ""),
                Segment::Admin => ("/admin", ""),
            };
            out.push_str(lead);
            out.push_str(text);
        }
        if let Some(pairs) = query {
            out.push('?');
            let rendered: Vec<String> = pairs.iter().map(|p| p.render(f)).collect();
            out.push_str(&rendered.join("&"));
        }
        if let Some(fragment) = fragment {
            out.push('#');
            out.push_str(fragment);
        }
        out
    }
}

#[derive(Arbitrary, Debug)]
struct QueryPair {
    name: QueryName,
    value: QueryValue,
}

#[derive(Arbitrary, Debug)]
enum QueryName {
    AccessToken,
    Authorization,
    Ticket,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum QueryValue {
    Token(TokenPart),
    /// `Bearer%20<token>`, as EventSource clients send it.
    Bearer(TokenPart),
    Raw(String),
    /// The name alone, no `=`.
    Flag,
}

impl QueryPair {
    fn render(&self, f: &Fixture) -> String {
        let name = match &self.name {
            QueryName::AccessToken => "access_token",
            QueryName::Authorization => "authorization",
            QueryName::Ticket => "ticket",
            QueryName::Raw(s) => s,
        };
        match &self.value {
            QueryValue::Token(t) => format!("{name}={}", t.render(f)),
            QueryValue::Bearer(t) => format!("{name}=Bearer%20{}", t.render(f)),
            QueryValue::Raw(s) => format!("{name}={s}"),
            QueryValue::Flag => name.to_owned(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum AuthIn {
    Credential {
        scheme: Scheme,
        spaces: u8,
        token: TokenPart,
        trailer: Trailer,
    },
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Scheme {
    Bearer,
    Lower,
    Upper,
    Basic,
    Empty,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Trailer {
    None,
    /// A second credential, as a proxy joins repeated headers.
    Joined(TokenPart),
    Spaces,
    Raw(String),
}

impl AuthIn {
    fn render(&self, f: &Fixture) -> String {
        match self {
            AuthIn::Credential {
                scheme,
                spaces,
                token,
                trailer,
            } => {
                let mut out = match scheme {
                    Scheme::Bearer => "Bearer".to_owned(),
                    Scheme::Lower => "bearer".to_owned(),
                    Scheme::Upper => "BEARER".to_owned(),
                    Scheme::Basic => "Basic".to_owned(),
                    Scheme::Empty => String::new(),
                    Scheme::Raw(s) => s.clone(),
                };
                out.push_str(&" ".repeat(1 + usize::from(*spaces % 3)));
                out.push_str(&token.render(f));
                match trailer {
                    Trailer::None => {}
                    Trailer::Joined(t) => {
                        out.push_str(", Bearer ");
                        out.push_str(&t.render(f));
                    }
                    Trailer::Spaces => out.push_str("  "),
                    Trailer::Raw(s) => out.push_str(s),
                }
                out
            }
            AuthIn::Raw(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct CookieIn {
    pairs: Vec<CookiePair>,
    tight: bool,
}

#[derive(Arbitrary, Debug)]
struct CookiePair {
    name: CookieName,
    value: CookieValue,
    padded: bool,
}

#[derive(Arbitrary, Debug)]
enum CookieName {
    Ours,
    App,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum CookieValue {
    Token(TokenPart),
    Quoted(TokenPart),
    Raw(String),
    /// No `=` at all.
    Bare,
}

impl CookieIn {
    fn render(&self, f: &Fixture) -> String {
        let pairs: Vec<String> = self
            .pairs
            .iter()
            .map(|p| {
                let name = match &p.name {
                    CookieName::Ours => "authgate_access",
                    CookieName::App => "app_session",
                    CookieName::Raw(s) => s,
                };
                let pad = if p.padded { " " } else { "" };
                match &p.value {
                    CookieValue::Token(t) => format!("{pad}{name}={}{pad}", t.render(f)),
                    CookieValue::Quoted(t) => format!("{pad}{name}=\"{}\"{pad}", t.render(f)),
                    CookieValue::Raw(s) => format!("{pad}{name}={s}{pad}"),
                    CookieValue::Bare => format!("{pad}{name}{pad}"),
                }
            })
            .collect();
        pairs.join(if self.tight { ";" } else { "; " })
    }
}

struct Headers {
    authorization: Option<String>,
    cookie: Option<String>,
}

impl authgate::credentials::Headers for Headers {
    fn get(&self, name: &str) -> Option<&str> {
        match name {
            "authorization" => self.authorization.as_deref(),
            "cookie" => self.cookie.as_deref(),
            _ => None,
        }
    }

    fn repeated(&self, _: &str) -> bool {
        false
    }
}

// ---------------------------------------------------------------------------------------------
// Oracle

/// Whether a token minted at `iat` (valid `TTL`) passes the time checks at `now`.
fn current(iat: u64, now: u64) -> Result<(), Denial> {
    if now > iat + TTL + LEEWAY {
        return Err(Denial::Expired);
    }
    if iat > now + LEEWAY {
        return Err(Denial::NotYetValid);
    }
    Ok(())
}

/// The decision for exactly `Authorization: Bearer <minted>` on a route needing `access`.
fn expected(s: &Spec, access: Access, now: u64) -> Result<(), Denial> {
    if !s.ours {
        return Err(Denial::Invalid(authgate::token::Invalid::UnknownKey));
    }
    current(s.iat, now)?;
    if s.kind != Kind::Access {
        return Err(Denial::WrongKind);
    }
    if s.revoked {
        return Err(Denial::Revoked);
    }
    if access == Access::Mfa && !s.amr.contains(&"otp") {
        return Err(Denial::MfaRequired);
    }
    Ok(())
}

fn cookie_names(header: &str) -> impl Iterator<Item = &str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('=').map(|(k, _)| k))
}

/// Whether the fuzz policy makes `path` (already normalised) public for `method`.
fn public_route(method: &str, path: &str) -> bool {
    let under = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
    under("/auth")
        || under("/.well-known")
        || ((method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD"))
            && under("/docs"))
}

/// Two readings a backend may make of `raw_path`: percent-decoded once, and until stable;
/// both normalised with `\` as a separator.
fn readings(raw_path: &str) -> [String; 2] {
    let path = raw_path.split(['?', '#']).next().unwrap_or("");
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let once = decode(path);
    // As `policy` does: at most four more decodes (nobody decodes a path six times).
    let mut full = once.clone();
    for _ in 0..4 {
        let next = decode(&full);
        if next == full {
            break;
        }
        full = next;
    }
    [policy::normalise(&once), policy::normalise(&full)]
}

fn check_denial(d: Denial) {
    assert!(matches!(d.status(), 401 | 403), "status of {d:?}");
    // The fuzz policy closes no route, so every denial has a challenge.
    let www = d.www_authenticate().expect("a WWW-Authenticate challenge");
    assert!(
        http::HeaderValue::from_str(&www).is_ok(),
        "WWW-Authenticate is no header value: {www:?}"
    );
    assert!(www.starts_with("Bearer "), "{www:?}");
    let body: serde_json::Value = serde_json::from_str(&d.json_body()).expect("JSON body");
    assert!(body["error"].is_string(), "{body}");
    assert!(body["error_description"].is_string(), "{body}");
    assert!(!d.outcome().label().is_empty());
}

/// The request as sent and what the policy says about it.
struct Case<'a> {
    method: &'a str,
    path: &'a str,
    cookie: Option<&'a str>,
    now: u64,
    access: Access,
    route_cookie: &'a str,
    query_names: Vec<&'a str>,
}

fn check_allow(a: &Allow, c: &Case<'_>) {
    let Case {
        method,
        path,
        cookie: cookie_in,
        now,
        access,
        route_cookie,
        ref query_names,
    } = *c;
    let query = path.split_once('?').map(|(_, q)| q);
    for name in &a.remove_query {
        assert!(query_names.contains(&name.as_str()), "removes {name:?}");
        assert!(query.is_some_and(|q| q.contains(name.as_str())), "{name:?}");
    }
    if access == Access::Public {
        // However the backend reads the path, it is a public route.
        for reading in readings(path) {
            assert!(
                public_route(method, &reading),
                "public for {path:?}, but a backend may read {reading:?}"
            );
        }
        assert!(a.user.is_none() && a.session.is_none(), "{a:?}");
        assert!(a.set_headers.is_empty(), "{a:?}");
        assert_eq!(a.remove_headers, ["x-auth-user", "x-auth-session"]);
        return;
    }
    let (Some(user), Some(session)) = (&a.user, &a.session) else {
        panic!("allowed on a {access:?} route without a user: {a:?}");
    };
    let s = SPECS
        .iter()
        .find(|s| s.sid == &**session)
        .unwrap_or_else(|| panic!("allowed an unknown session {session:?}"));
    assert_eq!(s.sub, &**user);
    assert_eq!(
        expected(s, access, now),
        Ok(()),
        "allowed {:?} on a {access:?} route at T0{:+}",
        s.minted,
        now as i64 - T0 as i64
    );
    let set = |name: &str| {
        a.set_headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(set("x-auth-user"), Some(s.sub));
    assert_eq!(set("x-auth-session"), Some(s.sid));
    // The bearer token never reaches the backend: replaced by the credential or removed.
    match set("authorization") {
        Some(v) => {
            assert!(s.credential, "{a:?}");
            assert_eq!(v, CREDENTIAL);
        }
        None => {
            assert!(!s.credential, "{a:?}");
            assert!(a.remove_headers.contains(&"authorization"), "{a:?}");
        }
    }
    // Neither does its cookie, when the cookie was rewritten.
    if let Some(rest) = set("cookie") {
        assert!(!a.remove_headers.contains(&"cookie"));
        assert!(
            !cookie_names(rest).any(|k| k == route_cookie),
            "{route_cookie} passed upstream: {rest:?}"
        );
        if cookie_in.is_some_and(|c| http::HeaderValue::from_str(c).is_ok()) {
            assert!(http::HeaderValue::from_str(rest).is_ok(), "{rest:?}");
        }
    }
    for (k, v) in &a.set_headers {
        if *k != "cookie" {
            assert!(http::HeaderValue::from_str(v).is_ok(), "{k}: {v:?}");
        }
    }
}

/// The minted token when the request carries exactly one credential, where the route reads it:
/// `Authorization: Bearer <token>`; or no `Authorization` and `Cookie: <name>=<token>`; or
/// neither header and the query exactly `access_token=<token>`.
fn lone_token(
    f: &Fixture,
    c: &Case<'_>,
    sources: &authgate::credentials::Sources,
    headers: &Headers,
) -> Option<(Minted, &'static str)> {
    let find = |text: &str| ALL_MINTED.into_iter().find(|m| f.token(*m) == text);
    match (&headers.authorization, &headers.cookie) {
        (Some(auth), _) if sources.header() => {
            find(auth.strip_prefix("Bearer ")?).map(|m| (m, "header"))
        }
        (None, Some(cookie)) if sources.cookie().is_some() => {
            let (name, value) = cookie.split_once('=')?;
            (Some(name) == sources.cookie())
                .then(|| find(value))
                .flatten()
                .map(|m| (m, "cookie"))
        }
        (None, None) if sources.query().iter().any(|q| q == "access_token") => {
            let (_, query) = c.path.split_once('?')?;
            find(query.strip_prefix("access_token=")?).map(|m| (m, "query"))
        }
        _ => None,
    }
}

/// `AUTHGATE_FUZZ_TRACE=1` prints each input and its outcome (to pick seeds, to read a crash).
fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("AUTHGATE_FUZZ_TRACE").is_some())
}

fn outcome(decision: &Decision) -> String {
    match decision {
        Decision::Deny(d) => format!(
            "deny {} {} ({})",
            d.status(),
            d.outcome().label(),
            d.description()
        ),
        Decision::Allow(a) => format!(
            "allow {} cookie_rewritten={} query_removed={:?}",
            a.session.as_deref().unwrap_or("(public)"),
            a.set_headers.iter().any(|(k, _)| *k == "cookie")
                || a.remove_headers.contains(&"cookie"),
            a.remove_query,
        ),
    }
}

fuzz_target!(|input: Input| {
    let f = fixture();
    let now = input.now.map_or(T0, |n| T0 - 100 + u64::from(n) % 4000);
    f.clock.set(now);

    let method = input.method.render();
    let path = input.path.render(f);
    let headers = Headers {
        authorization: input.authorization.as_ref().map(|a| a.render(f)),
        cookie: input.cookie.as_ref().map(|c| c.render(f)),
    };

    let decision = f.checker.check(&Request {
        method: &method,
        path: &path,
        headers: &headers,
    });

    if trace() {
        eprintln!(
            "{method} {path:?}\n  authorization: {:?}\n  cookie: {:?}\n  now: T0{:+}\n  => {}",
            headers.authorization,
            headers.cookie,
            now as i64 - T0 as i64,
            outcome(&decision)
        );
    }

    let route = f.checker.policy.route(&method, &path);
    let case = Case {
        method: &method,
        path: &path,
        cookie: headers.cookie.as_deref(),
        now,
        access: route.access,
        route_cookie: route.sources.cookie().unwrap_or(""),
        query_names: f.checker.policy.all_query_sources().collect(),
    };

    // A lone minted token in one place the route reads: the answer is known.
    if let Some((m, source)) = lone_token(f, &case, route.sources, &headers) {
        let s = spec(m);
        let got = match &decision {
            Decision::Allow(a) => Ok(a.session.as_deref()),
            Decision::Deny(d) => Err(*d),
        };
        let want = if route.access == Access::Public {
            Ok(None)
        } else {
            expected(s, route.access, now).map(|()| Some(s.sid))
        };
        assert_eq!(got, want, "{m:?} in {source} on {method} {path:?}");
        if source == "cookie"
            && let Decision::Allow(a) = &decision
            && route.access != Access::Public
        {
            assert!(a.remove_headers.contains(&"cookie"), "{a:?}");
        }
    }

    let summary = match &decision {
        Decision::Deny(d) => {
            check_denial(*d);
            Err(*d)
        }
        Decision::Allow(a) => {
            check_allow(a, &case);
            Ok(())
        }
    };

    let reply = authgate::grpc::check_response(decision, authgate::decision::Dialect::OAuth);
    let _ = reply.encode_to_vec();
    let response = reply.into_prost();
    let code = response.status.as_ref().map(|s| s.code);
    match (summary, response.http_response) {
        (Ok(()), Some(HttpResponse::OkResponse(_))) => assert_eq!(code, Some(0)),
        (Err(d), Some(HttpResponse::DeniedResponse(denied))) => {
            let status = denied.status.map(|s| s.code);
            assert_eq!(status, Some(i32::from(d.status())));
            assert_eq!(code, Some(if d.status() == 401 { 16 } else { 7 }));
            assert_eq!(denied.body, d.json_body());
        }
        (summary, other) => panic!("gRPC answer {other:?} for {summary:?}"),
    }
});
