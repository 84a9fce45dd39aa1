//! RFC 6238 TOTP (SHA-1, 6 digits, 30 s steps) written for the tests, independently of the
//! code under test, so a test's codes are not computed by what it checks.

use aws_lc_rs::hmac;

/// RFC 4648 base32 (padding optional), as authenticator apps read the secret.
pub fn base32_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut value, mut out) = (0u32, 0u32, Vec::new());
    for c in s.trim_end_matches('=').bytes() {
        let v = ALPHABET
            .iter()
            .position(|&a| a == c.to_ascii_uppercase())
            .expect("base32") as u32;
        value = (value << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((value >> bits) as u8);
        }
    }
    out
}

/// The code for `unix` seconds (RFC 4226 dynamic truncation).
pub fn totp(secret_b32: &str, unix: u64) -> String {
    let key = hmac::Key::new(
        hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        &base32_decode(secret_b32),
    );
    let tag = hmac::sign(&key, &(unix / 30).to_be_bytes());
    let h = tag.as_ref();
    let offset = (h[19] & 0x0f) as usize;
    let bin = u32::from_be_bytes([
        h[offset] & 0x7f,
        h[offset + 1],
        h[offset + 2],
        h[offset + 3],
    ]);
    format!("{:06}", bin % 1_000_000)
}
