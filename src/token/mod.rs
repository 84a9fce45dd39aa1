//! Tokens: minting, verification, the verified-token cache, JWKS and the sealed backend
//! credential. This module decides whether a string is a genuine, current token of ours; it
//! does not decide what the token may do (that is `decision`), and it never logs a token.
//!
//! Verification pins the configured algorithm, requires a known `kid` and one of our `typ`s,
//! checks `iss`, `aud`, `exp`, `nbf` and `iat` against the injected [`Clock`] with the configured
//! leeway. A verified token is cached (bounded by bytes) under a keyed 128-bit hash of its text;
//! the cache stores the claims, so every hit re-checks expiry and can never extend a token's life.
//!
//! A rotated-out (retired) key verifies only tokens issued before its retirement (plus the
//! leeway and `tokens.rotation_grace`), each kind for at most its life after that; a revoked
//! key is gone, so its `kid` is unknown. Any change of keys empties the cache. Sealed blobs
//! name their sealing key (`<id>.`, none for the first key), so sealing keys can rotate while
//! old blobs still open.

mod cache;
pub mod keys;

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::config::{self, Algorithm};

/// Longest token text we look at; anything longer is malformed.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// What a token is for; carried in the JOSE header `typ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// RFC 9068 access token.
    Access,
    /// One-use refresh token.
    Refresh,
    /// Proof of a correct password, waiting for the second factor.
    Mfa,
}

impl Kind {
    pub fn typ(self) -> &'static str {
        match self {
            Kind::Access => "at+jwt",
            Kind::Refresh => "refresh+jwt",
            Kind::Mfa => "mfa+jwt",
        }
    }

    fn from_typ(typ: &str) -> Option<Self> {
        [Kind::Access, Kind::Refresh, Kind::Mfa]
            .into_iter()
            .find(|k| k.typ().eq_ignore_ascii_case(typ))
    }
}

/// Claims of every token authgate mints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    pub exp: u64,
    pub jti: String,
    pub sid: String,
    #[serde(default)]
    pub amr: Vec<String>,
    /// The backend credential, sealed (AEAD bound to `sid`); access and MFA tokens only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cred: Option<String>,
    /// What the nethcti-middleware profile's client reads (SPEC 2.7), mirrored from the
    /// claims above: the user name (`sub`), whether the user has 2FA on, and whether this
    /// token went through it (`amr` has `otp`). Absent from every other token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "2fa", default, skip_serializing_if = "Option::is_none")]
    pub two_factor: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otp_verified: Option<bool>,
}

/// The `amr` of service tokens.
pub const SERVICE_AMR: &str = "svc";

/// A token that passed signature and claim checks, as cached.
#[derive(Debug)]
pub struct Verified {
    pub kind: Kind,
    pub sub: Arc<str>,
    pub sid: Arc<str>,
    pub jti: Arc<str>,
    pub amr: Vec<String>,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    /// The unsealed backend credential (e.g. `alice:<legacy token>`).
    pub credential: Option<SecretString>,
}

impl Verified {
    pub fn has_otp(&self) -> bool {
        self.amr.iter().any(|m| m == "otp")
    }

    /// A service token (`authgate admin token`): `amr` is ["svc"].
    pub fn is_service(&self) -> bool {
        self.amr.iter().any(|m| m == SERVICE_AMR)
    }

    /// `amr` as one comma-separated string, for logs and proxy metadata. The combinations
    /// authgate mints are static strings, so the hot path copies nothing; any other (a token
    /// minted by another authgate version) is joined.
    pub fn amr_label(&self) -> Cow<'static, str> {
        match self.amr.as_slice() {
            [] => Cow::Borrowed(""),
            [a] if a == "pwd" => Cow::Borrowed("pwd"),
            [a] if a == SERVICE_AMR => Cow::Borrowed(SERVICE_AMR),
            [a, b] if a == "pwd" && b == "otp" => Cow::Borrowed("pwd,otp"),
            other => Cow::Owned(other.join(",")),
        }
    }

    /// Heap bytes this value holds, approximately (for the cache's memory bound).
    fn approx_bytes(&self) -> usize {
        // Each Arc<str> and allocation carries ~16 bytes of header; amr strings are small.
        let strings = self.sub.len() + self.sid.len() + self.jti.len() + 3 * 16;
        let amr: usize = self.amr.iter().map(|m| m.len() + 24 + 16).sum();
        let cred = self
            .credential
            .as_ref()
            .map_or(0, |c| c.expose_secret().len() + 16);
        std::mem::size_of::<Verified>() + 16 + strings + amr + cred
    }
}

