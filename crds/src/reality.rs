//! Reality x25519 keys, computed natively (design §4: never parsed from
//! `xray x25519` output, whose format changed twice).
//!
//! Keys are written the way xray reads them: 32 bytes in base64url without
//! padding (43 characters). A private key is a credential: no error of this
//! module ever contains it.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use x25519_dalek::{PublicKey, StaticSecret};

/// Bytes of an x25519 key.
const KEY_BYTES: usize = 32;

/// Why a text is not a Reality private key. Never contains the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RealityKeyError {
    /// The text is not base64 (url-safe or standard alphabet).
    #[error(
        "the private key ({length} characters, not shown) is not base64url; write the 43-character key `xray x25519` prints"
    )]
    NotBase64 { length: usize },
    /// The text decodes, but not to 32 bytes.
    #[error(
        "the private key decodes to {bytes} bytes, not 32; write the 43-character key `xray x25519` prints"
    )]
    WrongLength { bytes: usize },
}

/// A new random private key, clamped as RFC 7748 says (so `xray x25519 -i`
/// prints it back unchanged), in base64url without padding.
pub fn generate_private_key() -> String {
    let mut bytes: [u8; KEY_BYTES] = rand::random();
    clamp(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The private key in the one form xray accepts (base64url without
/// padding), from any of the usual spellings: url-safe or standard
/// alphabet, with or without `=` padding, surrounded by whitespace.
///
/// # Errors
/// [`RealityKeyError`] when the text is not base64 of 32 bytes.
pub fn canonical_private_key(private: &str) -> Result<String, RealityKeyError> {
    decode(private).map(|bytes| URL_SAFE_NO_PAD.encode(bytes))
}

/// The public key (base64url without padding) of a private key written as
/// [`canonical_private_key`] accepts.
///
/// # Errors
/// [`RealityKeyError`] when the text is not base64 of 32 bytes.
pub fn public_key(private: &str) -> Result<String, RealityKeyError> {
    let secret = StaticSecret::from(decode(private)?);
    Ok(URL_SAFE_NO_PAD.encode(PublicKey::from(&secret).as_bytes()))
}

fn decode(text: &str) -> Result<[u8; KEY_BYTES], RealityKeyError> {
    let trimmed = text.trim().trim_end_matches('=');
    let decoded = URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| STANDARD_NO_PAD.decode(trimmed))
        .map_err(|_| RealityKeyError::NotBase64 {
            length: text.chars().count(),
        })?;
    let bytes = decoded.len();
    decoded
        .try_into()
        .map_err(|_| RealityKeyError::WrongLength { bytes })
}

/// RFC 7748 §5 clamping (x25519 applies it anyway; doing it up front makes
/// the stored key the one xray shows).
fn clamp(bytes: &mut [u8; KEY_BYTES]) {
    bytes[0] &= 248;
    bytes[31] &= 127;
    bytes[31] |= 64;
}

#[cfg(test)]
mod tests;
