//! The deployment file read by `shardgate serve` and `shardgate config
//! check`: `version = 1` and any of the `[meta]`, `[node]` and `[proxy]`
//! tables, each owned by its role's crate.
//!
//! Strict: unknown keys, wrong types and invalid values are errors naming the
//! file, line and key path (`dev.toml:7: node.max_value_size: must be ...`).
//! Every setting can be overridden by an environment variable
//! `SHARDGATE_<TABLE>__<KEY>` (double underscore between levels, e.g.
//! `SHARDGATE_NODE__MEMORY_LIMIT=64MiB`); the value is read as a TOML value
//! when it parses as one (numbers, booleans, arrays), as a string otherwise.

use serde::{Deserialize, Serialize};
use shardgate_meta::MetaConfig;
use shardgate_node::NodeConfig;
use shardgate_proxy::ProxyConfig;
use std::path::Path;

/// The config format this binary reads.
pub const CONFIG_VERSION: u32 = 1;
/// Prefix of the environment overrides.
pub const ENV_PREFIX: &str = "SHARDGATE_";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    /// Format version; must be 1.
    pub version: u32,
    pub meta: Option<MetaConfig>,
    pub node: Option<NodeConfig>,
    pub proxy: Option<ProxyConfig>,
}

impl DeploymentConfig {
    /// The roles this file enables, in start order.
    pub fn roles(&self) -> Vec<&'static str> {
        let mut roles = vec![];
        if self.meta.is_some() {
            roles.push("meta");
        }
        if self.node.is_some() {
            roles.push("node");
        }
        if self.proxy.is_some() {
            roles.push("proxy");
        }
        roles
    }
}

/// A config file that cannot be used. Display is one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{origin}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid { origin: String, line: Option<usize>, message: String },
}

/// Reads, overrides from the environment and validates a config file.
pub fn load(path: &Path) -> Result<DeploymentConfig, ConfigFileError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigFileError::Read { path: path.display().to_string(), reason: e.to_string() })?;
    parse(&text, &path.display().to_string(), std::env::vars())
}

/// The config from `SHARDGATE_<TABLE>__<KEY>` variables alone (no file):
/// `version = 1` plus the overrides, validated like a file.
pub fn load_env() -> Result<DeploymentConfig, ConfigFileError> {
    parse(&format!("version = {CONFIG_VERSION}\n"), "environment (SHARDGATE_* variables)", std::env::vars())
}

/// A deployment file when one is given, else the environment alone.
pub fn load_or_env(path: Option<&Path>) -> Result<DeploymentConfig, ConfigFileError> {
    match path {
        Some(p) => load(p),
        None => load_env(),
    }
}

