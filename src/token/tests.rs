#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use crate::config::Config;

const T0: u64 = 1_800_000_000;
/// `tokens.leeway` and `tokens.rotation_grace` at their defaults.
const LEEWAY: u64 = 30;
const ROTATION_GRACE: u64 = 120;

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

/// The private key of `kid` as stored on disk: what an attacker has after a key leak.
fn leaked_key(dir: &std::path::Path, kid: &str) -> EncodingKey {
    let file = keys::keys_dir(dir).join(format!("{kid}.json"));
    let key: serde_json::Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    EncodingKey::from_ed_pem(key["private"].as_str().unwrap().as_bytes()).unwrap()
}

/// A token of `kind` signed with a leaked EdDSA key, with the given `iat` and `exp`.
fn forge(dir: &std::path::Path, kid: &str, kind: Kind, iat: u64, exp: u64) -> String {
    let mut header = Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    header.typ = Some(kind.typ().to_owned());
    let mut claims = claims_json("authgate");
    claims["iat"] = iat.into();
    claims["exp"] = exp.into();
    claims["jti"] = format!("forged-{iat}-{exp}").into();
    jsonwebtoken::encode(&header, &claims, &leaked_key(dir, kid)).unwrap()
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

/// Issue 11 item 7: after `rotate-keys` a leaked old key must not mint usable new tokens.
/// The retired key verifies only what was issued before its retirement (plus the leeway and
/// `rotation_grace`, in which a server that has not seen the rotation still signs with it),
/// and access tokens only for `access_ttl` after it, whatever `exp` they claim.
#[test]
fn a_retired_key_verifies_only_tokens_issued_before_its_retirement() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(T0);
    let svc = service(Algorithm::EdDSA, dir.path(), &clock, "");
    let (before, _) = svc
        .mint(Kind::Access, "alice", "s", &["pwd"], 900, None)
        .unwrap();
    let (refresh, _) = svc
        .mint(Kind::Refresh, "alice", "s", &["pwd"], 30 * 86_400, None)
        .unwrap();
    let old = kid_of(&before);
    let retired = T0 + 60;
    clock.set(retired);
    keys::rotate(dir.path(), Algorithm::EdDSA, retired).unwrap();
    svc.reload_keys().unwrap();
    let grace = ROTATION_GRACE + LEEWAY;

    // Forged after the retirement: refused, access, refresh and MFA alike.
    clock.set(retired + grace + 1);
    for kind in [Kind::Access, Kind::Refresh, Kind::Mfa] {
        let late = forge(dir.path(), &old, kind, retired + grace + 1, retired + 600);
        assert_eq!(
            svc.verify(&late).unwrap_err(),
            TokenError::Invalid(Invalid::RetiredKey),
            "{kind:?}"
        );
    }
    // Within the grace: a server that had not reloaded yet could have minted it.
    clock.set(retired + grace);
    let lagging = forge(
        dir.path(),
        &old,
        Kind::Access,
        retired + grace,
        retired + 900,
    );
    assert!(svc.verify(&lagging).is_ok());
    // Issued before: good until its own exp.
    assert!(svc.verify(&before).is_ok());
    clock.set(T0 + 900 + 30);
    assert!(svc.verify(&before).is_ok());
    clock.set(T0 + 900 + 31);
    assert_eq!(svc.verify(&before).unwrap_err(), TokenError::Expired);

    // Back-dated with a long life: dies access_ttl after the retirement, cached or not.
    let backdated = forge(
        dir.path(),
        &old,
        Kind::Access,
        retired - 1,
        retired + 86_400,
    );
    clock.set(retired + ROTATION_GRACE + 900 + LEEWAY);
    assert!(svc.verify(&backdated).is_ok());
    clock.advance(1);
    assert_eq!(svc.verify(&backdated).unwrap_err(), TokenError::Expired);
    let fresh = service(Algorithm::EdDSA, dir.path(), &clock, "");
    assert_eq!(fresh.verify(&backdated).unwrap_err(), TokenError::Expired);
    // Refresh tokens issued before the retirement live on, as before.
    assert_eq!(fresh.verify(&refresh).unwrap().kind, Kind::Refresh);
    // An MFA token only for its 5 minutes.
    let mfa = forge(dir.path(), &old, Kind::Mfa, retired - 1, retired + 86_400);
    clock.set(retired + ROTATION_GRACE + 300 + LEEWAY);
    assert!(fresh.verify(&mfa).is_ok());
    clock.advance(1);
    assert_eq!(fresh.verify(&mfa).unwrap_err(), TokenError::Expired);
}

