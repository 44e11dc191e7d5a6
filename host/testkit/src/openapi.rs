//! Reading an OpenAPI 3.1 document in the tests that hold a server to its
//! document: its operations ([`documented_operations`]), `$ref`s
//! ([`resolve`]) and parameter examples ([`example_of`]), and whether a
//! JSON value fits a schema of the document ([`conforms`], the subset of
//! JSON Schema the documents use). The router side is
//! [`routes_in_source`](crate::source::routes_in_source).

use std::collections::BTreeSet;

use serde_json::Value;

/// The operations a path item may hold, lowercase as the document spells them.
pub const METHODS: &[&str] = &["get", "head", "put", "post", "patch", "delete", "options"];

/// (path, METHOD) of every operation in the document.
pub fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(*method).is_some() {
                out.insert((path.clone(), method.to_uppercase()));
            }
        }
    }
    out
}

/// `value`, or what its `$ref` points to inside `doc`; panics on a dangling
/// reference.
pub fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(pointer) => doc.pointer(pointer.trim_start_matches('#')).unwrap_or_else(|| panic!("dangling $ref {pointer}")),
        None => value,
    }
}

/// The example of the parameter `name` among `params` (as text); panics
/// when it is not declared or has no example.
pub fn example_of(doc: &Value, params: &[&Value], name: &str) -> String {
    for p in params {
        let p = resolve(doc, p);
        if p["name"] == name {
            return match &p["example"] {
                Value::String(s) => s.clone(),
                Value::Null => panic!("parameter {name} has no example"),
                other => other.to_string(),
            };
        }
    }
    panic!("path parameter {name} is not declared")
}

/// Whether `value` fits `schema` (a schema of `doc`, `$ref`s resolved in
/// it): `Err` names the first JSON pointer that does not. The subset the
/// documents use: `type` (one or a list), `const`, `enum`, `required`,
/// `properties`, `additionalProperties` (false or a schema), `items`,
/// `prefixItems`, `minItems`/`maxItems`, `oneOf` (exactly one), `anyOf`,
/// `minimum`/`maximum`/`exclusiveMinimum`, `minLength`/`maxLength`. Other
/// keywords (`pattern`, `format`, annotations) are not checked.
pub fn conforms(doc: &Value, schema: &Value, value: &Value) -> Result<(), String> {
    check(doc, schema, value, "")
}

fn type_matches(name: &str, value: &Value) -> bool {
    match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "number" => value.is_number(),
        "integer" => value.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => false,
    }
}

