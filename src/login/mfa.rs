//! TOTP (RFC 6238: SHA-1, 6 digits, 30 s steps, one step of skew) and recovery codes.
//! The per-user record is stored as JSON with the TOTP secret sealed (AEAD, server key, bound
//! to the user) and recovery codes as keyed digests (HMAC under a server key, see
//! `TokenService::keyed_digest`; records from before keep plain SHA-256 digests, still
//! accepted). Pure functions: the flows in `login` do the storing and the keying, so the replay
//! guard (`last_step`) is updated atomically there.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};

pub const STEP: u64 = 30;
pub const RECOVERY_CODES: usize = 10;

/// A user's second factor as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MfaRecord {
    /// Base32 TOTP secret, sealed with context `totp:<user>`.
    pub secret: String,
    /// False between enroll and confirm.
    pub enabled: bool,
    /// The digest of each unused recovery code: keyed (`k<id>.<base64url>`), or a plain
    /// SHA-256 (hex) in records written before recovery codes were keyed.
    pub recovery: Vec<String>,
    /// Highest TOTP step accepted so far (replay guard).
    pub last_step: u64,
}

pub fn seal_context(user: &str) -> String {
    format!("totp:{user}")
}

/// Builds the RFC 6238 generator for `secret_b32` (also gives the otpauth URL and QR code).
pub fn totp(secret_b32: &SecretString, issuer: &str, user: &str) -> Option<TOTP> {
    let bytes = totp_rs::Secret::Encoded(secret_b32.expose_secret().to_owned())
        .to_bytes()
        .ok()?;
    TOTP::new(
        Algorithm::SHA1,
        6,
        1,
        STEP,
        bytes,
        Some(issuer.to_owned()),
        user.to_owned(),
    )
    .ok()
}

/// A fresh random secret, base32 (160 bits, as RFC 4226 recommends).
pub fn new_secret() -> SecretString {
    let bytes = rand::random::<[u8; 20]>().to_vec();
    SecretString::from(totp_rs::Secret::Raw(bytes).to_encoded().to_string())
}

/// The step `code` matches at time `now` (one step of skew either way), if it is newer than
/// `last_step`. Comparison is constant-time.
pub fn matching_step(totp: &TOTP, code: &str, now: u64, last_step: u64) -> Option<u64> {
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let current = now / STEP;
    let mut found = None;
    for step in [current.saturating_sub(1), current, current + 1] {
        let expected = totp.generate(step * STEP);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) && step > last_step {
            found = Some(step);
        }
    }
    found
}

/// Ten fresh recovery codes (80 bits each, `xxxx-xxxx-xxxx-xxxx`).
pub fn new_recovery_codes() -> Vec<String> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789"; // no 0/o, 1/l/i
    (0..RECOVERY_CODES)
        .map(|_| {
            let chars: Vec<u8> = (0..16)
                .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())])
                .collect();
            chars
                .chunks(4)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join("-")
        })
        .collect()
}

/// Ten fresh recovery codes of six digits: the nethcti-middleware client (SPEC 2.7) types
/// them into its 6-digit OTP field. About 20 bits each, so like a TOTP code they are only as
/// strong as the lockout in front of them (and kept only as keyed digests).
pub fn new_numeric_recovery_codes() -> Vec<String> {
    (0..RECOVERY_CODES)
        .map(|_| format!("{:06}", rand::random_range(0..1_000_000u32)))
        .collect()
}

/// The `otpauth://` URL authenticator apps read, in the parameter order the NethVoice client
/// shows: `otpauth://totp/<issuer>:<user>?algorithm=SHA1&digits=6&period=30&secret=<B32>`.
pub fn otpauth_url(issuer: &str, user: &str, secret_b32: &SecretString) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const LABEL: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    format!(
        "otpauth://totp/{}:{}?algorithm=SHA1&digits=6&period={STEP}&secret={}",
        utf8_percent_encode(issuer, LABEL),
        utf8_percent_encode(user, LABEL),
        secret_b32.expose_secret()
    )
}

/// What is digested of a recovery code as typed (case, spaces and dashes ignored), bound to
/// its user.
pub fn recovery_message(user: &str, code: &str) -> Vec<u8> {
    let normal: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    format!("authgate-recovery\u{0}{user}\u{0}{normal}").into_bytes()
}