/// A token verified (and cached) while its key was current is checked again once the key is
/// retired: the cache must not carry a back-dated forgery past the retired key's limits.
#[test]
fn retirement_reaches_tokens_already_in_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(T0);
    let svc = service(Algorithm::EdDSA, dir.path(), &clock, "");
    let (token, _) = svc
        .mint(Kind::Access, "alice", "s", &["pwd"], 900, None)
        .unwrap();
    let old = kid_of(&token);
    let forged = forge(dir.path(), &old, Kind::Access, T0, T0 + 86_400);
    assert!(svc.verify(&forged).is_ok());
    assert_eq!(svc.cache_entries(), 1);
    keys::rotate(dir.path(), Algorithm::EdDSA, T0).unwrap();
    svc.reload_keys().unwrap();
    clock.set(T0 + ROTATION_GRACE + 900 + LEEWAY + 1);
    assert_eq!(svc.verify(&forged).unwrap_err(), TokenError::Expired);
}

/// The JWKS publishes a retired key while an access token it signed may still be good, and
/// no longer: other verifiers only know what the JWKS tells them.
#[test]
fn jwks_drops_a_retired_key_once_no_access_token_of_it_can_be_valid() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(T0);
    let svc = service(Algorithm::EdDSA, dir.path(), &clock, "");
    let (refresh, _) = svc
        .mint(Kind::Refresh, "alice", "s", &["pwd"], 30 * 86_400, None)
        .unwrap();
    let old = kid_of(&refresh);
    keys::rotate(dir.path(), Algorithm::EdDSA, T0).unwrap();
    let kids = |svc: &TokenService| -> Vec<String> {
        let jwks: serde_json::Value = serde_json::from_slice(&svc.jwks()).unwrap();
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    };
    clock.set(T0 + ROTATION_GRACE + 900 + LEEWAY);
    svc.reload_keys().unwrap();
    assert!(kids(&svc).contains(&old));
    assert_eq!(kids(&svc).len(), 2);
    clock.advance(1);
    svc.reload_keys().unwrap();
    assert_eq!(kids(&svc).len(), 1);
    assert!(!kids(&svc).contains(&old));
    // The key itself stays for the refresh tokens it signed.
    assert!(svc.verify(&refresh).is_ok());
}

/// `rotate-keys --revoke-old`, for a key known to have leaked: everything the old keys signed
/// is refused once a server reloads, cached verdicts included, and the JWKS forgets them.
#[test]
fn revoking_old_keys_refuses_everything_they_signed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(T0);
    let svc = service(Algorithm::EdDSA, dir.path(), &clock, "");
    let (first, _) = svc
        .mint(Kind::Access, "alice", "s", &["pwd"], 900, None)
        .unwrap();
    // One key retired the ordinary way earlier, one signing now: both go.
    let retired_kid = kid_of(&first);
    let earlier = forge(dir.path(), &retired_kid, Kind::Access, T0, T0 + 900);
    keys::rotate(dir.path(), Algorithm::EdDSA, T0).unwrap();
    svc.reload_keys().unwrap();
    let (access, _) = svc
        .mint(Kind::Access, "alice", "s", &["pwd"], 900, None)
        .unwrap();
    let (refresh, _) = svc
        .mint(Kind::Refresh, "alice", "s", &["pwd"], 86_400, None)
        .unwrap();
    let current_kid = kid_of(&access);
    let backdated = forge(dir.path(), &current_kid, Kind::Access, T0, T0 + 900);
    for t in [&first, &earlier, &access, &refresh, &backdated] {
        assert!(svc.verify(t).is_ok());
    }
    clock.advance(60);
    let (new_kid, revoked) =
        keys::rotate_and_revoke(dir.path(), Algorithm::EdDSA, clock.now()).unwrap();
    let mut revoked = revoked;
    revoked.sort();
    let mut expected = vec![retired_kid.clone(), current_kid.clone()];
    expected.sort();
    assert_eq!(revoked, expected);
    svc.reload_keys().unwrap();
    for t in [&first, &earlier, &access, &refresh, &backdated] {
        assert_eq!(
            svc.verify(t).unwrap_err(),
            TokenError::Invalid(Invalid::UnknownKey)
        );
    }
    let (fresh, _) = svc
        .mint(Kind::Access, "alice", "s2", &["pwd"], 900, None)
        .unwrap();
    assert_eq!(kid_of(&fresh), new_kid);
    assert!(svc.verify(&fresh).is_ok());
    let jwks: serde_json::Value = serde_json::from_slice(&svc.jwks()).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    // The leaked private keys are gone from the disk, so no restart brings them back.
    for kid in [&retired_kid, &current_kid] {
        assert!(
            !keys::keys_dir(dir.path())
                .join(format!("{kid}.json"))
                .exists()
        );
    }
    let restarted = service(Algorithm::EdDSA, dir.path(), &clock, "");
    assert!(restarted.verify(&access).is_err());
    assert!(restarted.verify(&fresh).is_ok());
}

