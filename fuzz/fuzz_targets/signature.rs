//! The webhook's signature check, `signature_matches(secret, body, header)`.
//!
//! Input: `secret \n header \n body` (the first two lines as UTF-8, lossily;
//! the rest as raw bytes). The check must never panic, must accept the
//! header only when it carries the HMAC-SHA256 of the body under the
//! secret, computed here independently of voxline, and must accept that
//! HMAC when it is sent as Meta sends it.
#![no_main]

use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use voxline::channel::whatsapp::webhook::{sign, signature_matches};

fn hmac_sha256(secret: &str, body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

fuzz_target!(init: voxline_fuzz::init(), |data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let secret = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let header = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let body = parts.next().unwrap_or_default();
    let expected = hmac_sha256(&secret, body);

    if signature_matches(&secret, body, &header) {
        let given = header
            .trim()
            .strip_prefix("sha256=")
            .and_then(|h| hex::decode(h).ok());
        assert_eq!(
            given.as_deref(),
            Some(&expected[..]),
            "accepted a header that does not carry the body's HMAC: {header:?}"
        );
    }

    let meta = format!("sha256={}", hex::encode(&expected));
    assert_eq!(sign(&secret, body), meta);
    assert!(signature_matches(&secret, body, &meta), "rejected the right HMAC");

    let mut flipped = expected.clone();
    let byte = body.len() % flipped.len();
    flipped[byte] ^= 1 << (body.len() % 8);
    let flipped = format!("sha256={}", hex::encode(flipped));
    assert!(!signature_matches(&secret, body, &flipped), "accepted a wrong HMAC");
    let short = format!("sha256={}", hex::encode(&expected[..16]));
    assert!(!signature_matches(&secret, body, &short), "accepted a truncated HMAC");
    let other = format!("{secret}x");
    assert!(!signature_matches(&other, body, &meta), "accepted another secret's HMAC");
});