fn check(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    let fail = |why: String| Err(format!("{}: {why} (value {value})", if at.is_empty() { "/" } else { at }));
    match &schema["type"] {
        Value::String(t) if !type_matches(t, value) => return fail(format!("not of type {t}")),
        Value::Array(ts) if !ts.iter().any(|t| t.as_str().is_some_and(|t| type_matches(t, value))) => {
            return fail(format!("not of the types {}", schema["type"]));
        }
        _ => {}
    }
    if let Some(c) = schema.get("const")
        && c != value
    {
        return fail(format!("not the const {c}"));
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(value)
    {
        return fail(format!("not one of {}", schema["enum"]));
    }
    if let Some(n) = value.as_f64() {
        if schema["minimum"].as_f64().is_some_and(|m| n < m) || schema["exclusiveMinimum"].as_f64().is_some_and(|m| n <= m) {
            return fail("below the minimum".into());
        }
        if schema["maximum"].as_f64().is_some_and(|m| n > m) {
            return fail("above the maximum".into());
        }
    }
    if let Some(text) = value.as_str() {
        let chars = text.chars().count() as u64;
        if schema["minLength"].as_u64().is_some_and(|m| chars < m) || schema["maxLength"].as_u64().is_some_and(|m| chars > m) {
            return fail("length outside minLength/maxLength".into());
        }
    }
    if let Some(object) = value.as_object() {
        for name in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            if !object.contains_key(name) {
                return fail(format!("required property {name:?} missing"));
            }
        }
        let properties = schema["properties"].as_object();
        for (name, v) in object {
            let here = format!("{at}/{name}");
            match properties.and_then(|p| p.get(name)) {
                Some(sub) => check(doc, sub, v, &here)?,
                None => match &schema["additionalProperties"] {
                    Value::Bool(false) => return fail(format!("property {name:?} is not in the schema")),
                    sub @ Value::Object(_) => check(doc, sub, v, &here)?,
                    _ => {}
                },
            }
        }
    }
    if let Some(items) = value.as_array() {
        let len = items.len() as u64;
        if schema["minItems"].as_u64().is_some_and(|m| len < m) || schema["maxItems"].as_u64().is_some_and(|m| len > m) {
            return fail("item count outside minItems/maxItems".into());
        }
        let prefix = schema["prefixItems"].as_array().map_or(&[][..], Vec::as_slice);
        for (i, item) in items.iter().enumerate() {
            let here = format!("{at}/{i}");
            match prefix.get(i) {
                Some(sub) => check(doc, sub, item, &here)?,
                None if schema.get("items").is_some() => check(doc, &schema["items"], item, &here)?,
                None => {}
            }
        }
    }
    if let Some(branches) = schema["oneOf"].as_array() {
        let fits = branches.iter().filter(|b| check(doc, b, value, at).is_ok()).count();
        if fits != 1 {
            return fail(format!("fits {fits} branches of oneOf, not exactly one"));
        }
    }
    if let Some(branches) = schema["anyOf"].as_array()
        && !branches.iter().any(|b| check(doc, b, value, at).is_ok())
    {
        return fail("fits no branch of anyOf".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn operations_refs_and_examples() {
        let doc = json!({
            "paths": {"/a": {"get": {}, "put": {}, "summary": "x"}, "/b/{k}": {"delete": {}}},
            "components": {"parameters": {"K": {"name": "k", "in": "path", "example": 7}}}
        });
        let ops: Vec<_> = documented_operations(&doc).into_iter().collect();
        assert_eq!(ops, [("/a".into(), "GET".into()), ("/a".into(), "PUT".into()), ("/b/{k}".into(), "DELETE".into())]);
        let r = json!({"$ref": "#/components/parameters/K"});
        assert_eq!(resolve(&doc, &r)["name"], "k");
        assert_eq!(example_of(&doc, &[&r], "k"), "7");
    }

    #[test]
    fn conforms_checks_the_documents_subset_of_json_schema() {
        let doc = json!({"components": {"schemas": {
            "Leader": {"type": ["string", "null"]},
            "State": {"type": "object", "required": ["epoch", "leader"], "additionalProperties": false, "properties": {
                "epoch": {"type": "integer", "minimum": 0},
                "leader": {"$ref": "#/components/schemas/Leader"},
                "kind": {"enum": ["a", "b"]},
                "tags": {"type": "array", "maxItems": 2, "items": {"type": "string", "maxLength": 3}},
                "one": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}}}}});
        let schema = json!({"$ref": "#/components/schemas/State"});
        let ok = |v: Value| conforms(&doc, &schema, &v);
        assert_eq!(ok(json!({"epoch": 3, "leader": null, "kind": "a", "tags": ["x"], "one": 1})), Ok(()));
        assert_eq!(ok(json!({"epoch": 3, "leader": "http://x"})), Ok(()));
        for (bad, why) in [
            (json!({"epoch": 3}), "required property \"leader\""),
            (json!({"epoch": -1, "leader": null}), "/epoch: below the minimum"),
            (json!({"epoch": 1.5, "leader": null}), "/epoch: not of type integer"),
            (json!({"epoch": 1, "leader": 7}), "/leader: not of the types"),
            (json!({"epoch": 1, "leader": null, "extra": 1}), "property \"extra\" is not in the schema"),
            (json!({"epoch": 1, "leader": null, "kind": "c"}), "/kind: not one of"),
            (json!({"epoch": 1, "leader": null, "tags": ["a", "b", "c"]}), "/tags: item count"),
            (json!({"epoch": 1, "leader": null, "tags": ["abcd"]}), "/tags/0: length"),
            (json!({"epoch": 1, "leader": null, "one": true}), "/one: fits 0 branches"),
        ] {
            let err = ok(bad.clone()).expect_err(&bad.to_string());
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
