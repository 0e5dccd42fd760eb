//! Instance-store bundle manifests: which S3 objects make up a bundle.

/// A manifest that cannot be used; nothing is deleted on its account.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ManifestError(pub String);

/// Parses a bundle manifest and returns the keys of its part files, which live in the
/// manifest's own prefix. Anything unexpected is an error, so that nothing is deleted
/// on a guess.
pub fn part_keys(manifest_key: &str, xml: &[u8]) -> Result<Vec<String>, ManifestError> {
    let bad = |m: String| ManifestError(m);
    let text = std::str::from_utf8(xml).map_err(|_| bad("manifest is not UTF-8".into()))?;
    let doc =
        roxmltree::Document::parse(text).map_err(|e| bad(format!("manifest is not XML: {e}")))?;
    let root = doc.root_element();
    if root.tag_name().name() != "manifest" {
        return Err(bad(format!(
            "manifest root element is <{}>, expected <manifest>",
            root.tag_name().name()
        )));
    }
    let parts = root
        .children()
        .find(|n| n.has_tag_name("image"))
        .and_then(|img| img.children().find(|n| n.has_tag_name("parts")))
        .ok_or_else(|| bad("manifest has no <image><parts>".into()))?;
    let prefix = match manifest_key.rfind('/') {
        Some(i) => &manifest_key[..=i],
        None => "",
    };
    // Only a `<name>.manifest.xml` object is a bundle's manifest: any other key's "parts"
    // would be whatever objects start with it.
    let stem = manifest_key[prefix.len()..]
        .strip_suffix(".manifest.xml")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            bad(format!(
                "{manifest_key:?} is not a bundle manifest's key (<name>.manifest.xml)"
            ))
        })?;
    let own = format!("{stem}.part.");
    let mut keys = Vec::new();
    for part in parts.children().filter(|n| n.has_tag_name("part")) {
        let name = part
            .children()
            .find(|n| n.has_tag_name("filename"))
            .and_then(|n| n.text())
            .map(str::trim)
            .ok_or_else(|| bad("a <part> has no <filename>".into()))?;
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(bad(format!(
                "part filename {name:?} is not a plain file name"
            )));
        }
        // A part is the bundle's own (`<name>.part.N` beside `<name>.manifest.xml`): a
        // manifest that lists another file of its prefix (another bundle's manifest or
        // parts, `<name>.v2.part.0` included) is refused, so that one bundle's job never
        // deletes another's files.
        if name.ends_with(".manifest.xml") || !name.starts_with(&own) {
            return Err(bad(format!(
                "part filename {name:?} is not one of this bundle's parts ({own}*)"
            )));
        }
        keys.push(format!("{prefix}{name}"));
    }
    if keys.is_empty() {
        return Err(bad("manifest lists no parts".into()));
    }
    if let Some(declared) = parts.attribute("count") {
        if declared.parse::<usize>().ok() != Some(keys.len()) {
            return Err(bad(format!(
                "manifest declares {declared} parts but lists {}",
                keys.len()
            )));
        }
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::part_keys;

    const MANIFEST: &str = r#"<?xml version="1.0" ?>
<manifest><version>2007-10-10</version><image><name>web</name>
<parts count="2">
  <part index="0"><filename>web.part.0</filename><digest algorithm="SHA1">aa</digest></part>
  <part index="1"><filename>web.part.1</filename><digest algorithm="SHA1">bb</digest></part>
</parts></image></manifest>"#;

    #[test]
    fn lists_exactly_the_parts_in_the_manifest_prefix() {
        assert_eq!(
            part_keys("bundles/web/web.manifest.xml", MANIFEST.as_bytes()).unwrap(),
            vec!["bundles/web/web.part.0", "bundles/web/web.part.1"]
        );
        assert_eq!(
            part_keys("web.manifest.xml", MANIFEST.as_bytes()).unwrap(),
            vec!["web.part.0", "web.part.1"]
        );
    }

    #[test]
    fn malformed_manifests_are_errors() {
        let cases = [
            ("not xml <", "manifest is not XML"),
            ("<other/>", "expected <manifest>"),
            ("<manifest><image/></manifest>", "no <image><parts>"),
            ("<manifest><image><parts/></image></manifest>", "lists no parts"),
            (
                "<manifest><image><parts><part><filename>../x</filename></part></parts></image></manifest>",
                "not a plain file name",
            ),
            (
                "<manifest><image><parts count=\"3\"><part><filename>m.part.0</filename></part></parts></image></manifest>",
                "declares 3 parts but lists 1",
            ),
            (
                "<manifest><image><parts><part index=\"0\"/></parts></image></manifest>",
                "has no <filename>",
            ),
            (
                "<manifest><image><parts><part><filename>prod.part.0</filename></part></parts></image></manifest>",
                "not one of this bundle's parts",
            ),
            (
                "<manifest><image><parts><part><filename>m.x.manifest.xml</filename></part></parts></image></manifest>",
                "not one of this bundle's parts",
            ),
        ];
        for (xml, expected) in cases {
            let err = part_keys("b/m.manifest.xml", xml.as_bytes()).unwrap_err();
            assert!(err.to_string().contains(expected), "{xml}: {err}");
        }
    }
}