/// Parses `text` (named `origin` in errors), applies `SHARDGATE_*__*`
/// overrides from `env`, and validates every role's table.
pub fn parse(text: &str, origin: &str, env: impl IntoIterator<Item = (String, String)>) -> Result<DeploymentConfig, ConfigFileError> {
    // One line, whatever the file contained: quoted values may hold line breaks.
    let invalid = |line: Option<usize>, message: String| ConfigFileError::Invalid {
        origin: origin.to_string(),
        line,
        message: message.trim_end().replace('\r', "\\r").replace('\n', "\\n"),
    };
    let line_of_offset = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let de_error = |e: toml::de::Error| {
        let message = e.message().trim_end().to_string();
        invalid(e.span().map(|s| line_of_offset(s.start)), message)
    };

    // serde would take a struct from an array, field by field: refuse that
    // where the file must hold tables.
    if let Ok(doc) = toml::de::DeTable::parse(text) {
        let doc = doc.get_ref();
        for role in ["meta", "node", "proxy"] {
            if let Some((k, v)) = doc.iter().find(|(k, _)| k.get_ref().as_ref() == role) {
                let members = match v.get_ref() {
                    toml::de::DeValue::Table(t) => t.iter().find(|(k, _)| k.get_ref().as_ref() == "members").map(|(_, v)| v),
                    other => {
                        let found = kind_of(other);
                        return Err(invalid(
                            Some(line_of_offset(k.span().start)),
                            format!("{role}: expected a table ([{role}]), found {found}"),
                        ));
                    }
                };
                if let Some(toml::de::DeValue::Array(items)) = members.map(|m| m.get_ref()) {
                    for (i, item) in items.iter().enumerate() {
                        if !matches!(item.get_ref(), toml::de::DeValue::Table(_)) {
                            let message = format!(
                                "{role}.members[{i}]: expected a table ({{ id = ..., addr = ... }}), found {}",
                                kind_of(item.get_ref())
                            );
                            return Err(invalid(Some(line_of_offset(item.span().start)), message));
                        }
                    }
                }
            }
        }
    }

    let overrides = env_overrides(env);
    let config: DeploymentConfig = if overrides.is_empty() && !meta_id_from_members(text) {
        toml::from_str(text).map_err(de_error)?
    } else {
        // Check the file on its own first, so file errors keep their lines.
        toml::from_str::<DeploymentConfig>(text).map_err(de_error)?;
        let mut table: toml::Table = toml::from_str(text).map_err(de_error)?;
        for (var, path, value) in &overrides {
            set_path(&mut table, path, value.clone()).map_err(|m| invalid(None, format!("{var}: {m}")))?;
        }
        set_meta_id_from_members(&mut table).map_err(|m| invalid(line_of_key(text, "meta").map(line_of_offset), m))?;
        let names: Vec<&str> = overrides.iter().map(|(v, _, _)| v.as_str()).collect();
        DeploymentConfig::deserialize(table).map_err(|e| {
            let message = e.message().trim_end().to_string();
            if names.is_empty() {
                invalid(None, message)
            } else {
                invalid(None, format!("{message} (after environment overrides {})", names.join(", ")))
            }
        })?
    };

    let key_error = |key: &str, message: String| {
        let line = line_of_key(text, key).map(line_of_offset);
        invalid(line, format!("{key}: {message}"))
    };
    if config.version != CONFIG_VERSION {
        return Err(key_error(
            "version",
            format!("unsupported config version {}; this shardgate reads version {CONFIG_VERSION}", config.version),
        ));
    }
    if let Some(meta) = &config.meta {
        meta.validate().map_err(|e| key_error(&in_table("meta", &e.key), e.message.clone()))?;
    }
    if let Some(node) = &config.node {
        node.validate().map_err(|e| key_error(&e.key, e.message.clone()))?;
    }
    if let Some(proxy) = &config.proxy {
        proxy.validate().map_err(|e| key_error(&in_table("proxy", &e.key), e.message.clone()))?;
    }
    Ok(config)
}

/// Whether the file's `[meta]` leaves `id` out but gives `advertise` and
/// `members`: the id is then the one `members` lists for that address.
fn meta_id_from_members(text: &str) -> bool {
    let Ok(table) = toml::from_str::<toml::Table>(text) else { return false };
    table.get("meta").and_then(|m| m.as_table()).is_some_and(|m| !m.contains_key("id") && m.contains_key("advertise"))
}

/// `[meta]` without `id` (after the environment) takes the id that
/// `members` gives its `advertise` address: a StatefulSet's pods share one
/// file and differ only in their address (`http://meta-0.meta:7101` is
/// member 1). Without `advertise` the default id (1) stands.
fn set_meta_id_from_members(table: &mut toml::Table) -> Result<(), String> {
    let Some(meta) = table.get_mut("meta").and_then(|m| m.as_table_mut()) else { return Ok(()) };
    if meta.contains_key("id") {
        return Ok(());
    }
    let Some(advertise) = meta.get("advertise").and_then(|a| a.as_str()).map(str::to_owned) else { return Ok(()) };
    let Some(members) = meta.get("members").and_then(|m| m.as_array()) else {
        return Err(format!("meta.id: not set, and without members the id of advertise {advertise:?} cannot be found; set meta.id"));
    };
    let ids: Vec<i64> = members
        .iter()
        .filter_map(|m| m.as_table())
        .filter(|m| m.get("addr").and_then(|a| a.as_str()) == Some(advertise.as_str()))
        .filter_map(|m| m.get("id").and_then(|i| i.as_integer()))
        .collect();
    match ids.as_slice() {
        [id] => {
            meta.insert("id".to_string(), toml::Value::Integer(*id));
            Ok(())
        }
        [] => Err(format!("meta.id: not set, and members lists no member at advertise {advertise:?}; set meta.id or list it")),
        _ => Err(format!("meta.id: not set, and members lists advertise {advertise:?} more than once")),
    }
}

