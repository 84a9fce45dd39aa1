#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use crate::config::Config;

const T0: u64 = 1_800_000_000;

fn service(alg: Algorithm, dir: &std::path::Path, clock: &Clock, extra: &str) -> TokenService {
    let text = format!(
        "[tokens]\nalgorithm = \"{alg:?}\"\naccess_ttl = \"15m\"\nleeway = \"30s\"\n{extra}\n[store]\npath = {:?}\n",
        dir.to_str().unwrap()
    );
    let cfg = Config::from_toml_str(&text).unwrap();
    TokenService::new(&cfg, clock.clone()).unwrap()
}

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn claims_json(iss: &str) -> serde_json::Value {
    serde_json::json!({"iss": iss, "aud": "authgate", "sub": "alice", "iat": T0, "exp": T0 + 900,
        "jti": "j", "sid": "s", "amr": ["pwd"]})
}

#[test]
fn mints_and_verifies_with_every_algorithm() {
    for alg in [
        Algorithm::EdDSA,
        Algorithm::ES256,
        Algorithm::RS256,
        Algorithm::HS256,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::manual(T0);
        let svc = service(alg, dir.path(), &clock, "");
        let (token, claims) = svc
            .mint(Kind::Access, "alice", "sid1", &["pwd"], 900, None)
            .unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert!(header.kid.is_some(), "{alg:?}: no kid");
        let v = svc.verify(&token).unwrap();
        assert_eq!((v.kind, &*v.sub, &*v.sid), (Kind::Access, "alice", "sid1"));
        assert_eq!(v.exp, claims.exp);
        assert!(!v.has_otp());
        // A restarted service (same store) accepts the token.
        let again = service(alg, dir.path(), &clock, "");
        assert!(again.verify(&token).is_ok(), "{alg:?}: key not persisted");
    }
}

#[test]
fn expiry_is_checked_on_cache_hits_with_leeway() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(T0);
    let svc = service(Algorithm::EdDSA, dir.path(), &clock, "");
    let (token, _) = svc
        .mint(Kind::Access, "alice", "s", &["pwd"], 900, None)
        .unwrap();
    assert!(svc.verify(&token).is_ok());
    assert_eq!(svc.cache_entries(), 1);
    clock.advance(900 + 30);
    assert!(svc.verify(&token).is_ok(), "within leeway");
    clock.advance(1);
    assert_eq!(svc.verify(&token).unwrap_err(), TokenError::Expired);
}

#[test]
fn token_from_the_future_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(T0 + 3600);
    let svc = service(Algorithm::EdDSA, dir.path(), &clock, "");
    let (token, _) = svc
        .mint(Kind::Access, "alice", "s", &[], 900, None)
        .unwrap();
    clock.set(T0);
    assert_eq!(svc.verify(&token).unwrap_err(), TokenError::NotYetValid);
}

#[test]
fn alg_none_and_garbage_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(T0);
    let svc = service(Algorithm::EdDSA, dir.path(), &clock, "");
    let header = serde_json::json!({"alg": "none", "typ": "at+jwt"});
    let none = format!("{}.{}.", b64(&header), b64(&claims_json("authgate")));
    assert!(svc.verify(&none).is_err());
    for junk in [
        "",
        "a.b",
        "a.b.c",
        "....",
        "x.y.z\u{0}",
        &"a".repeat(MAX_TOKEN_LEN + 1),
    ] {
        assert!(svc.verify(junk).is_err(), "{junk:?}");
    }
    assert_eq!(svc.verify("a b.c.d").unwrap_err(), TokenError::Malformed);
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    for alg in [Algorithm::EdDSA, Algorithm::RS256, Algorithm::ES256] {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::manual(T0);
        let svc = service(alg, dir.path(), &clock, "");
        let jwks: serde_json::Value = serde_json::from_slice(&svc.jwks()).unwrap();
        let jwk = &jwks["keys"][0];
        let kid = jwk["kid"].as_str().unwrap().to_owned();
        // Classic confusion: the verifier's public key material used as an HMAC secret.
        let public = serde_json::to_vec(jwk).unwrap();
        let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(kid);
        header.typ = Some("at+jwt".into());
        let forged = jsonwebtoken::encode(
            &header,
            &claims_json("authgate"),
            &EncodingKey::from_secret(&public),
        )
        .unwrap();
        assert_eq!(
            svc.verify(&forged).unwrap_err(),
            TokenError::Invalid(Invalid::Algorithm),
            "{alg:?}"
        );
    }
}

