//! Criterion benchmarks of the check's hot path, function by function: finding the token,
//! verifying it (cold, i.e. a cache miss, and cached) for every signing algorithm, the whole
//! transport-neutral `Checker::check`, reading Envoy's `CheckRequest` (in place, against
//! prost's full decode) and building Envoy's `CheckResponse`.
//!
//! The default run is short (small samples, about a second each; under two minutes in all):
//! `cargo bench --bench hot_path`. Pass a filter to run one group, e.g. `-- verify_cold`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use authgate::clock::Clock;
use authgate::config::{Algorithm, Config, TokenSources};
use authgate::credentials::{self, Found, Headers, Sources};
use authgate::decision::{Checker, Dialect, Request};
use authgate::policy::Policy;
use authgate::revocation::Revocations;
use authgate::token::{Kind, TokenService};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use prost::Message as _;

const ALGORITHMS: [(Algorithm, &str); 4] = [
    (Algorithm::EdDSA, "EdDSA"),
    (Algorithm::ES256, "ES256"),
    (Algorithm::RS256, "RS256"),
    (Algorithm::HS256, "HS256"),
];

/// Tokens minted up front for the cold runs; each service instance sees each token once.
const COLD_POOL: usize = 512;

/// Headers as Envoy reports them (lower-case names, one map lookup each).
struct EnvoyLike(HashMap<String, String>);

impl Headers for EnvoyLike {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn repeated(&self, _: &str) -> bool {
        false
    }
}

fn envoy_headers(extra: &[(&str, &str)]) -> EnvoyLike {
    let mut map: HashMap<String, String> = [
        (":authority", "app.example"),
        (":method", "GET"),
        (":path", "/api/x"),
        (":scheme", "http"),
        ("user-agent", "bench/1.0"),
        ("accept", "*/*"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "6f1b8a9e-3c0d-4a39-9a43-2f1c4c1c2d7e"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in extra {
        map.insert((*k).to_owned(), (*v).to_owned());
    }
    EnvoyLike(map)
}

/// A configuration whose keys live in their own temporary directory.
struct Setup {
    _dir: tempfile::TempDir,
    cfg: Config,
}

fn setup(alg: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[store]\npath = {:?}\n[tokens]\nalgorithm = {alg:?}\naccess_ttl = \"1h\"\n",
        dir.path().to_str().unwrap()
    );
    let cfg = Config::from_toml_str(&text).unwrap();
    Setup { _dir: dir, cfg }
}

fn service(s: &Setup) -> TokenService {
    TokenService::new(&s.cfg, Clock::system()).unwrap()
}

fn mint(tokens: &TokenService, i: usize) -> String {
    let sid = tokens.random_id();
    tokens
        .mint(
            Kind::Access,
            &format!("user{i:06}"),
            &sid,
            &["pwd"],
            3600,
            None,
        )
        .unwrap()
        .0
}

fn find_token(c: &mut Criterion) {
    let s = setup("EdDSA");
    let token = mint(&service(&s), 0);
    let sources = Sources::new(&TokenSources::default());
    let mut g = c.benchmark_group("find_token");
    let header = envoy_headers(&[("authorization", &format!("Bearer {token}"))]);
    g.bench_function("header", |b| {
        b.iter(|| {
            let found = credentials::find_token(&sources, black_box(&header), black_box("/api/x"));
            assert!(matches!(found, Found::Token(..)));
        })
    });
    let cookie = envoy_headers(&[("cookie", &format!("theme=dark; authgate_access={token}"))]);
    g.bench_function("cookie", |b| {
        b.iter(|| credentials::find_token(&sources, black_box(&cookie), black_box("/api/x")))
    });
    let none = envoy_headers(&[]);
    let path = format!("/events?since=0&access_token={token}");
    g.bench_function("query", |b| {
        b.iter(|| credentials::find_token(&sources, black_box(&none), black_box(&path)))
    });
    g.finish();

    // The route lookup runs before the token search on every check.
    let policy = Policy::new(&s.cfg.policy);
    let mut g = c.benchmark_group("policy_route");
    g.bench_function("plain", |b| {
        b.iter(|| policy.route(black_box("GET"), black_box("/api/x")).access)
    });
    g.bench_function("encoded", |b| {
        b.iter(|| {
            policy
                .route(black_box("GET"), black_box("/api/%2e%2e/v1/users%2F42?x=1"))
                .access
        })
    });
    g.finish();
}

/// A cache miss: every token is verified for the first time by the service that sees it
/// (lookup, signature and claims, unsealing, insertion into the cache). Services are rebuilt
/// outside the timed section whenever the pool of fresh tokens runs out.
fn verify_cold(c: &mut Criterion) {
    let mut g = c.benchmark_group("verify_cold");
    for (_, name) in ALGORITHMS {
        let s = setup(name);
        let minter = service(&s);
        let pool: Vec<String> = (0..COLD_POOL).map(|i| mint(&minter, i)).collect();
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let fresh = service(&s);
                    let n = left.min(COLD_POOL);
                    let started = Instant::now();
                    for t in &pool[..n] {
                        black_box(fresh.verify(black_box(t)).unwrap());
                    }
                    total += started.elapsed();
                    left -= n;
                }
                total
            })
        });
    }
    g.finish();
}

