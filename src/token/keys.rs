//! Signing keys on disk: generated on first start, persisted with mode 0600 under
//! `<store.path>/keys/`, rotated on demand. A rotated key stops signing at once and records
//! when (`retired`): from then on it verifies only tokens issued before that time, each kind
//! for at most its life (the rules live in `token`); once nothing it signed can verify, the
//! file is deleted.
//! Private key material never leaves this module except as a `jsonwebtoken::EncodingKey`.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{DecodingKey, EncodingKey, jwk::Jwk};
use serde::{Deserialize, Serialize};

use crate::config::Algorithm;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("key generation failed")]
    Generate,
}

/// One key as stored on disk.
#[derive(Serialize, Deserialize)]
struct KeyFile {
    kid: String,
    alg: Algorithm,
    created: u64,
    /// When this key stopped signing: it verifies only tokens issued before, each kind for at
    /// most its life after this time, and is deleted at `retired + retention`.
    retired: Option<u64>,
    /// PKCS#8 PEM for asymmetric keys, base64 for the HS256 secret.
    private: String,
}

/// A verifying key and, for asymmetric algorithms, its public JWK.
pub struct PublicKey {
    pub decoding: DecodingKey,
    pub jwk: Option<Jwk>,
    /// When the key stopped signing (`None`: it signs): what it may still verify depends on it.
    pub retired: Option<u64>,
}

/// The keys loaded from disk: the one that signs and all that still verify.
pub struct LoadedKeys {
    pub signing_kid: String,
    pub signing: EncodingKey,
    pub verifying: HashMap<String, PublicKey>,
}