/// The plain SHA-256 (hex) digest records kept before recovery codes were keyed.
fn unkeyed_digest(message: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Index of the recovery code matching `code`: `keyed_matches(stored, message)` tells a keyed
/// digest (`k<id>.<base64url>`), older plain digests are compared here; in constant time
/// either way.
pub fn matching_recovery(
    record: &MfaRecord,
    user: &str,
    code: &str,
    keyed_matches: impl Fn(&str, &[u8]) -> bool,
) -> Option<usize> {
    let message = recovery_message(user, code);
    let unkeyed = unkeyed_digest(&message);
    let mut found = None;
    for (i, d) in record.recovery.iter().enumerate() {
        let matches = if d.starts_with('k') {
            keyed_matches(d, &message)
        } else {
            bool::from(d.as_bytes().ct_eq(unkeyed.as_bytes()))
        };
        if matches {
            found = Some(i);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// RFC 6238 appendix B, SHA-1 key "12345678901234567890", truncated to 6 digits.
    #[test]
    fn rfc6238_vectors() {
        let secret = SecretString::from(
            totp_rs::Secret::Raw(b"12345678901234567890".to_vec())
                .to_encoded()
                .to_string(),
        );
        let t = totp(&secret, "NethVoice", "alice").unwrap();
        for (time, code) in [
            (59, "287082"),
            (1111111109, "081804"),
            (1111111111, "050471"),
            (1234567890, "005924"),
            (2000000000, "279037"),
        ] {
            assert_eq!(t.generate(time), code);
        }
        assert_eq!(matching_step(&t, "287082", 59, 0), Some(1));
        // One step of skew either way, not two.
        assert_eq!(matching_step(&t, "287082", 59 + 30, 0), Some(1));
        assert_eq!(matching_step(&t, "287082", 59 + 60, 0), None);
        // Replay guard.
        assert_eq!(matching_step(&t, "287082", 59, 1), None);
        assert_eq!(matching_step(&t, "28708", 59, 0), None);
        assert_eq!(matching_step(&t, "abcdef", 59, 0), None);
    }

    /// A stand-in for the server's keyed digest (the real one is tested in `token`).
    fn keyed(message: &[u8]) -> String {
        format!(
            "k7.{}",
            unkeyed_digest(&[b"key".as_slice(), message].concat())
        )
    }

    fn keyed_matches(stored: &str, message: &[u8]) -> bool {
        stored == keyed(message)
    }

    #[test]
    fn recovery_codes_are_distinct_and_match_loosely() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), 10);
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 10);
        let record = MfaRecord {
            secret: String::new(),
            enabled: true,
            recovery: codes
                .iter()
                .map(|c| keyed(&recovery_message("alice", c)))
                .collect(),
            last_step: 0,
        };
        let find = |user, code| matching_recovery(&record, user, code, keyed_matches);
        assert_eq!(find("alice", &codes[3]), Some(3));
        let typed = codes[3].to_uppercase().replace('-', " ");
        assert_eq!(find("alice", &typed), Some(3));
        assert_eq!(find("bob", &codes[3]), None);
        assert_eq!(find("alice", "nope"), None);
    }

    /// Records written before recovery codes were keyed keep working, beside keyed ones.
    #[test]
    fn unkeyed_digests_of_older_records_still_match() {
        let codes = new_numeric_recovery_codes();
        let record = MfaRecord {
            secret: String::new(),
            enabled: true,
            recovery: vec![
                unkeyed_digest(&recovery_message("alice", &codes[0])),
                keyed(&recovery_message("alice", &codes[1])),
            ],
            last_step: 0,
        };
        let find = |code| matching_recovery(&record, "alice", code, keyed_matches);
        assert_eq!(find(&codes[0]), Some(0));
        assert_eq!(find(&codes[1]), Some(1));
        // A keyed digest is never compared as a plain one, nor the other way round.
        let never = |_: &str, _: &[u8]| false;
        assert_eq!(matching_recovery(&record, "alice", &codes[1], never), None);
        assert_eq!(
            matching_recovery(&record, "alice", &codes[0], never),
            Some(0)
        );
    }
}