/// A secret sealed as authgate sealed before sealing keys could rotate: base64url of nonce and
/// AES-256-GCM ciphertext under `keys/seal.key`, no key id.
fn sealed_before_upgrade(dir: &std::path::Path, context: &str, secret: &str) -> String {
    use base64::engine::general_purpose::STANDARD;
    let text = std::fs::read_to_string(keys::keys_dir(dir).join("seal.key")).unwrap();
    let key = STANDARD.decode(text.trim()).unwrap();
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).unwrap());
    let nonce = [7u8; NONCE_LEN];
    let mut buf = secret.as_bytes().to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(context.as_bytes()),
        &mut buf,
    )
    .unwrap();
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    URL_SAFE_NO_PAD.encode(out)
}

/// Rotates the sealing key and dates its file's arrival `at` (tests run on a manual clock).
fn rotate_sealing_key_arrived(dir: &std::path::Path, at: u64) -> u32 {
    let id = keys::rotate_seal_key(dir).unwrap();
    let path = keys::keys_dir(dir).join(format!("seal-{id}.key"));
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(at))
        .unwrap();
    id
}

/// `rotate-keys --sealing-key`: the new key seals, and what older keys sealed (tokens with a
/// backend credential, stored TOTP secrets, including those sealed before the upgrade) still
/// opens, in the running service and after a restart.
#[test]
fn sealing_key_rotation_keeps_what_older_keys_sealed_open() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(T0);
    let svc = service(Algorithm::EdDSA, dir.path(), &clock, "");
    let cred = SecretString::from("alice:15372d36008c1fd11c4a362b373529f72bfeaca2".to_owned());
    let totp = SecretString::from("JBSWY3DPEHPK3PXP".to_owned());
    let legacy = sealed_before_upgrade(dir.path(), "totp:alice", totp.expose_secret());
    let (token, _) = svc
        .mint(Kind::Access, "alice", "s1", &["pwd"], 900, Some(&cred))
        .unwrap();
    let stored = svc.seal("totp:alice", &totp).unwrap();
    let opens = |svc: &TokenService, blob: &str| {
        svc.unseal("totp:alice", blob)
            .map(|s| s.expose_secret().to_owned())
    };
    assert_eq!(opens(&svc, &legacy).as_deref(), Some("JBSWY3DPEHPK3PXP"));

    assert_eq!(
        rotate_sealing_key_arrived(dir.path(), T0 - ROTATION_GRACE),
        1
    );
    svc.reload_keys().unwrap();
    let restarted = service(Algorithm::EdDSA, dir.path(), &clock, "");
    for svc in [&svc, &restarted] {
        for blob in [&legacy, &stored] {
            assert_eq!(opens(svc, blob).as_deref(), Some("JBSWY3DPEHPK3PXP"));
        }
        let v = svc.verify(&token).unwrap();
        assert_eq!(
            v.credential.as_ref().unwrap().expose_secret(),
            cred.expose_secret()
        );
    }
    // The new key seals: a key directory with only the old key cannot open it.
    let new = svc.seal("totp:alice", &totp).unwrap();
    assert_eq!(opens(&restarted, &new).as_deref(), Some("JBSWY3DPEHPK3PXP"));
    let before = tempfile::tempdir().unwrap();
    std::fs::create_dir(keys::keys_dir(before.path())).unwrap();
    std::fs::copy(
        keys::keys_dir(dir.path()).join("seal.key"),
        keys::keys_dir(before.path()).join("seal.key"),
    )
    .unwrap();
    let old_only = service(Algorithm::EdDSA, before.path(), &clock, "");
    assert!(opens(&old_only, &stored).is_some());
    assert!(opens(&old_only, &new).is_none());
    // A blob claiming another key id, or the legacy key, does not open.
    let (id, rest) = new.split_once('.').unwrap();
    assert_eq!(id, "1");
    for forged in [format!("2.{rest}"), format!("0.{rest}"), rest.to_owned()] {
        assert!(opens(&svc, &forged).is_none(), "{forged}");
    }
    // A second rotation: all three generations open.
    assert_eq!(
        rotate_sealing_key_arrived(dir.path(), T0 - ROTATION_GRACE),
        2
    );
    svc.reload_keys().unwrap();
    let newest = svc.seal("totp:alice", &totp).unwrap();
    assert!(newest.starts_with("2."));
    for blob in [&legacy, &stored, &new, &newest] {
        assert!(opens(&svc, blob).is_some());
    }
}