fn kind_of(v: &toml::de::DeValue<'_>) -> &'static str {
    match v {
        toml::de::DeValue::String(_) => "a string",
        toml::de::DeValue::Integer(_) => "an integer",
        toml::de::DeValue::Float(_) => "a float",
        toml::de::DeValue::Boolean(_) => "a boolean",
        toml::de::DeValue::Datetime(_) => "a datetime",
        toml::de::DeValue::Array(_) => "an array",
        toml::de::DeValue::Table(_) => "a table",
    }
}

/// A role's key path with its table in front: `id` -> `meta.id`.
fn in_table(table: &str, key: &str) -> String {
    if key.starts_with(&format!("{table}.")) { key.to_string() } else { format!("{table}.{key}") }
}

/// `SHARDGATE_NODE__MEMORY_LIMIT=64MiB` -> (var, ["node", "memory_limit"], value).
fn env_overrides(env: impl IntoIterator<Item = (String, String)>) -> Vec<(String, Vec<String>, toml::Value)> {
    let mut out: Vec<_> = env
        .into_iter()
        .filter_map(|(var, raw)| {
            let rest = var.strip_prefix(ENV_PREFIX)?;
            if !rest.contains("__") {
                return None; // not a config override (e.g. SHARDGATE_META for ctl)
            }
            let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
            let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(raw));
            Some((var, path, value))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty key path")?;
    let mut here = table;
    for p in parents {
        here = here
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("{p} is not a table"))?;
    }
    here.insert(last.clone(), value);
    Ok(())
}

/// Byte offset of the key `a.b.c` in the document, for error lines.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        // Array indices like `members[1]` are reduced to their table.
        let name = part.split('[').next().unwrap_or(part);
        let (k, v) = table.iter().find(|(k, _)| k.get_ref().as_ref() == name)?;
        if i + 1 == parts.len() {
            return Some(k.span().start);
        }
        match v.get_ref() {
            toml::de::DeValue::Table(t) => table = t,
            _ => return Some(k.span().start),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<DeploymentConfig, ConfigFileError> {
        parse(text, "test.toml", Vec::new())
    }

    #[test]
    fn version_must_be_one() {
        let e = parse_str("version = 2\n[node]\n").unwrap_err().to_string();
        assert_eq!(e, "test.toml:1: version: unsupported config version 2; this shardgate reads version 1");
    }

    #[test]
    fn unknown_keys_name_the_line() {
        let e = parse_str("version = 1\n\n[node]\nmemory_limt = \"1MiB\"\n").unwrap_err().to_string();
        assert!(e.starts_with("test.toml:4: unknown field `memory_limt`"), "{e}");
    }

    #[test]
    fn wrong_types_name_the_line() {
        let e = parse_str("version = 1\n[node]\nmax_batch_keys = \"many\"\n").unwrap_err().to_string();
        assert!(e.starts_with("test.toml:3:"), "{e}");
    }

    #[test]
    fn invalid_values_name_key_path_and_line() {
        let e = parse_str("version = 1\n[node]\nlisten = \"127.0.0.1:0\"\n\nmax_key_size = 0\n").unwrap_err().to_string();
        assert!(e.starts_with("test.toml:5: node.max_key_size: must be between 1 and 65535"), "{e}");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = parse_str("version = 1\n[node\n").unwrap_err().to_string();
        assert!(e.starts_with("test.toml:2:"), "{e}");
    }

    #[test]
    fn env_overrides_apply_and_are_typed() {
        let env = vec![
            ("SHARDGATE_NODE__MAX_BATCH_KEYS".to_string(), "7".to_string()),
            ("SHARDGATE_NODE__MEMORY_LIMIT".to_string(), "64MiB".to_string()),
            ("SHARDGATE_META".to_string(), "ignored: not an override".to_string()),
        ];
        let c = parse("version = 1\n[node]\nmax_batch_keys = 3\n", "t", env).unwrap();
        let node = c.node.unwrap();
        assert_eq!(node.max_batch_keys, 7);
        assert_eq!(node.memory_limit.as_u64(), 64 << 20);
    }

    #[test]
    fn env_override_errors_name_the_variable() {
        let env = vec![("SHARDGATE_NODE__NO_SUCH_KEY".to_string(), "1".to_string())];
        let e = parse("version = 1\n[node]\n", "t", env).unwrap_err().to_string();
        assert!(e.contains("SHARDGATE_NODE__NO_SUCH_KEY") && e.contains("no_such_key"), "{e}");
    }

    #[test]
    fn errors_quoting_line_breaks_stay_one_line() {
        let e = parse_str("version = 1\n[node]\neviction_policy = \"lru\\nx\"\n").unwrap_err().to_string();
        assert!(!e.contains('\n') && e.contains("lru\\nx"), "{e}");
    }

    #[test]
    fn arrays_are_not_tables() {
        let e = parse_str("version = 1\nnode = [\"127.0.0.1:7201\"]\n").unwrap_err().to_string();
        assert_eq!(e, "test.toml:2: node: expected a table ([node]), found an array");
        let e = parse_str("version = 1\n[meta]\nmembers = [[1, \"http://a:1\"]]\n").unwrap_err().to_string();
        assert!(e.starts_with("test.toml:3: meta.members[0]: expected a table"), "{e}");
    }

    #[test]
    fn meta_id_comes_from_members_by_advertise() {
        let file = "version = 1\n[meta]\nmembers = [{ id = 1, addr = \"http://meta-0.meta:7101\" }, { id = 2, addr = \"http://meta-1.meta:7101\" }]\n";
        let env = vec![("SHARDGATE_META__ADVERTISE".to_string(), "http://meta-1.meta:7101".to_string())];
        assert_eq!(parse(file, "t", env).unwrap().meta.unwrap().id, 2);
        let in_file = format!("{file}advertise = \"http://meta-0.meta:7101\"\n");
        assert_eq!(parse(&in_file, "t", Vec::new()).unwrap().meta.unwrap().id, 1);
        let unknown = vec![("SHARDGATE_META__ADVERTISE".to_string(), "http://meta-9.meta:7101".to_string())];
        let e = parse(file, "t", unknown).unwrap_err().to_string();
        assert!(e.contains("meta.id") && e.contains("meta-9.meta"), "{e}");
        // An explicit id wins.
        let env = vec![
            ("SHARDGATE_META__ADVERTISE".to_string(), "http://meta-1.meta:7101".to_string()),
            ("SHARDGATE_META__ID".to_string(), "1".to_string()),
        ];
        assert_eq!(parse(file, "t", env).unwrap().meta.unwrap().id, 1);
    }

    #[test]
    fn the_environment_alone_is_a_config() {
        let env = vec![
            ("SHARDGATE_NODE__LISTEN".to_string(), "0.0.0.0:7100".to_string()),
            ("SHARDGATE_NODE__MEMORY_LIMIT".to_string(), "64MiB".to_string()),
        ];
        let c = parse("version = 1\n", "environment", env).unwrap();
        assert_eq!(c.roles(), vec!["node"]);
        assert_eq!(c.node.unwrap().listen.to_string(), "0.0.0.0:7100");
    }

    #[test]
    fn roles_are_listed() {
        let c = parse_str("version = 1\n[node]\n").unwrap();
        assert_eq!(c.roles(), ["node"]);
        let c = parse_str("version = 1\n[proxy]\n[meta]\n").unwrap();
        assert_eq!(c.roles(), ["meta", "proxy"]);
        assert!(parse_str("version = 1\n").unwrap().roles().is_empty());
    }
}
