//! Reading an OpenAPI 3.1 document in the tests that hold a server to its
//! document: its operations ([`documented_operations`]), `$ref`s
//! ([`resolve`]) and parameter examples ([`example_of`]). The router side
//! is [`routes_in_source`](crate::source::routes_in_source).

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
}