#[test]
fn a_retired_key_knows_how_long_mfa_tokens_live() {
    assert_eq!(MFA_TOKEN_LIFE, crate::login::MFA_TOKEN_TTL);
}

/// Replicas receive a new sealing key at different times (a Kubernetes Secret reaches pods
/// about a minute apart). A server seals with it only `rotation_grace` after the key file
/// arrived, so every replica can open what it seals; it opens with it at once.
#[test]
fn a_new_sealing_key_seals_only_after_the_rotation_grace() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(T0);
    let svc = service(Algorithm::EdDSA, dir.path(), &clock, "");
    keys::rotate_seal_key(dir.path()).unwrap();
    let arrived = std::fs::metadata(keys::keys_dir(dir.path()).join("seal-1.key"))
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let secret = SecretString::from("JBSWY3DPEHPK3PXP".to_owned());
    clock.set(arrived + ROTATION_GRACE - 1);
    svc.reload_keys().unwrap();
    let early = svc.seal("totp:alice", &secret).unwrap();
    assert!(
        !early.contains('.'),
        "sealed with the new key too early: {early}"
    );

    let later_clock = Clock::manual(arrived + ROTATION_GRACE);
    let later = service(Algorithm::EdDSA, dir.path(), &later_clock, "");
    let new = later.seal("totp:alice", &secret).unwrap();
    assert!(new.starts_with("1."), "{new}");
    // The replica still sealing with the old key opens what the other sealed, and vice versa.
    assert!(svc.unseal("totp:alice", &new).is_some());
    assert!(later.unseal("totp:alice", &early).is_some());
    clock.set(arrived + ROTATION_GRACE);
    svc.reload_keys().unwrap();
    assert!(svc.seal("totp:alice", &secret).unwrap().starts_with("1."));
    // The kubelet rewrites every file of a Secret when it changes: a key this server already
    // seals with does not go back to waiting.
    let file = std::fs::File::options()
        .write(true)
        .open(keys::keys_dir(dir.path()).join("seal-1.key"))
        .unwrap();
    file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(clock.now()))
        .unwrap();
    svc.reload_keys().unwrap();
    assert!(svc.seal("totp:alice", &secret).unwrap().starts_with("1."));
}

/// Keyed digests (what the store keeps of 6-digit recovery codes): they match only their
/// message, only where the key is, and keep matching after the sealing key rotates.
#[test]
fn keyed_digests_need_the_key_and_survive_a_sealing_key_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(T0);
    let svc = service(Algorithm::EdDSA, dir.path(), &clock, "");
    let digest = svc
        .keyed_digest(b"authgate-recovery\x00alice\x00123456")
        .unwrap();
    assert!(digest.starts_with("k0."), "{digest}");
    assert!(svc.keyed_digest_matches(&digest, b"authgate-recovery\x00alice\x00123456"));
    assert!(!svc.keyed_digest_matches(&digest, b"authgate-recovery\x00alice\x00123457"));
    assert!(!svc.keyed_digest_matches(&digest, b"authgate-recovery\x00bob\x00123456"));
    // Not the plain SHA-256 a store reader could rebuild for all million codes.
    let plain = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        b"authgate-recovery\x00alice\x00123456",
    );
    let tag = URL_SAFE_NO_PAD.decode(&digest[3..]).unwrap();
    assert_eq!(tag.len(), 32);
    assert_ne!(tag, plain.as_ref());
    // Another key directory (another installation, or a store copied away from its keys).
    let elsewhere = tempfile::tempdir().unwrap();
    let other = service(Algorithm::EdDSA, elsewhere.path(), &clock, "");
    assert!(!other.keyed_digest_matches(&digest, b"authgate-recovery\x00alice\x00123456"));
    // Malformed or forged names match nothing.
    let text = &digest[3..];
    for forged in [
        text.to_owned(),
        format!("k1.{text}"),
        format!("k.{text}"),
        format!("k0.{}", &text[1..]),
        "k0.!!".to_owned(),
        String::new(),
    ] {
        assert!(
            !svc.keyed_digest_matches(&forged, b"authgate-recovery\x00alice\x00123456"),
            "{forged}"
        );
    }
    // After a rotation the new key digests, and the old digest still matches.
    rotate_sealing_key_arrived(dir.path(), T0 - ROTATION_GRACE);
    svc.reload_keys().unwrap();
    let newer = svc
        .keyed_digest(b"authgate-recovery\x00alice\x00123456")
        .unwrap();
    assert!(newer.starts_with("k1."), "{newer}");
    for d in [&digest, &newer] {
        assert!(svc.keyed_digest_matches(d, b"authgate-recovery\x00alice\x00123456"));
    }
}