/// Why a presented token is not accepted. `Malformed` is a request error; the rest mean the
/// token is not (or no longer) good. Descriptions are static: nothing from the token leaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("{}", .0.description())]
    Invalid(Invalid),
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
}

/// Why a well-formed token is not genuine: a fixed set, so logs and metrics stay bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Not three base64url segments.
    NotJwt,
    /// A JOSE header that does not parse (`alg: none` among them).
    Header,
    /// Signed with another algorithm than the configured one.
    Algorithm,
    /// A `typ` that is none of ours.
    Type,
    /// A `kid` we do not have (never had, or revoked by `rotate-keys --revoke-old`).
    UnknownKey,
    /// Signed by a rotated-out key after its retirement: a leaked key minting new tokens.
    RetiredKey,
    Signature,
    Issuer,
    Audience,
    /// Claims missing, of the wrong type, or a credential that does not open.
    Claims,
}

impl Invalid {
    pub fn description(self) -> &'static str {
        match self {
            Invalid::NotJwt => "not a JWT",
            Invalid::Header => "invalid token header",
            Invalid::Algorithm => "unexpected signing algorithm",
            Invalid::Type => "unexpected token type",
            Invalid::UnknownKey => "unknown signing key",
            Invalid::RetiredKey => "signing key retired",
            Invalid::Signature => "bad signature",
            Invalid::Issuer => "wrong issuer",
            Invalid::Audience => "wrong audience",
            Invalid::Claims => "invalid token",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
    #[error("sealing failed")]
    Seal,
}

/// Life of an MFA token (`login::MFA_TOKEN_TTL`): how long a retired key verifies MFA tokens.
const MFA_TOKEN_LIFE: u64 = 300;

struct VerifyingKey {
    decoding: DecodingKey,
    retired: Option<u64>,
}

struct KeySnapshot {
    signing_kid: String,
    signing: EncodingKey,
    verifying: std::collections::HashMap<String, VerifyingKey>,
    jwks: Arc<[u8]>,
    /// Every kid with its retirement: when it changes, cached verdicts are stale.
    fingerprint: Vec<(String, Option<u64>)>,
    seal: SealKeys,
}

/// What the HMAC key of [`TokenService::keyed_digest`] is derived from a sealing key with (the
/// sealing key itself is never used for anything but sealing).
const DIGEST_KEY_LABEL: &[u8] = b"authgate keyed digest v1";

/// The sealing keys by id. A sealed blob names its key as `<id>.` before the base64url text,
/// except for id 0 (`seal.key`), whose blobs have no prefix: that is how everything was sealed
/// before sealing keys could rotate, so those blobs still open. The highest id whose file
/// arrived `rotation_grace` ago seals: by then every replica has it and can open the blob.
struct SealKeys {
    current: u32,
    keys: std::collections::HashMap<u32, LessSafeKey>,
    /// Per sealing key, an HMAC key derived from it for [`TokenService::keyed_digest`].
    digest_keys: std::collections::HashMap<u32, hmac::Key>,
}

impl SealKeys {
    /// `sealing`: the key this process seals with so far; it stays usable even when its file
    /// looks new again (the kubelet rewrites every file of a Secret that changes).
    fn load(
        store_path: &std::path::Path,
        now: u64,
        grace: u64,
        sealing: u32,
    ) -> Result<Self, keys::KeyError> {
        let raw = keys::load_seal_keys(store_path)?;
        let current = raw
            .iter()
            .filter(|(id, k)| **id <= sealing || k.arrived.saturating_add(grace) <= now)
            .map(|(id, _)| *id)
            .next_back()
            .unwrap_or(0);
        let digest_keys = raw
            .iter()
            .map(|(id, k)| {
                let derived =
                    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &k.key), DIGEST_KEY_LABEL);
                (*id, hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()))
            })
            .collect();
        let keys = raw
            .into_iter()
            .map(|(id, k)| {
                UnboundKey::new(&AES_256_GCM, &k.key)
                    .map(|k| (id, LessSafeKey::new(k)))
                    .map_err(|_| keys::KeyError::Generate)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            current,
            keys,
            digest_keys,
        })
    }

    /// The key a blob names, and the base64url text after the name.
    fn for_blob<'a>(&self, sealed: &'a str) -> Option<(&LessSafeKey, &'a str)> {
        let (id, text) = match sealed.split_once('.') {
            // base64url has no '.', so a blob without one is from key 0.
            None => (0, sealed),
            Some((id, text)) => {
                let canonical = !id.is_empty()
                    && !id.starts_with('0')
                    && id.bytes().all(|b| b.is_ascii_digit());
                (canonical.then(|| id.parse().ok()).flatten()?, text)
            }
        };
        Some((self.keys.get(&id)?, text))
    }
}

