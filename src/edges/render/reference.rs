//! The policy reference as markdown, generated from the JSON Schema `ami-sweeper schema`
//! prints (`ami-sweeper schema --format markdown`): one table per object (field, type,
//! default, description) and per set of values, in the order the document meets them.
//! `docs/policy.md` embeds it; a test fails when the embedded copy is stale.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde_json::Value;

/// The reference of the schema `schema` (the policy's, as `Policy::json_schema` makes it).
pub fn policy_reference(schema: &Value) -> String {
    let defs = schema.get("$defs").cloned().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "### The policy document\n");
    object_table(&mut out, schema);
    if let Some(alternatives) = schema.get("oneOf").and_then(Value::as_array) {
        let names: Vec<String> = alternatives
            .iter()
            .filter_map(|a| a.get("required")?.as_array()?.first()?.as_str())
            .map(|k| format!("`{k}`"))
            .collect();
        let _ = writeln!(out, "Exactly one of {} is given.\n", names.join(" or "));
    }
    // Each definition once, in the order the document first names it.
    let mut order = Vec::new();
    refs_in(schema, &mut order);
    let mut seen = BTreeSet::new();
    let mut i = 0;
    while i < order.len() {
        let name = order[i].clone();
        i += 1;
        if !seen.insert(name.clone()) {
            continue;
        }
        let Some(def) = defs.get(&name) else { continue };
        let _ = writeln!(out, "### {name}\n");
        let _ = writeln!(out, "{}\n", text(def));
        definition(&mut out, def);
        refs_in(def, &mut order);
    }
    out
}

/// One definition's body: its fields, its values or its forms.
fn definition(out: &mut String, def: &Value) {
    if def.get("properties").is_some() {
        object_table(out, def);
    } else if let Some(variants) = def.get("oneOf").and_then(Value::as_array) {
        if variants.iter().all(|v| v.get("const").is_some()) {
            let _ = writeln!(out, "| value | meaning |\n|---|---|");
            for v in variants {
                let _ = writeln!(out, "| `{}` | {} |", v["const"], cell(&text(v)));
            }
        } else {
            let _ = writeln!(out, "| form | meaning |\n|---|---|");
            for v in variants {
                let _ = writeln!(out, "| {} | {} |", form(v), cell(&text(v)));
            }
        }
        out.push('\n');
    } else if let Some(variants) = def.get("anyOf").and_then(Value::as_array) {
        let _ = writeln!(out, "| form | meaning |\n|---|---|");
        for v in variants {
            let _ = writeln!(out, "| {} | {} |", form(v), cell(&text(v)));
        }
        out.push('\n');
    } else {
        let _ = writeln!(out, "Type: {}.\n", type_of(def));
    }
}

/// The field table of an object schema.
fn object_table(out: &mut String, obj: &Value) {
    let Some(props) = obj.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: BTreeSet<&str> = obj
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "| field | type | default | description |\n|---|---|---|---|"
    );
    // Sorted here: the map's own order depends on serde_json's features.
    let mut props: Vec<(&String, &Value)> = props.iter().collect();
    props.sort_by_key(|(name, _)| *name);
    for (name, p) in props {
        let default = match p.get("default") {
            Some(d) => format!("`{}`", cell(&sorted_json(d))),
            None if required.contains(name.as_str()) => "**required**".to_string(),
            None => "absent".to_string(),
        };
        let _ = writeln!(
            out,
            "| `{name}` | {} | {default} | {} |",
            type_of(p),
            cell(&text(p))
        );
    }
    out.push('\n');
}

/// `{"all": [Condition]}`: a one-key object form, or the type of any other form.
fn form(v: &Value) -> String {
    match v.get("properties").and_then(Value::as_object) {
        Some(props) if props.len() == 1 => {
            let (key, inner) = props.iter().next().expect("one property");
            format!("`{{\"{key}\": …}}` ({})", type_of(inner))
        }
        _ => type_of(v),
    }
}

