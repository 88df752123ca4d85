//! The CRDs committed under `manifests/crds/` match the Rust types.
//! `VEIL_UPDATE_CRDS=1 cargo test -p veil-crds --test crd_drift` (what
//! `make crds` runs) rewrites them instead.

use std::path::PathBuf;

#[test]
fn committed_crds_match_the_rust_types() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds");
    let update = std::env::var("VEIL_UPDATE_CRDS").is_ok_and(|v| v == "1");
    let mut stale = Vec::new();
    for (name, yaml) in veil_crds::crd::crd_files() {
        let path = dir.join(&name);
        if update {
            std::fs::create_dir_all(&dir).expect("create manifests/crds");
            std::fs::write(&path, &yaml).expect("write CRD");
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(committed) if committed == yaml => {}
            Ok(_) => stale.push(format!("{name} differs from the generated CRD")),
            Err(_) => stale.push(format!("{name} is missing")),
        }
    }
    assert!(
        stale.is_empty(),
        "manifests/crds/ is out of date with crds/src:\n  {}\nrun `make crds` (or VEIL_UPDATE_CRDS=1 cargo test -p veil-crds --test crd_drift) and commit the result",
        stale.join("\n  ")
    );
}