/// The token lives that bound what a retired key may still verify.
#[derive(Clone, Copy)]
struct Lives {
    access: u64,
    refresh: u64,
    leeway: u64,
    /// `tokens.rotation_grace`: how long servers may go on signing with a retired key.
    grace: u64,
}

impl Lives {
    fn of(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Access => self.access,
            Kind::Refresh => self.refresh,
            Kind::Mfa => MFA_TOKEN_LIFE,
        }
    }

    /// Until when a key retired at `retired` verifies tokens of `kind` (before the leeway).
    fn deadline(&self, retired: u64, kind: Kind) -> u64 {
        retired
            .saturating_add(self.grace)
            .saturating_add(self.of(kind))
    }

    /// How long a retired key is kept on disk: past this nothing it signed can verify.
    fn retention(&self) -> u64 {
        self.access.max(self.refresh).max(MFA_TOKEN_LIFE) + self.grace + self.leeway
    }
}

/// Everything needed to mint and verify tokens. Cheap to share (`Arc`), lock-free to read.
pub struct TokenService {
    alg: Algorithm,
    issuer: String,
    audience: String,
    leeway: u64,
    lives: Lives,
    store_path: PathBuf,
    clock: Clock,
    keys: ArcSwap<KeySnapshot>,
    validation: Validation,
    cache: cache::VerifiedCache,
    rng: SystemRandom,
}

fn jwt_alg(alg: Algorithm) -> jsonwebtoken::Algorithm {
    match alg {
        Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
        Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        Algorithm::HS256 => jsonwebtoken::Algorithm::HS256,
    }
}

/// Whether `token` is a credential at all: bounded length, RFC 6750 `b64token` characters.
/// Failing this is a malformed request; passing it but not being our JWT is a bad token.
fn well_formed(token: &str) -> bool {
    const B64TOKEN: [bool; 256] = {
        let mut t = [false; 256];
        let mut i = 0;
        while i < 256 {
            let b = i as u8;
            t[i] = b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=');
            i += 1;
        }
        t
    };
    !token.is_empty() && token.len() <= MAX_TOKEN_LEN && token.bytes().all(|b| B64TOKEN[b as usize])
}

/// Whether `value` can be an HTTP header value as every proxy passes it: not empty, at most
/// 4 KiB, no control characters (RFC 9110 field-value without obs-fold; tab refused too).
pub fn header_safe(value: &str) -> bool {
    !value.is_empty() && value.len() <= 4096 && value.bytes().all(|b| b >= 0x20 && b != 0x7f)
}

