//! TOTP (RFC 6238) factors: SHA-1, 6 digits, 30-second steps, one step of
//! clock skew either way. A code is accepted once: the vault remembers the
//! last step used, and only later steps pass.

use qrcode::QrCode;
use qrcode::render::svg;
use rand::RngCore;
use totp_rs::{Algorithm, Builder, Totp};

pub const ISSUER: &str = "Pivotal Flow";

/// A new random 160-bit secret.
pub fn new_secret() -> Vec<u8> {
    let mut secret = vec![0u8; 20];
    rand::rng().fill_bytes(&mut secret);
    secret
}

pub fn totp(secret: &[u8], account: &str) -> Option<Totp> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(30)
        .with_secret(secret.to_vec())
        .with_account_name(account.replace(':', ""))
        .with_issuer(Some(ISSUER))
        .build()
        .ok()
}

/// What an authenticator app needs: the base32 secret, the `otpauth://`
/// URI and the URI as a QR code (SVG).
#[derive(Debug, Clone)]
pub struct Enrolment {
    pub secret_base32: String,
    pub otpauth_uri: String,
    pub qr_svg: String,
}

pub fn enrolment(secret: &[u8], account: &str) -> Option<Enrolment> {
    let totp = totp(secret, account)?;
    let uri = totp.to_url().ok()?;
    let qr = QrCode::new(uri.as_bytes()).ok()?;
    let svg = qr
        .render::<svg::Color<'_>>()
        .min_dimensions(200, 200)
        .build();
    Some(Enrolment {
        secret_base32: totp.secret().to_base32(),
        otpauth_uri: uri,
        qr_svg: svg,
    })
}

/// The step `code` matches at `unix_time`, if any.
pub fn matching_step(secret: &[u8], code: &str, unix_time: u64) -> Option<u64> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    totp(secret, "x")?.check(code, unix_time)
}

/// The code for `unix_time` (tests and the demo script's own checks).
pub fn code_at(secret: &[u8], unix_time: u64) -> Option<String> {
    totp(secret, "x").map(|t| t.generate(unix_time).to_string())
}

/// The code for `unix_time` of a secret given in base32, as an
/// authenticator app computes it from the enrolment (tests, demo).
pub fn code_for_base32(secret_base32: &str, unix_time: u64) -> Option<String> {
    let secret = totp_rs::Secret::try_from_base32(secret_base32).ok()?;
    code_at(secret.as_ref(), unix_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vector() {
        // RFC 6238 appendix B: secret "12345678901234567890", T = 59 s.
        let secret = b"12345678901234567890";
        let code = code_at(secret, 59).unwrap();
        assert_eq!(code, "287082"); // last 6 digits of 94287082
        assert_eq!(matching_step(secret, "287082", 59), Some(1));
        // One step of skew either way, no more.
        assert_eq!(matching_step(secret, "287082", 59 + 30), Some(1));
        assert_eq!(matching_step(secret, "287082", 59 + 60), None);
        assert_eq!(matching_step(secret, "28708", 59), None);
        assert_eq!(matching_step(secret, "abcdef", 59), None);
    }

    #[test]
    fn enrolment_has_uri_and_qr() {
        let secret = new_secret();
        let e = enrolment(&secret, "ada@example.com").unwrap();
        assert!(
            e.otpauth_uri
                .starts_with("otpauth://totp/Pivotal%20Flow:ada%40example.com?"),
            "{}",
            e.otpauth_uri
        );
        assert!(
            e.otpauth_uri
                .contains(&format!("secret={}", e.secret_base32))
        );
        assert!(e.qr_svg.contains("<svg"));
    }
}
