//! Reading what Claude Code has registered, straight from its files.
//!
//! `claude mcp get/list` health-check every server and can hang for half a minute, so the
//! installer reads `.claude.json`, `settings.json` and the plugin registry itself and calls
//! `claude` only for changes.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{Map, Value};

use crate::settings::{JsonFile, SettingsError};

/// One registration of an MCP server name.
#[derive(Debug, Clone, PartialEq)]
pub struct McpEntry {
    pub name: String,
    /// `user`, or `local` for an entry under a project directory.
    pub scope: &'static str,
    pub project: Option<PathBuf>,
    pub entry: Value,
}

impl McpEntry {
    /// Return the entry's URL, if it has one.
    pub fn url(&self) -> Option<&str> {
        self.entry.get("url").and_then(Value::as_str)
    }
}

/// Find every user- and local-scope registration of `name` in `.claude.json`.
pub fn mcp_entries(claude_json: &Map<String, Value>, name: &str) -> Vec<McpEntry> {
    let mut found = Vec::new();
    if let Some(entry) = claude_json.get("mcpServers").and_then(|s| s.get(name)) {
        found.push(McpEntry {
            name: name.into(),
            scope: "user",
            project: None,
            entry: entry.clone(),
        });
    }
    if let Some(projects) = claude_json.get("projects").and_then(Value::as_object) {
        for (dir, project) in projects {
            if let Some(entry) = project.get("mcpServers").and_then(|s| s.get(name)) {
                found.push(McpEntry {
                    name: name.into(),
                    scope: "local",
                    project: Some(PathBuf::from(dir)),
                    entry: entry.clone(),
                });
            }
        }
    }
    found
}

/// Every user- and local-scope MCP server, whatever its name.
pub fn all_mcp_entries(claude_json: &Map<String, Value>) -> Vec<McpEntry> {
    let mut names: Vec<String> = Vec::new();
    if let Some(servers) = claude_json.get("mcpServers").and_then(Value::as_object) {
        names.extend(servers.keys().cloned());
    }
    if let Some(projects) = claude_json.get("projects").and_then(Value::as_object) {
        for project in projects.values() {
            if let Some(servers) = project.get("mcpServers").and_then(Value::as_object) {
                names.extend(servers.keys().cloned());
            }
        }
    }
    names.sort();
    names.dedup();
    names
        .iter()
        .flat_map(|n| mcp_entries(claude_json, n))
        .collect()
}

/// Tell whether a user-scope entry is exactly our HTTP registration.
pub fn is_our_http_entry(entry: &Value, url: &str) -> bool {
    entry.get("type").and_then(Value::as_str) == Some("http")
        && entry.get("url").and_then(Value::as_str) == Some(url)
        && entry
            .get("headers")
            .is_none_or(|h| h.as_object().is_some_and(Map::is_empty))
}

/// Read `.claude.json` strictly; a missing file is an empty object.
pub fn read_claude_json(path: &Path) -> Result<JsonFile, SettingsError> {
    JsonFile::read(path)
}

/// Return the marketplace declaration `extraKnownMarketplaces.<name>` from settings.
pub fn marketplace_declaration<'a>(
    settings: &'a Map<String, Value>,
    name: &str,
) -> Option<&'a Value> {
    settings.get("extraKnownMarketplaces")?.get(name)
}

/// Tell whether a declared marketplace source is the git URL we would add.
///
/// Claude Code may store a URL's credential as an `Authorization: Basic` header with the
/// URL's user part removed; that counts as the same source.
pub fn source_matches(declaration: &Value, clone_url: &str) -> bool {
    let Some(source) = declaration.get("source") else {
        return false;
    };
    if source.get("source").and_then(Value::as_str) != Some("git") {
        return false;
    }
    if ["ref", "path", "sparsePaths"]
        .iter()
        .any(|k| source.get(k).is_some())
    {
        return false;
    }
    let (Some(declared), Ok(wanted)) = (
        source
            .get("url")
            .and_then(Value::as_str)
            .and_then(|u| url::Url::parse(u).ok()),
        url::Url::parse(clone_url),
    ) else {
        return false;
    };
    let target = |u: &url::Url| {
        (
            u.scheme().to_ascii_lowercase(),
            u.host_str().map(str::to_ascii_lowercase),
            u.port_or_known_default(),
            u.path().to_string(),
            u.query().map(str::to_string),
        )
    };
    if target(&declared) != target(&wanted) {
        return false;
    }
    let headers = source.get("headers").and_then(Value::as_object);
    let same_userinfo =
        declared.username() == wanted.username() && declared.password() == wanted.password();
    if same_userinfo && headers.is_none_or(Map::is_empty) {
        return true;
    }
    if declared.username().is_empty() && !wanted.username().is_empty() {
        let creds = format!("{}:{}", wanted.username(), wanted.password().unwrap_or(""));
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(creds)
        );
        return headers.is_some_and(|h| {
            h.len() == 1
                && h.iter().any(|(k, v)| {
                    k.eq_ignore_ascii_case("authorization") && v.as_str() == Some(&expected)
                })
        });
    }
    false
}

/// List the plugin ids (`plugin@marketplace`) Claude Code has installed.
pub fn installed_plugins(plugins_dir: &Path) -> Result<Vec<String>, SettingsError> {
    let file = JsonFile::read(&plugins_dir.join("installed_plugins.json"))?;
    Ok(file
        .root
        .get("plugins")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default())
}

/// List the marketplaces Claude Code knows, from its registry file.
pub fn known_marketplaces(plugins_dir: &Path) -> Result<Vec<String>, SettingsError> {
    let file = JsonFile::read(&plugins_dir.join("known_marketplaces.json"))?;
    Ok(file.root.keys().cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_user_and_local_registrations() {
        let cj = json!({
            "mcpServers": {"arch": {"type": "http", "url": "https://h/v1/mcp/a"}},
            "projects": {
                "/p/one": {"mcpServers": {"arch": {"type": "http", "url": "https://old"}}},
                "/p/two": {"mcpServers": {}}
            }
        });
        let found = mcp_entries(cj.as_object().unwrap(), "arch");
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].project.as_deref(), Some(Path::new("/p/one")));
        assert!(is_our_http_entry(&found[0].entry, "https://h/v1/mcp/a"));
        assert!(!is_our_http_entry(&found[1].entry, "https://h/v1/mcp/a"));
    }

    #[test]
    fn matches_git_sources_with_either_credential_form() {
        let url = "https://u_tok@h.example/skills/marketplace.git";
        let same = json!({"source": {"source": "git", "url": url}});
        assert!(source_matches(&same, url));

        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("u_tok:")
        );
        let as_header = json!({"source": {
            "source": "git",
            "url": "https://H.example/skills/marketplace.git",
            "headers": {"Authorization": header}
        }});
        assert!(source_matches(&as_header, url));

        let other = json!({"source": {"source": "git", "url": "https://h.example/x.git"}});
        assert!(!source_matches(&other, url));
        let with_ref = json!({"source": {"source": "git", "url": url, "ref": "main"}});
        assert!(!source_matches(&with_ref, url));
        let dir = json!({"source": {"source": "directory", "path": "/x"}});
        assert!(!source_matches(&dir, url));
    }
}