/// Three base64url segments, as every JWS in compact form.
fn jws_shaped(token: &str) -> bool {
    token.bytes().filter(|&b| b == b'.').count() == 2
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl TokenService {
    /// Loads (or creates) keys under `store.path` and builds the service.
    pub fn new(cfg: &config::Config, clock: Clock) -> Result<Self, keys::KeyError> {
        let t = &cfg.tokens;
        let lives = Lives {
            access: t.access_ttl.as_secs(),
            refresh: t.refresh_ttl.as_secs(),
            leeway: t.leeway.as_secs(),
            grace: t.rotation_grace.as_secs(),
        };
        let snapshot = load_snapshot(&cfg.store.path, t.algorithm, clock.now(), lives, 0)?;
        let mut validation = Validation::new(jwt_alg(t.algorithm));
        validation.set_issuer(&[&t.issuer]);
        // The profile's device tokens carry their device as audience (SPEC 2.7).
        let mut audiences = vec![t.audience.as_str()];
        if cfg.compat.nethcti_middleware {
            audiences.extend(config::DEVICE_AUDIENCES);
        }
        validation.set_audience(&audiences);
        // Time claims are checked against our own clock, below.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.required_spec_claims.clear();
        Ok(Self {
            alg: t.algorithm,
            issuer: t.issuer.clone(),
            audience: t.audience.clone(),
            leeway: t.leeway.as_secs(),
            lives,
            store_path: cfg.store.path.clone(),
            clock,
            keys: ArcSwap::from_pointee(snapshot),
            validation,
            cache: cache::VerifiedCache::new(t.cache_bytes),
            rng: SystemRandom::new(),
        })
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Re-reads the key directory (after `authgate rotate-keys`, or to drop expired keys).
    /// When a key was retired, revoked or dropped, the verified-token cache is emptied: its
    /// verdicts were reached under the old rules.
    pub fn reload_keys(&self) -> Result<(), keys::KeyError> {
        let sealing = self.keys.load().seal.current;
        let snapshot = load_snapshot(
            &self.store_path,
            self.alg,
            self.clock.now(),
            self.lives,
            sealing,
        )?;
        let changed = self.keys.load().fingerprint != snapshot.fingerprint;
        self.keys.store(Arc::new(snapshot));
        if changed {
            self.cache.clear();
        }
        Ok(())
    }

    /// The kids of every key that still verifies, the signing one first (`/status`,
    /// `authgate admin status`).
    pub fn kids(&self) -> Vec<String> {
        let keys = self.keys.load();
        let mut others: Vec<String> = keys
            .verifying
            .keys()
            .filter(|k| **k != keys.signing_kid)
            .cloned()
            .collect();
        others.sort();
        std::iter::once(keys.signing_kid.clone())
            .chain(others)
            .collect()
    }

    /// `authgate admin rotate-keys`: a new signing key (as `authgate rotate-keys`), loaded
    /// here at once; other replicas load it within their key-reload interval.
    pub fn rotate_signing_key(&self) -> Result<String, keys::KeyError> {
        let kid = keys::rotate(&self.store_path, self.alg, self.clock.now())?;
        self.reload_keys()?;
        Ok(kid)
    }

    /// The JWKS document (`{"keys":[...]}`), empty for HS256.
    pub fn jwks(&self) -> Arc<[u8]> {
        self.keys.load().jwks.clone()
    }

    /// A fresh random identifier (jti, sid), 128 bits, base64url.
    pub fn random_id(&self) -> String {
        URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
    }

    /// Mints a token of `kind` for `sub` in session `sid`, valid for `ttl_secs`.
    pub fn mint(
        &self,
        kind: Kind,
        sub: &str,
        sid: &str,
        amr: &[&str],
        ttl_secs: u64,
        credential: Option<&SecretString>,
    ) -> Result<(String, Claims), MintError> {
        let claims = self.claims(kind, sub, sid, amr, ttl_secs, credential)?;
        Ok((self.sign(kind, &claims)?, claims))
    }

    /// The claims [`Self::mint`] signs, for a caller that adds to them before [`Self::sign`].
    pub fn claims(
        &self,
        kind: Kind,
        sub: &str,
        sid: &str,
        amr: &[&str],
        ttl_secs: u64,
        credential: Option<&SecretString>,
    ) -> Result<Claims, MintError> {
        let now = self.clock.now();
        let cred = match credential {
            Some(c) if kind != Kind::Refresh => Some(self.seal(sid, c)?),
            _ => None,
        };
        Ok(Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: sub.to_owned(),
            iat: now,
            nbf: None,
            exp: now + ttl_secs,
            jti: self.random_id(),
            sid: sid.to_owned(),
            amr: amr.iter().map(|s| (*s).to_owned()).collect(),
            cred,
            id: None,
            two_factor: None,
            otp_verified: None,
        })
    }

    /// Signs `claims` as a token of `kind` with the current signing key. `claims.aud` must be
    /// one this service accepts (`tokens.audience`, or a device audience of the profile).
    pub fn sign(&self, kind: Kind, claims: &Claims) -> Result<String, MintError> {
        let keys = self.keys.load();
        let mut header = Header::new(jwt_alg(self.alg));
        header.kid = Some(keys.signing_kid.clone());
        header.typ = Some(kind.typ().to_owned());
        Ok(jsonwebtoken::encode(&header, claims, &keys.signing)?)
    }

    /// Verifies `token` (any kind); the caller decides whether the kind fits. Access tokens
    /// are cached once verified; the rare refresh and MFA tokens are always checked in full.
    pub fn verify(&self, token: &str) -> Result<Arc<Verified>, TokenError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        // A hit is a text that was well formed when it was cached: the shape check is for misses.
        let key = self.cache.key(token);
        let verified = match self.cache.get(key) {
            Some(v) => v,
            None => {
                if !well_formed(token) {
                    return Err(TokenError::Malformed);
                }
                let keys = self.keys.load_full();
                let v = Arc::new(self.verify_cold(token, &keys)?);
                if v.kind == Kind::Access {
                    self.cache.insert(key, v.clone(), self.clock.now());
                    // A reload that changes the keys empties the cache; one that ran while
                    // this token was checked under the old keys must not find it cached after.
                    if !Arc::ptr_eq(&self.keys.load(), &keys) {
                        self.cache.remove(key);
                    }
                }
                v
            }
        };
        self.check_time(&verified)?;
        Ok(verified)
    }

    fn check_time(&self, v: &Verified) -> Result<(), TokenError> {
        let now = self.clock.now();
        if now > v.exp.saturating_add(self.leeway) {
            return Err(TokenError::Expired);
        }
        if v.nbf > now.saturating_add(self.leeway) || v.iat > now.saturating_add(self.leeway) {
            return Err(TokenError::NotYetValid);
        }
        Ok(())
    }

    fn verify_cold(&self, token: &str, keys: &KeySnapshot) -> Result<Verified, TokenError> {
        if !jws_shaped(token) {
            return Err(TokenError::Invalid(Invalid::NotJwt));
        }
        // Unparseable headers include `alg: none`, which jsonwebtoken does not even model.
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid(Invalid::Header))?;
        if header.alg != jwt_alg(self.alg) {
            return Err(TokenError::Invalid(Invalid::Algorithm));
        }
        let kind = header
            .typ
            .as_deref()
            .and_then(Kind::from_typ)
            .ok_or(TokenError::Invalid(Invalid::Type))?;
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| keys.verifying.get(kid))
            .ok_or(TokenError::Invalid(Invalid::UnknownKey))?;
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.validation).map_err(
            |e| {
                use jsonwebtoken::errors::ErrorKind as E;
                TokenError::Invalid(match e.kind() {
                    E::InvalidSignature => Invalid::Signature,
                    E::InvalidIssuer => Invalid::Issuer,
                    E::InvalidAudience => Invalid::Audience,
                    _ => Invalid::Claims,
                })
            },
        )?;
        let mut c = data.claims;
        if let Some(retired) = key.retired {
            // A leaked key must not mint new tokens: only those issued before it was retired
            // (or by a server that had not seen the rotation yet) are genuine, and none
            // outlives the longest life a token of its kind could have had then.
            let issued_by = retired
                .saturating_add(self.lives.grace)
                .saturating_add(self.leeway);
            if c.iat > issued_by {
                return Err(TokenError::Invalid(Invalid::RetiredKey));
            }
            c.exp = c.exp.min(self.lives.deadline(retired, kind));
        }
        let credential = match c.cred {
            Some(sealed) if kind != Kind::Refresh => Some(
                unseal_with(&keys.seal, &c.sid, &sealed)
                    .ok_or(TokenError::Invalid(Invalid::Claims))?,
            ),
            Some(_) => return Err(TokenError::Invalid(Invalid::Claims)),
            None => None,
        };
        // The identity travels upstream in headers: one that cannot be a header value is no
        // identity (checked once here; a verified token is cached).
        let headers_can_carry = header_safe(&c.sub)
            && header_safe(&c.sid)
            && credential
                .as_ref()
                .is_none_or(|cred| header_safe(cred.expose_secret()));
        if !headers_can_carry {
            return Err(TokenError::Invalid(Invalid::Claims));
        }
        Ok(Verified {
            kind,
            sub: c.sub.into(),
            sid: c.sid.into(),
            jti: c.jti.into(),
            amr: c.amr,
            iat: c.iat,
            nbf: c.nbf.unwrap_or(0),
            exp: c.exp,
            credential,
        })
    }

    /// AEAD-seals a secret (a backend credential, a TOTP secret) under the current sealing
    /// key, bound to `context` (the session id, `totp:<user>`): it opens under that context only.
    pub fn seal(&self, context: &str, secret: &SecretString) -> Result<String, MintError> {
        let keys = self.keys.load();
        let seal = &keys.seal;
        let key = seal.keys.get(&seal.current).ok_or(MintError::Seal)?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| MintError::Seal)?;
        let mut buf = secret.expose_secret().as_bytes().to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context.as_bytes()),
            &mut buf,
        )
        .map_err(|_| MintError::Seal)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        let text = URL_SAFE_NO_PAD.encode(out);
        Ok(match seal.current {
            0 => text,
            id => format!("{id}.{text}"),
        })
    }

    /// Opens a sealed secret; `None` if it was tampered with or belongs to another context.
    pub fn unseal(&self, context: &str, sealed: &str) -> Option<SecretString> {
        unseal_with(&self.keys.load().seal, context, sealed)
    }

    /// A keyed digest of `message`: HMAC-SHA256 under a key derived from the current sealing
    /// key, as `k<id>.<base64url>`. What the store keeps of a secret too small to hash plainly
    /// (a 6-digit recovery code: a plain digest gives it up to whoever reads the store, by
    /// trying all million); like a sealed blob it names its key, so it still matches after
    /// the sealing key rotates.
    pub fn keyed_digest(&self, message: &[u8]) -> Option<String> {
        let keys = self.keys.load();
        let id = keys.seal.current;
        let tag = hmac::sign(keys.seal.digest_keys.get(&id)?, message);
        Some(format!("k{id}.{}", URL_SAFE_NO_PAD.encode(tag)))
    }

    /// Whether `stored` is [`Self::keyed_digest`] of `message` (compared in constant time);
    /// false for anything else, including a digest under a key this server does not have.
    pub fn keyed_digest_matches(&self, stored: &str, message: &[u8]) -> bool {
        let Some((id, text)) = stored
            .strip_prefix('k')
            .and_then(|rest| rest.split_once('.'))
        else {
            return false;
        };
        let (Ok(id), Ok(tag)) = (id.parse::<u32>(), URL_SAFE_NO_PAD.decode(text)) else {
            return false;
        };
        let keys = self.keys.load();
        keys.seal
            .digest_keys
            .get(&id)
            .is_some_and(|key| hmac::verify(key, message, &tag).is_ok())
    }

    /// Number of cached verified tokens (for metrics and tests).
    pub fn cache_entries(&self) -> usize {
        self.cache.len()
    }
}

