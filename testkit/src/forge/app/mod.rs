//! The fake forge's GitHub App mode: test keys for an App, and (see [`AppMode`]) what a
//! GitHub that knows the App checks.
//!
//! The keys are fixed 2048-bit RSA keys made for these tests only (`openssl genrsa
//! -traditional`, PKCS#1 like the keys GitHub hands out), and an EC key that is not an
//! App's key; generating RSA keys in a debug-built test would take seconds.

/// The test App's private key (PKCS#1 PEM).
pub const APP_KEY_PEM: &str = include_str!("test_app_key.pem");
/// Its public key (SPKI PEM): what the fake forge verifies JWTs with.
pub const APP_PUBLIC_PEM: &str = include_str!("test_app_key.pub.pem");
/// Another RSA key: its JWTs do not verify with [`APP_PUBLIC_PEM`].
pub const OTHER_KEY_PEM: &str = include_str!("test_other_key.pem");
/// An EC private key: not an App's key.
pub const EC_KEY_PEM: &str = include_str!("test_ec_key.pem");