fn verify_cached(c: &mut Criterion) {
    let mut g = c.benchmark_group("verify_cached");
    for (_, name) in ALGORITHMS {
        let s = setup(name);
        let tokens = service(&s);
        let token = mint(&tokens, 0);
        tokens.verify(&token).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| tokens.verify(black_box(&token)).unwrap())
        });
    }
    g.finish();
}

fn checker(s: &Setup) -> Checker {
    let clock = Clock::system();
    Checker {
        tokens: Arc::new(TokenService::new(&s.cfg, clock.clone()).unwrap()),
        policy: Policy::new(&s.cfg.policy),
        revocations: Arc::new(Revocations::new(clock)),
    }
}

fn check(c: &mut Criterion) {
    let mut g = c.benchmark_group("check");
    for name in ["EdDSA", "HS256"] {
        let s = setup(name);
        let checker = checker(&s);
        let token = mint(&checker.tokens, 0);
        let headers = envoy_headers(&[("authorization", &format!("Bearer {token}"))]);
        let req = Request {
            method: "GET",
            path: "/api/x",
            headers: &headers,
        };
        assert!(matches!(
            checker.check(&req),
            authgate::decision::Decision::Allow(_)
        ));
        g.bench_function(format!("allow_cached_{name}"), |b| {
            b.iter(|| checker.check(black_box(&req)))
        });
    }
    let s = setup("EdDSA");
    let checker = checker(&s);
    let headers = envoy_headers(&[]);
    let req = Request {
        method: "GET",
        path: "/api/x",
        headers: &headers,
    };
    g.bench_function("deny_no_token", |b| {
        b.iter(|| checker.check(black_box(&req)))
    });
    g.finish();
}

fn check_response(c: &mut Criterion) {
    let s = setup("EdDSA");
    let checker = checker(&s);
    let token = mint(&checker.tokens, 0);
    let allow_headers = envoy_headers(&[("authorization", &format!("Bearer {token}"))]);
    let deny_headers = envoy_headers(&[]);
    let allow = Request {
        method: "GET",
        path: "/api/x",
        headers: &allow_headers,
    };
    let deny = Request {
        method: "GET",
        path: "/api/x",
        headers: &deny_headers,
    };
    let mut g = c.benchmark_group("check_response");
    g.bench_function("allow", |b| {
        b.iter_batched(
            || checker.check(&allow),
            |d| authgate::grpc::check_response(d, Dialect::OAuth),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("deny", |b| {
        b.iter_batched(
            || checker.check(&deny),
            |d| authgate::grpc::check_response(d, Dialect::OAuth),
            BatchSize::SmallInput,
        )
    });
    // What tonic does next: protobuf-encode the answer.
    g.bench_function("allow_and_encode", |b| {
        b.iter_batched(
            || checker.check(&allow),
            |d| authgate::grpc::check_response(d, Dialect::OAuth).encode_to_vec(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// Reading a `CheckRequest` as Envoy sends it (every header of a browser-like request) to
/// the facts the decision uses: authgate's in-place reader against prost's full decode.
fn check_request(c: &mut Criterion) {
    use authgate::grpc::CheckCall;
    use envoy_types::ext_authz::v3::pb::CheckRequest;
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};

    let mut headers = envoy_headers(&[
        (
            "authorization",
            "Bearer eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl",
        ),
        ("accept-language", "en-GB,en;q=0.9"),
        ("accept-encoding", "gzip, deflate, br"),
        ("cookie", "theme=dark; lang=en"),
        ("x-forwarded-for", "192.0.2.10"),
    ])
    .0;
    headers.insert(
        "user-agent".into(),
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)".into(),
    );
    let body = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    id: "10155838131281465098".into(),
                    method: "GET".into(),
                    path: "/api/x?page=2".into(),
                    host: "app.example".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
    .encode_to_vec();
    let body = prost::bytes::Bytes::from(body);
    let mut g = c.benchmark_group("check_request");
    g.bench_function("in_place", |b| {
        b.iter(|| {
            let call = CheckCall::parse(black_box(body.clone())).unwrap();
            black_box((
                call.method().len(),
                call.path().len(),
                call.get("authorization").map(str::len),
                call.get("cookie").map(str::len),
            ))
        })
    });
    g.bench_function("prost_decode", |b| {
        b.iter(|| {
            let req = CheckRequest::decode(black_box(body.clone())).unwrap();
            let http = req.attributes.unwrap().request.unwrap().http.unwrap();
            black_box((
                http.method.len(),
                http.path.len(),
                http.headers.get("authorization").map(String::len),
                http.headers.get("cookie").map(String::len),
            ))
        })
    });
    g.finish();
}

fn short() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .configure_from_args()
}

criterion_group! {
    name = benches;
    config = short();
    targets = find_token, verify_cold, verify_cached, check, check_request, check_response
}
criterion_main!(benches);
