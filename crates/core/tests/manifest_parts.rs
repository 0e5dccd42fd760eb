//! A bundle job deletes the manifest and exactly its own parts (`<name>.part.*` beside
//! `<name>.manifest.xml`); a manifest listing another bundle's files of the same prefix
//! is refused.

use ami_sweeper_core::manifest::part_keys;

fn manifest(parts: &[&str]) -> Vec<u8> {
    let list: String = parts
        .iter()
        .enumerate()
        .map(|(i, p)| format!(r#"<part index="{i}"><filename>{p}</filename></part>"#))
        .collect();
    format!(
        r#"<manifest><image><parts count="{}">{list}</parts></image></manifest>"#,
        parts.len()
    )
    .into_bytes()
}

/// `app.manifest.xml` and `app.v2.manifest.xml` share a prefix; `app`'s manifest may not
/// name `app.v2`'s parts (they start with `app.` but are not `app.part.*`), nor any other
/// file that merely starts with the bundle's name.
#[test]
fn a_manifest_may_not_name_a_sibling_bundles_parts() {
    assert_eq!(
        part_keys(
            "b/app.manifest.xml",
            &manifest(&["app.part.0", "app.part.1"])
        )
        .unwrap(),
        vec!["b/app.part.0".to_string(), "b/app.part.1".to_string()]
    );
    for other in ["app.v2.part.0", "app.tar.gz", "app.v2.manifest.xml.bak"] {
        let err = part_keys("b/app.manifest.xml", &manifest(&["app.part.0", other]));
        assert!(
            err.is_err(),
            "{other} was accepted as a part of app: {err:?}"
        );
    }
}

/// A job's key must be a manifest's: any other object is not a bundle (its stem would be
/// the whole key, and `<key>.*` objects would read as its parts).
#[test]
fn only_a_manifest_key_names_a_bundle() {
    let err = part_keys("b/data", &manifest(&["data.part.0"]));
    assert!(err.is_err(), "{err:?}");
}
