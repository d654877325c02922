//! Identity and access: the seed's `IUserManagementService`.
//!
//! Organizations and users are event-sourced aggregates (`pivotal-domain`);
//! their secrets are not. Password hashes, TOTP secrets, recovery codes,
//! refresh tokens, MFA challenges and invitations live in the credential
//! vault, tables of the write-side database that are written in the same
//! transaction as the events that refer to them and read by nothing else
//! (`docs/adr/0007-credential-vault.md`).
//!
//! # Layout
//!
//! - [`service`]: [`Identity`], sign-up, sign-in, MFA, refresh-token
//!   rotation with reuse detection, logout, introspection, user commands
//!   that touch the vault.
//! - [`passwords`]: argon2id hashing and the password policy.
//! - [`totp`]: RFC 6238 codes, `otpauth://` URIs and QR codes.
//! - [`limits`]: Redis-backed rate limits and the sign-in lockout counter.
//! - [`secrets`]: random tokens, digests, recovery codes and the box that
//!   encrypts TOTP secrets at rest.

pub mod limits;
pub mod passwords;
pub mod secrets;
pub mod service;
pub mod totp;

pub use service::{
    AuthResult, CreatedUser, Identity, IdentityError, LoginOutcome, MfaSetup, NewUser, Origin,
    PublicUser, SecondFactor, SignUp, TokenValidation,
};