/// Opens a sealed secret with the key its blob names.
fn unseal_with(seal: &SealKeys, context: &str, sealed: &str) -> Option<SecretString> {
    let (key, sealed) = seal.for_blob(sealed)?;
    let raw = URL_SAFE_NO_PAD.decode(sealed).ok()?;
    if raw.len() < NONCE_LEN {
        return None;
    }
    let (nonce, ct) = raw.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut buf = ct.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf)
        .ok()?;
    let text = std::str::from_utf8(plain).ok()?;
    Some(SecretString::from(text.to_owned()))
}

fn load_snapshot(
    store_path: &std::path::Path,
    alg: Algorithm,
    now: u64,
    lives: Lives,
    sealing: u32,
) -> Result<KeySnapshot, keys::KeyError> {
    let loaded = keys::load_or_create(store_path, alg, now, lives.retention())?;
    // Others verify only access tokens with the JWKS: a retired key is published while an
    // access token it signed can still be good, and no longer.
    let published = |retired: Option<u64>| {
        retired.is_none_or(|r| now <= lives.deadline(r, Kind::Access).saturating_add(lives.leeway))
    };
    let jwks = JwkSet {
        keys: loaded
            .verifying
            .values()
            .filter(|k| published(k.retired))
            .filter_map(|k| k.jwk.clone())
            .collect(),
    };
    let mut fingerprint: Vec<(String, Option<u64>)> = loaded
        .verifying
        .iter()
        .map(|(kid, k)| (kid.clone(), k.retired))
        .collect();
    fingerprint.sort();
    let jwks = serde_json::to_vec(&jwks).unwrap_or_else(|_| b"{\"keys\":[]}".to_vec());
    Ok(KeySnapshot {
        signing_kid: loaded.signing_kid,
        signing: loaded.signing,
        verifying: loaded
            .verifying
            .into_iter()
            .map(|(kid, k)| {
                let key = VerifyingKey {
                    decoding: k.decoding,
                    retired: k.retired,
                };
                (kid, key)
            })
            .collect(),
        jwks: jwks.into(),
        fingerprint,
        seal: SealKeys::load(store_path, now, lives.grace, sealing)?,
    })
}

#[cfg(test)]
mod tests;
