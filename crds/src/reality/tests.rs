//! Reality keys against RFC 7748's vector and against real xray.
#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::path::PathBuf;
use std::process::Command;

use super::*;

/// RFC 7748 §6.1, Alice's key pair, in base64url.
const RFC_PRIVATE: &str = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo";
const RFC_PUBLIC: &str = "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo";

#[test]
fn public_key_matches_the_rfc_7748_vector() {
    assert_eq!(public_key(RFC_PRIVATE).unwrap(), RFC_PUBLIC);
}

#[test]
fn standard_alphabet_padding_and_whitespace_are_accepted() {
    let standard = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=\n";
    assert_eq!(public_key(standard).unwrap(), RFC_PUBLIC);
    assert_eq!(canonical_private_key(standard).unwrap(), RFC_PRIVATE);
    let slash = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";
    assert_eq!(
        canonical_private_key(slash).unwrap(),
        "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"
    );
}

#[test]
fn errors_never_show_the_key() {
    let not_base64 = "secret!key with spaces";
    let error = public_key(not_base64).unwrap_err();
    assert_eq!(error, RealityKeyError::NotBase64 { length: 22 });
    assert!(!error.to_string().contains("secret"), "{error}");
    let short = "c2VjcmV0";
    let error = public_key(short).unwrap_err();
    assert_eq!(error, RealityKeyError::WrongLength { bytes: 6 });
    assert!(!error.to_string().contains(short), "{error}");
}

#[test]
fn generated_keys_are_clamped_distinct_and_canonical() {
    let a = generate_private_key();
    let b = generate_private_key();
    assert_ne!(a, b);
    assert_eq!(a.len(), 43);
    assert_eq!(canonical_private_key(&a).unwrap(), a);
    let bytes = decode(&a).unwrap();
    assert_eq!(bytes[0] & 7, 0);
    assert_eq!(bytes[31] & 0xc0, 0x40);
}

/// The xray binary `make env` builds.
fn xray() -> PathBuf {
    let candidates = [
        std::env::var_os("VEIL_XRAY").map(PathBuf::from),
        std::env::var_os("VEIL_CACHE").map(|dir| PathBuf::from(dir).join("bin/xray")),
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/veil/bin/xray")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!("xray not found ($VEIL_XRAY, $VEIL_CACHE/bin/xray, ~/.cache/veil/bin/xray): run `make env`")
        })
}

#[test]
fn real_xray_derives_the_same_public_key() {
    let xray = xray();
    for private in [generate_private_key(), RFC_PRIVATE.to_owned()] {
        let output = Command::new(&xray)
            .args(["x25519", "-i", &private])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", xray.display()));
        assert!(output.status.success(), "xray x25519 failed: {output:?}");
        let printed = String::from_utf8_lossy(&output.stdout);
        let ours = public_key(&private).unwrap();
        // Only search for the key: xray's output format is not stable.
        assert!(
            printed.contains(&ours),
            "xray printed no {ours}:\n{printed}"
        );
    }
    // xray clamps a key before printing it; ours are clamped already.
    let generated = generate_private_key();
    let output = Command::new(&xray)
        .args(["x25519", "-i", &generated])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains(&generated));
}
