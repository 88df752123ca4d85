use std::os::unix::fs::PermissionsExt;

use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{ServerName, UnixTime};
use veil_agent::trust::PinnedCa;

use super::*;

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|n| (*n).to_owned()).collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Verifies the served chain for `host` against the pin of `ca.crt`.
fn verifies_for(files: &ServingFiles, host: &str) -> Result<(), rustls::Error> {
    let chain = crate::tls::read_certs(&files.cert).unwrap();
    let ca = crate::tls::read_certs(files.ca.as_ref().unwrap()).unwrap();
    let name = ServerName::try_from(host.to_owned()).unwrap();
    PinnedCa::new(CaPin::of_der(&ca[0]))
        .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
        .map(|_| ())
}

#[test]
fn first_start_makes_a_private_ca_and_a_serving_certificate_it_signed() {
    let dir = tempfile::tempdir().unwrap();
    let files = ensure(dir.path(), &names(&["127.0.0.1", "veil.example"]), false).unwrap();
    assert_eq!(mode(&tls_dir(dir.path())), 0o700);
    for file in ["ca.crt", "ca.key", "tls.crt", "tls.key", "tls.meta"] {
        assert_eq!(mode(&tls_dir(dir.path()).join(file)), 0o600, "{file}");
    }
    verifies_for(&files, "127.0.0.1").unwrap();
    verifies_for(&files, "veil.example").unwrap();
    let error = verifies_for(&files, "other.example").unwrap_err();
    assert!(error.to_string().contains("not valid for name"), "{error}");
}

#[test]
fn later_starts_reuse_both_and_new_names_renew_only_the_serving_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_dir(dir.path());
    let first = names(&["127.0.0.1"]);
    ensure(dir.path(), &first, false).unwrap();
    let ca = std::fs::read(tls.join("ca.crt")).unwrap();
    let cert = std::fs::read(tls.join("tls.crt")).unwrap();

    ensure(dir.path(), &first, false).unwrap();
    assert_eq!(std::fs::read(tls.join("ca.crt")).unwrap(), ca);
    assert_eq!(std::fs::read(tls.join("tls.crt")).unwrap(), cert);

    let files = ensure(dir.path(), &names(&["127.0.0.1", "new.example"]), false).unwrap();
    assert_eq!(
        std::fs::read(tls.join("ca.crt")).unwrap(),
        ca,
        "the CA stays"
    );
    assert_ne!(std::fs::read(tls.join("tls.crt")).unwrap(), cert);
    verifies_for(&files, "new.example").unwrap();
}

#[test]
fn rotating_the_ca_makes_a_new_ca_and_re_signs_the_serving_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_dir(dir.path());
    ensure(dir.path(), &names(&["127.0.0.1"]), false).unwrap();
    let ca = std::fs::read(tls.join("ca.crt")).unwrap();
    let files = ensure(dir.path(), &names(&["127.0.0.1"]), true).unwrap();
    assert_ne!(std::fs::read(tls.join("ca.crt")).unwrap(), ca);
    verifies_for(&files, "127.0.0.1").unwrap();
}

#[test]
fn subject_names_come_from_listen_advertise_and_host_name() {
    let advertise = reqwest::Url::parse("https://veil.example:7443/").unwrap();
    let listed = subject_names(
        "10.0.0.5:7070".parse().unwrap(),
        Some(&advertise),
        Some("edge-host\n"),
        &names(&["203.0.113.9", "127.0.0.1"]),
    );
    assert_eq!(
        listed,
        names(&[
            "10.0.0.5",
            "127.0.0.1",
            "203.0.113.9",
            "::1",
            "edge-host",
            "localhost",
            "veil.example"
        ])
    );
    let unspecified = subject_names("0.0.0.0:7070".parse().unwrap(), None, None, &[]);
    assert_eq!(unspecified, names(&["127.0.0.1", "::1", "localhost"]));
}