/// A schema's type in words, with links to the definitions it names.
fn type_of(s: &Value) -> String {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        return format!("[{name}](#{})", name.to_lowercase());
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(vs) = s.get(key).and_then(Value::as_array) {
            let parts: Vec<String> = vs
                .iter()
                .filter(|v| v.get("type") != Some(&Value::from("null")))
                .map(|v| match v.get("const") {
                    Some(c) => format!("`{c}`"),
                    None => type_of(v),
                })
                .collect();
            return parts.join(" or ");
        }
    }
    let ty = match s.get("type") {
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("any"),
        Some(Value::String(t)) => t.as_str(),
        _ => "any",
    };
    match ty {
        "array" => format!("list of {}", s.get("items").map_or("any".into(), type_of)),
        "object" => match s.get("additionalProperties") {
            Some(v) if v.is_object() => format!("map of string to {}", type_of(v)),
            _ => "object".to_string(),
        },
        "integer" | "number" => {
            let bounds: Vec<String> = [
                ("minimum", "≥"),
                ("exclusiveMinimum", ">"),
                ("maximum", "≤"),
                ("exclusiveMaximum", "<"),
            ]
            .iter()
            .filter_map(|(key, sign)| s.get(*key).map(|v| format!("{sign} {v}")))
            .collect();
            match bounds.is_empty() {
                true => ty.to_string(),
                false => format!("{ty} {}", bounds.join(", ")),
            }
        }
        other => other.to_string(),
    }
}

/// A schema's description on one line, rustdoc's intra-doc links (`` [`Policy`] ``) as
/// plain code.
fn text(s: &Value) -> String {
    s.get("description")
        .and_then(Value::as_str)
        .unwrap_or("")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace("[`", "`")
        .replace("`]", "`")
}

/// Compact JSON with every object's keys sorted, so the text does not depend on
/// serde_json's `preserve_order` feature (which dev-dependencies may turn on).
fn sorted_json(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_by_key(|(k, _)| *k);
            let parts: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), sorted_json(v)))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(vs) => {
            let parts: Vec<String> = vs.iter().map(sorted_json).collect();
            format!("[{}]", parts.join(","))
        }
        other => other.to_string(),
    }
}

/// Text safe in a table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The definitions `s` names, in document order (appended to `out`).
fn refs_in(s: &Value, out: &mut Vec<String>) {
    match s {
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_by_key(|(k, _)| *k);
            for (k, v) in entries {
                if k == "$defs" {
                    continue;
                }
                match (k.as_str(), v.as_str()) {
                    ("$ref", Some(r)) => out.push(r.rsplit('/').next().unwrap_or(r).to_string()),
                    _ => refs_in(v, out),
                }
            }
        }
        Value::Array(vs) => vs.iter().for_each(|v| refs_in(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_field_of_the_schema_has_a_row_with_its_type_and_default() {
        let schema = crate::Policy::json_schema();
        let doc = super::policy_reference(&schema);
        for (name, p) in schema["properties"].as_object().unwrap() {
            let row = doc
                .lines()
                .find(|l| l.starts_with(&format!("| `{name}` |")))
                .unwrap_or_else(|| panic!("no row for {name}"));
            if let Some(d) = p.get("default") {
                assert!(
                    row.contains(&format!("`{}`", super::sorted_json(d))),
                    "{row}"
                );
            }
        }
        for def in schema["$defs"].as_object().unwrap().keys() {
            assert!(
                doc.contains(&format!("### {def}\n")),
                "{def} has no section"
            );
        }
        assert!(
            doc.contains("| `min_age_days` | integer ≥ 0 | **required** |"),
            "{doc}"
        );
        assert!(doc.contains("Exactly one of `retention` or `rules` is given."));
        assert!(doc.contains("| `\"keep_if_used\"` |"), "{doc}");
    }
}
