//! Reading a router's routes out of its Rust source, so a test can compare
//! them with a hand-kept list or an OpenAPI document without running the
//! router: [`routes_in_source`].

use std::collections::BTreeSet;

/// Skips a string literal starting at `chars[i] == '"'`; returns the index
/// after it.
fn skip_string(chars: &[char], mut i: usize) -> usize {
    i += 1;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// Every `.route(PATH, METHODS)` call inside `fn <function>(` of `source`:
/// PATH is a string literal or a constant (looked up in `constants`),
/// METHODS are the method-router calls (`get(..)`, `.put(..)`,
/// `axum::routing::delete(..)`, `any(..)`) at the top level of the second
/// argument.
pub fn routes_in_source(source: &str, function: &str, constants: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    let start = source.find(&format!("fn {function}(")).unwrap_or_else(|| panic!("no fn {function} in the source"));
    let end = source[start..].find("\n}\n").map_or(source.len(), |e| start + e);
    let chars: Vec<char> = source[start..end].chars().collect();
    let mut routes = BTreeSet::new();
    let mut i = 0;
    let pattern: Vec<char> = ".route(".chars().collect();
    while i + pattern.len() <= chars.len() {
        if chars[i..i + pattern.len()] != pattern[..] {
            if chars[i] == '"' {
                i = skip_string(&chars, i);
            } else {
                i += 1;
            }
            continue;
        }
        i += pattern.len();
        // First argument.
        while chars[i].is_whitespace() {
            i += 1;
        }
        let path = if chars[i] == '"' {
            let after = skip_string(&chars, i);
            let literal: String = chars[i + 1..after - 1].iter().collect();
            i = after;
            literal
        } else {
            let from = i;
            while chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == ':' {
                i += 1;
            }
            let name: String = chars[from..i].iter().collect();
            constants
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("route path constant {name} is not known to this test"))
                .1
                .to_string()
        };
        while chars[i] != ',' {
            i += 1;
        }
        i += 1;
        // Second argument, up to the `)` closing `.route(`.
        let mut depth = 0usize;
        let mut ident = String::new();
        let mut methods = Vec::new();
        loop {
            let c = chars[i];
            match c {
                '"' => {
                    i = skip_string(&chars, i);
                    ident.clear();
                    continue;
                }
                '(' | '{' | '[' => {
                    if depth == 0 {
                        let method = ident.rsplit("::").next().unwrap_or("").to_uppercase();
                        if ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "ANY"].contains(&method.as_str()) {
                            methods.push(method);
                        }
                    }
                    depth += 1;
                }
                ')' | '}' | ']' => {
                    if depth == 0 {
                        break;
                    }
                    depth -= 1;
                }
                _ => {}
            }
            if c.is_alphanumeric() || c == '_' || c == ':' {
                ident.push(c);
            } else {
                ident.clear();
            }
            i += 1;
        }
        assert!(!methods.is_empty(), "route {path} has no method in the source");
        for method in methods {
            routes.insert((path.clone(), method));
        }
    }
    routes
}