#[test]
fn unknown_kid_wrong_issuer_and_audience_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(T0);
    let svc = service(Algorithm::EdDSA, dir.path(), &clock, "");
    // Same keys, other issuer / audience.
    let other_iss = service(Algorithm::EdDSA, dir.path(), &clock, "issuer = \"evil\"");
    let (t, _) = other_iss
        .mint(Kind::Access, "alice", "s", &[], 900, None)
        .unwrap();
    assert_eq!(
        svc.verify(&t).unwrap_err(),
        TokenError::Invalid(Invalid::Issuer)
    );
    let other_aud = service(Algorithm::EdDSA, dir.path(), &clock, "audience = \"other\"");
    let (t, _) = other_aud
        .mint(Kind::Access, "alice", "s", &[], 900, None)
        .unwrap();
    assert_eq!(
        svc.verify(&t).unwrap_err(),
        TokenError::Invalid(Invalid::Audience)
    );
    // A different store has different keys: its kid is unknown here.
    let dir2 = tempfile::tempdir().unwrap();
    let stranger = service(Algorithm::EdDSA, dir2.path(), &clock, "");
    let (t, _) = stranger
        .mint(Kind::Access, "alice", "s", &[], 900, None)
        .unwrap();
    assert_eq!(
        svc.verify(&t).unwrap_err(),
        TokenError::Invalid(Invalid::UnknownKey)
    );
}

#[test]
fn tampered_payload_fails_signature() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(T0);
    let svc = service(Algorithm::EdDSA, dir.path(), &clock, "");
    let (token, _) = svc
        .mint(Kind::Access, "alice", "s", &[], 900, None)
        .unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = claims_json("authgate");
    claims["sub"] = "root".into();
    let forged = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    assert_eq!(
        svc.verify(&forged).unwrap_err(),
        TokenError::Invalid(Invalid::Signature)
    );
}

#[test]
fn token_kinds_round_trip_through_typ() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(T0);
    let svc = service(Algorithm::HS256, dir.path(), &clock, "");
    for kind in [Kind::Access, Kind::Refresh, Kind::Mfa] {
        let (t, _) = svc.mint(kind, "alice", "s", &[], 60, None).unwrap();
        assert_eq!(svc.verify(&t).unwrap().kind, kind);
    }
}

#[test]
fn sealed_credential_is_bound_to_its_session() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(T0);
    let svc = service(Algorithm::EdDSA, dir.path(), &clock, "");
    let cred = SecretString::from("alice:15372d36008c1fd11c4a362b373529f72bfeaca2".to_owned());
    let (token, claims) = svc
        .mint(Kind::Access, "alice", "s1", &[], 900, Some(&cred))
        .unwrap();
    let sealed = claims.cred.unwrap();
    assert!(!sealed.contains("15372d"), "credential travels in clear");
    assert!(!token.contains("15372d"));
    let v = svc.verify(&token).unwrap();
    assert_eq!(
        v.credential.as_ref().unwrap().expose_secret(),
        cred.expose_secret()
    );
    assert!(svc.unseal("s2", &sealed).is_none());
    assert!(svc.unseal("s1", "AAAA").is_none());
}

#[test]
fn rotated_keys_keep_verifying_old_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(T0);
    let svc = service(Algorithm::ES256, dir.path(), &clock, "");
    let (old, _) = svc
        .mint(Kind::Access, "alice", "s", &[], 900, None)
        .unwrap();
    keys::rotate(dir.path(), Algorithm::ES256, T0).unwrap();
    svc.reload_keys().unwrap();
    let (new, _) = svc
        .mint(Kind::Access, "alice", "s", &[], 900, None)
        .unwrap();
    let kid = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid.unwrap();
    assert_ne!(kid(&old), kid(&new));
    let fresh = service(Algorithm::ES256, dir.path(), &clock, "");
    assert!(fresh.verify(&old).is_ok());
    assert!(fresh.verify(&new).is_ok());
    let jwks: serde_json::Value = serde_json::from_slice(&fresh.jwks()).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
}

#[test]
fn identities_that_cannot_be_headers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(T0);
    let svc = service(Algorithm::EdDSA, dir.path(), &clock, "");
    let ok = SecretString::from("alice:15372d".to_owned());
    let bad = SecretString::from("alice:1537\r\nX-Auth-User: root".to_owned());
    for (sub, cred) in [
        ("ali\u{1}ce", None),
        ("alice\n", None),
        ("alice\u{7f}", None),
        ("alice", Some(&bad)),
    ] {
        let (token, _) = svc
            .mint(Kind::Access, sub, "sid1", &["pwd"], 900, cred)
            .unwrap();
        assert_eq!(
            svc.verify(&token).unwrap_err(),
            TokenError::Invalid(Invalid::Claims),
            "{sub:?}"
        );
    }
    // Non-ASCII names pass (obs-text), as do ordinary credentials.
    for sub in ["josé", "alice@example.com"] {
        let (token, _) = svc
            .mint(Kind::Access, sub, "sid1", &["pwd"], 900, Some(&ok))
            .unwrap();
        assert!(svc.verify(&token).is_ok(), "{sub}");
    }
}
