use super::*;

#[test]
fn every_schema_is_structural_and_documented() {
    for crd in crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        for version in &crd.spec.versions {
            let schema = version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .expect("schema");
            let violations = check_structural(schema);
            assert!(violations.is_empty(), "{name}: {violations:#?}");
        }
    }
}

#[test]
fn crds_carry_names_scope_and_columns() {
    for kind in Kind::VEIL {
        let crd = crd(kind).expect("veil kind");
        assert_eq!(crd.spec.group, crate::GROUP);
        assert_eq!(crd.spec.names.plural, kind.plural());
        assert_eq!(crd.spec.names.kind, kind.as_str());
        assert_eq!(
            crd.spec.names.short_names.clone().unwrap_or_default(),
            kind.short_names()
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
        );
        assert_eq!(
            crd.spec.names.categories.clone().unwrap_or_default(),
            vec!["veil".to_string()]
        );
        let scope = if kind.namespaced() {
            "Namespaced"
        } else {
            "Cluster"
        };
        assert_eq!(crd.spec.scope, scope, "{kind}");
        let version = &crd.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let cols = version
            .additional_printer_columns
            .clone()
            .unwrap_or_default();
        assert_eq!(cols.len(), kind.printer_columns().len());
    }
}

#[test]
fn yaml_has_one_document_per_kind() {
    let yaml = crds_yaml();
    assert_eq!(yaml.matches("kind: CustomResourceDefinition").count(), 7);
    let files = crd_files();
    assert!(files.iter().any(|(f, _)| f == "vlesskeys.veil.dev.yaml"));
}