pub fn keys_dir(store_path: &Path) -> PathBuf {
    store_path.join("keys")
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` to `path` atomically, readable by the owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

fn random_bytes<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut buf = [0u8; N];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| KeyError::Generate)?;
    Ok(buf)
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn generate(alg: Algorithm, now: u64) -> Result<KeyFile, KeyError> {
    let private = match alg {
        Algorithm::EdDSA => {
            let kp = Ed25519KeyPair::generate().map_err(|_| KeyError::Generate)?;
            let der = kp.to_pkcs8v1().map_err(|_| KeyError::Generate)?;
            pem("PRIVATE KEY", der.as_ref())
        }
        Algorithm::ES256 => {
            let kp = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                .map_err(|_| KeyError::Generate)?;
            let der = kp.to_pkcs8v1().map_err(|_| KeyError::Generate)?;
            pem("PRIVATE KEY", der.as_ref())
        }
        Algorithm::RS256 => {
            let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|_| KeyError::Generate)?;
            let der = kp.as_der().map_err(|_| KeyError::Generate)?;
            pem("PRIVATE KEY", der.as_ref())
        }
        Algorithm::HS256 => STANDARD.encode(random_bytes::<32>()?),
    };
    Ok(KeyFile {
        kid: URL_SAFE_NO_PAD.encode(random_bytes::<12>()?),
        alg,
        created: now,
        retired: None,
        private,
    })
}

fn jwt_alg(alg: Algorithm) -> jsonwebtoken::Algorithm {
    match alg {
        Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
        Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        Algorithm::HS256 => jsonwebtoken::Algorithm::HS256,
    }
}

impl KeyFile {
    fn encoding_key(&self) -> jsonwebtoken::errors::Result<EncodingKey> {
        let pem = self.private.as_bytes();
        match self.alg {
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem),
            Algorithm::HS256 => EncodingKey::from_base64_secret(&self.private),
        }
    }

    fn public_key(&self, encoding: &EncodingKey) -> jsonwebtoken::errors::Result<PublicKey> {
        if self.alg == Algorithm::HS256 {
            let secret = STANDARD
                .decode(&self.private)
                .map_err(|_| jsonwebtoken::errors::ErrorKind::InvalidKeyFormat)?;
            return Ok(PublicKey {
                decoding: DecodingKey::from_secret(&secret),
                jwk: None,
                retired: self.retired,
            });
        }
        let mut jwk = Jwk::from_encoding_key(encoding, jwt_alg(self.alg))?;
        jwk.common.key_id = Some(self.kid.clone());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        Ok(PublicKey {
            decoding: DecodingKey::from_jwk(&jwk)?,
            jwk: Some(jwk),
            retired: self.retired,
        })
    }
}

fn read_all(dir: &Path) -> Result<Vec<(PathBuf, KeyFile)>, KeyError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for entry in entries {
        let path = entry.map_err(io_err(dir))?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            // Deleted since the listing (`rotate-keys --revoke-old`, or a key past its
            // retention): it is gone, not an error that would keep the old keys loaded.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&path)(e)),
        };
        let key: KeyFile = serde_json::from_str(&text).map_err(|e| KeyError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        out.push((path, key));
    }
    Ok(out)
}

fn save(dir: &Path, key: &KeyFile) -> Result<(), KeyError> {
    let path = dir.join(format!("{}.json", key.kid));
    let text = serde_json::to_vec_pretty(key).map_err(|e| KeyError::Corrupt {
        path: path.clone(),
        message: e.to_string(),
    })?;
    write_private(&path, &text)
}

/// Creates `dir` and any missing parents with mode 0700 (owner only); existing directories are
/// left as they are. Everything authgate keeps under `store.path` is secret or private.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn ensure_dir(dir: &Path) -> Result<(), KeyError> {
    create_private_dir(dir).map_err(io_err(dir))
}

/// Loads the keys of `alg`, generating the first one if there is none, and deletes keys whose
/// retention (`retired + retention_secs`) has passed.
pub fn load_or_create(
    store_path: &Path,
    alg: Algorithm,
    now: u64,
    retention_secs: u64,
) -> Result<LoadedKeys, KeyError> {
    let dir = keys_dir(store_path);
    ensure_dir(&dir)?;
    let mut files: Vec<(PathBuf, KeyFile)> = read_all(&dir)?
        .into_iter()
        .filter(|(_, k)| k.alg == alg)
        .collect();
    files.retain(|(path, k)| match k.retired {
        Some(r) if r.saturating_add(retention_secs) < now => {
            // Past its last token's life: nothing it signed can still be valid.
            let _ = std::fs::remove_file(path);
            false
        }
        _ => true,
    });
    if !files.iter().any(|(_, k)| k.retired.is_none()) {
        let key = generate(alg, now)?;
        save(&dir, &key)?;
        files.push((dir.join(format!("{}.json", key.kid)), key));
    }
    // The newest active key signs.
    files.sort_by_key(|(_, k)| (k.retired.is_none(), k.created));
    let mut verifying = HashMap::new();
    let mut signing = None;
    for (path, key) in &files {
        let corrupt = |e: jsonwebtoken::errors::Error| KeyError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        };
        let encoding = key.encoding_key().map_err(corrupt)?;
        verifying.insert(key.kid.clone(), key.public_key(&encoding).map_err(corrupt)?);
        if key.retired.is_none() {
            signing = Some((key.kid.clone(), encoding));
        }
    }
    let (signing_kid, signing) = signing.ok_or(KeyError::Generate)?;
    Ok(LoadedKeys {
        signing_kid,
        signing,
        verifying,
    })
}

/// Generates a new signing key and retires the others (they keep verifying). Returns the new kid.
pub fn rotate(store_path: &Path, alg: Algorithm, now: u64) -> Result<String, KeyError> {
    let dir = keys_dir(store_path);
    ensure_dir(&dir)?;
    let key = generate(alg, now)?;
    save(&dir, &key)?;
    for (_, mut old) in read_all(&dir)? {
        if old.kid != key.kid && old.retired.is_none() {
            old.retired = Some(now);
            save(&dir, &old)?;
        }
    }
    Ok(key.kid)
}

/// Emergency rotation, for a key that leaked: generates a new signing key and deletes every
/// other one, so everything they signed is refused (as an unknown `kid`) by each server
/// within its key-reload interval and by a restarted one. Every session must log in again.
/// Returns the new kid and the revoked ones.
pub fn rotate_and_revoke(
    store_path: &Path,
    alg: Algorithm,
    now: u64,
) -> Result<(String, Vec<String>), KeyError> {
    let dir = keys_dir(store_path);
    ensure_dir(&dir)?;
    let key = generate(alg, now)?;
    save(&dir, &key)?;
    let mut revoked = Vec::new();
    for (path, old) in read_all(&dir)? {
        if old.kid != key.kid {
            std::fs::remove_file(&path).map_err(io_err(&path))?;
            revoked.push(old.kid);
        }
    }
    Ok((key.kid, revoked))
}

/// The server-only key that seals backend credentials inside access tokens and TOTP secrets
/// at rest: `keys/seal.key`, the first sealing key (id 0), created when missing.
pub fn load_or_create_seal_key(store_path: &Path) -> Result<[u8; 32], KeyError> {
    let dir = keys_dir(store_path);
    ensure_dir(&dir)?;
    let path = dir.join("seal.key");
    match read_seal_key(&path) {
        Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            let key = random_bytes::<32>()?;
            write_private(&path, STANDARD.encode(key).as_bytes())?;
            Ok(key)
        }
        other => other,
    }
}

fn read_seal_key(path: &Path) -> Result<[u8; 32], KeyError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let bytes = STANDARD.decode(text.trim()).ok();
    bytes
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| KeyError::Corrupt {
            path: path.to_owned(),
            message: "expected 32 bytes of base64".into(),
        })
}

/// The id of a rotated sealing key file, `seal-<id>.key` (id 1 and up).
fn seal_key_id(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    let id = name.strip_prefix("seal-")?.strip_suffix(".key")?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) || id.starts_with('0') {
        return None;
    }
    id.parse().ok()
}

/// A sealing key and when its file arrived (its modification time, seconds since the epoch;
/// 0 if unknown): a Kubernetes Secret reaches each pod at its own time.
pub struct SealKey {
    pub key: [u8; 32],
    pub arrived: u64,
}

fn arrived(path: &Path) -> u64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// Every sealing key by id: `seal.key` is id 0 (created when missing), `seal-<id>.key` the
/// rotated ones. All of them open what they sealed; the caller picks the one that seals.
/// Sealing keys are never deleted: a stored TOTP secret lives as long as its enrollment.
pub fn load_seal_keys(store_path: &Path) -> Result<BTreeMap<u32, SealKey>, KeyError> {
    let mut keys = BTreeMap::new();
    let first = SealKey {
        key: load_or_create_seal_key(store_path)?,
        arrived: 0,
    };
    keys.insert(0, first);
    let dir = keys_dir(store_path);
    for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
        let path = entry.map_err(io_err(&dir))?.path();
        if let Some(id) = seal_key_id(&path) {
            let key = SealKey {
                key: read_seal_key(&path)?,
                arrived: arrived(&path),
            };
            keys.insert(id, key);
        }
    }
    Ok(keys)
}

/// Starts sealing with a new key (`seal-<id>.key`); older ones keep opening what they sealed.
/// Servers open with it once they reload their keys, and seal with it `tokens.rotation_grace`
/// after its file arrived. Returns its id.
pub fn rotate_seal_key(store_path: &Path) -> Result<u32, KeyError> {
    let current = load_seal_keys(store_path)?;
    let id = current.keys().next_back().map_or(1, |last| last + 1);
    let path = keys_dir(store_path).join(format!("seal-{id}.key"));
    write_private(&path, STANDARD.encode(random_bytes::<32>()?).as_bytes())?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn every_algorithm_generates_persists_and_reloads() {
        for alg in [
            Algorithm::EdDSA,
            Algorithm::ES256,
            Algorithm::RS256,
            Algorithm::HS256,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let first = load_or_create(dir.path(), alg, 1000, 60).unwrap();
            let again = load_or_create(dir.path(), alg, 1001, 60).unwrap();
            assert_eq!(
                first.signing_kid, again.signing_kid,
                "{alg:?} key not persisted"
            );
            let file = keys_dir(dir.path()).join(format!("{}.json", first.signing_kid));
            let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            let has_jwk = first.verifying[&first.signing_kid].jwk.is_some();
            assert_eq!(has_jwk, alg != Algorithm::HS256);
        }
    }

    #[test]
    fn a_key_file_gone_between_listing_and_reading_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path(), Algorithm::EdDSA, 1000, 60).unwrap();
        // What a reload sees when a revocation deletes a file it has just listed.
        std::os::unix::fs::symlink("gone.json", keys_dir(dir.path()).join("revoked.json")).unwrap();
        let again = load_or_create(dir.path(), Algorithm::EdDSA, 1001, 60).unwrap();
        assert_eq!(again.signing_kid, first.signing_kid);
    }

    #[test]
    fn rotation_keeps_old_key_until_retention_passes() {
        let dir = tempfile::tempdir().unwrap();
        let old = load_or_create(dir.path(), Algorithm::EdDSA, 1000, 60).unwrap();
        let new_kid = rotate(dir.path(), Algorithm::EdDSA, 2000).unwrap();
        let during = load_or_create(dir.path(), Algorithm::EdDSA, 2060, 60).unwrap();
        assert_eq!(during.signing_kid, new_kid);
        assert!(during.verifying.contains_key(&old.signing_kid));
        let after = load_or_create(dir.path(), Algorithm::EdDSA, 2061, 60).unwrap();
        assert!(!after.verifying.contains_key(&old.signing_kid));
        assert_eq!(after.verifying.len(), 1);
    }
}
