use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::*;

/// A CA and a leaf for `names` signed by it: (ca DER, leaf DER).
fn chain(ca_name: &str, names: &[&str]) -> (CertificateDer<'static>, CertificateDer<'static>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let leaf = CertificateParams::new(names)
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    (ca.der().clone(), leaf.der().clone())
}

fn verify(
    pin: CaPin,
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    host: &str,
) -> Result<(), rustls::Error> {
    let name = ServerName::try_from(host.to_owned()).unwrap();
    PinnedCa::new(pin)
        .verify_server_cert(leaf, intermediates, &name, &[], UnixTime::now())
        .map(|_| ())
}

#[test]
fn a_pin_parses_from_sha256_hex_in_either_case() {
    let hex = "AB".repeat(32);
    let pin = CaPin::parse(&format!("sha256:{hex}")).unwrap();
    assert_eq!(pin.to_string(), format!("sha256:{}", "ab".repeat(32)));
    assert_eq!(CaPin::parse(&pin.to_string()).unwrap(), pin);
}

#[test]
fn malformed_pins_are_refused_with_the_expected_form() {
    for bad in [
        "ab".repeat(32),                       // no prefix
        format!("sha1:{}", "ab".repeat(32)),   // other algorithm
        format!("sha256:{}", "ab".repeat(31)), // too short
        format!("sha256:{}", "zz".repeat(32)), // not hex
    ] {
        let error = CaPin::parse(&bad).unwrap_err();
        assert!(
            error.to_string().contains("`sha256:` and 64 hex digits"),
            "{bad}: {error}"
        );
    }
}

#[test]
fn the_pinned_ca_in_the_chain_with_a_matching_leaf_is_accepted() {
    let (ca, leaf) = chain("veil CA", &["127.0.0.1", "operator.example"]);
    let pin = CaPin::of_der(&ca);
    verify(pin, &leaf, std::slice::from_ref(&ca), "127.0.0.1").unwrap();
    verify(pin, &leaf, std::slice::from_ref(&ca), "operator.example").unwrap();
}

#[test]
fn a_chain_of_another_ca_is_refused_naming_both_hashes() {
    let (ours, _) = chain("veil CA", &["127.0.0.1"]);
    let (theirs, their_leaf) = chain("attacker CA", &["127.0.0.1"]);
    let error = verify(
        CaPin::of_der(&ours),
        &their_leaf,
        std::slice::from_ref(&theirs),
        "127.0.0.1",
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains(&format!(
            "operator certificate does not match the pinned CA {}; got {}",
            CaPin::of_der(&ours),
            CaPin::of_der(&theirs)
        )),
        "{error}"
    );
}

#[test]
fn presenting_the_real_ca_next_to_a_foreign_leaf_is_refused() {
    // The CA certificate is public: an attacker can send it along, but
    // cannot sign a leaf with its key.
    let (ours, _) = chain("veil CA", &["127.0.0.1"]);
    let (_, their_leaf) = chain("veil CA", &["127.0.0.1"]);
    let error = verify(
        CaPin::of_der(&ours),
        &their_leaf,
        std::slice::from_ref(&ours),
        "127.0.0.1",
    )
    .unwrap_err();
    assert!(
        matches!(error, rustls::Error::InvalidCertificate(_)),
        "{error}"
    );
}

#[test]
fn a_leaf_for_another_name_is_refused() {
    let (ca, leaf) = chain("veil CA", &["127.0.0.1"]);
    let error = verify(
        CaPin::of_der(&ca),
        &leaf,
        std::slice::from_ref(&ca),
        "other.example",
    )
    .unwrap_err();
    assert!(error.to_string().contains("not valid for name"), "{error}");
}

#[test]
fn plain_http_is_allowed_to_loopback_only() {
    let plain = Trust::Plaintext;
    for url in [
        "http://127.0.0.1:7070",
        "http://127.5.6.7:1",
        "http://[::1]:7070",
        "http://localhost:7070",
    ] {
        assert!(check_url(url, &plain, false).unwrap(), "{url}");
    }
    for url in [
        "http://10.0.0.1:7070",
        "http://203.0.113.5",
        "http://localhost.attacker.example",
        "http://127.0.0.1.nip.io",
    ] {
        let error = check_url(url, &plain, false).unwrap_err();
        assert!(
            matches!(error, TrustError::PlaintextNotLoopback { .. }),
            "{url}: {error}"
        );
        assert!(
            error.to_string().contains("--insecure-plaintext"),
            "{error}"
        );
    }
    assert!(check_url("http://10.0.0.1:7070", &plain, true).unwrap());
}

#[test]
fn https_needs_a_pin_or_a_ca_file() {
    let error = check_url("https://10.0.0.1:7070", &Trust::Plaintext, false).unwrap_err();
    assert!(error.to_string().contains("--ca-cert-hash"), "{error}");
    let pinned = Trust::Pinned(CaPin::of_der(b"x"));
    assert!(!check_url("https://10.0.0.1:7070", &pinned, false).unwrap());
    let error = check_url("ftp://10.0.0.1", &pinned, false).unwrap_err();
    assert!(error.to_string().contains("https://"), "{error}");
}
