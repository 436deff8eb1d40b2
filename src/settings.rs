//! Reading, editing and writing Claude Code's `settings.json` without losing anything.
//!
//! Claude Code skips a settings file that is not strict JSON, so a file that does not parse
//! is never rewritten: the error names its line and column instead. A file that parses is
//! edited key by key and written back in its own style (indentation, line ends, final
//! newline, key order, non-ASCII text as written), atomically and through a symlink.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use thiserror::Error;

/// Why a settings file could not be read or written.
#[derive(Debug, Error)]
pub enum SettingsError {
    #[error("could not read `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "`{path}` is not valid JSON (line {line}, column {column}: {reason}); Claude Code ignores a file like this"
    )]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("`{path}` must hold a JSON object at the top, and it holds {found}")]
    NotObject { path: PathBuf, found: &'static str },
    #[error("`{key}` in `{path}` must be {expected}, and it is {found}")]
    WrongType {
        path: PathBuf,
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("could not write `{path}`")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// How the file was laid out, so that a rewrite looks like the original.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The indentation unit, or `None` for a file written on one line.
    pub indent: Option<String>,
    pub crlf: bool,
    pub final_newline: bool,
}

impl Default for Layout {
    /// Claude Code's own style: two spaces, LF, a final newline.
    fn default() -> Self {
        Layout {
            indent: Some("  ".into()),
            crlf: false,
            final_newline: true,
        }
    }
}

/// A parsed JSON object file: its content, its layout and the bytes it was read from.
#[derive(Debug, Clone)]
pub struct JsonFile {
    pub path: PathBuf,
    pub root: Map<String, Value>,
    pub layout: Layout,
    /// The exact bytes read, or `None` when the file did not exist.
    pub original: Option<String>,
}

/// Name the JSON type of a value, for messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl JsonFile {
    /// Read and strictly parse `path`; a missing or blank file reads as an empty object.
    pub fn read(path: &Path) -> Result<JsonFile, SettingsError> {
        let text = match fs::read(path) {
            Ok(bytes) => Some(String::from_utf8(bytes).map_err(|e| SettingsError::Parse {
                path: path.into(),
                line: 1,
                column: 1,
                reason: format!("not UTF-8 text ({e})"),
            })?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(SettingsError::Read {
                    path: path.into(),
                    source,
                });
            }
        };
        let Some(text) = text else {
            return Ok(JsonFile {
                path: path.into(),
                root: Map::new(),
                layout: Layout::default(),
                original: None,
            });
        };
        let root = parse_object(path, &text)?;
        Ok(JsonFile {
            path: path.into(),
            root,
            layout: detect_layout(&text),
            original: Some(text),
        })
    }

    /// Render the content in the file's own layout.
    pub fn render(&self) -> String {
        render(&self.root, &self.layout)
    }

    /// Tell whether writing now would change the file's bytes.
    pub fn is_changed(&self) -> bool {
        self.original.as_deref() != Some(self.render().as_str())
    }

    /// Return the object under `key`, creating it when absent.
    pub fn object_mut(&mut self, key: &str) -> Result<&mut Map<String, Value>, SettingsError> {
        let path = self.path.clone();
        let entry = self
            .root
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        let found = type_name(entry);
        entry.as_object_mut().ok_or(SettingsError::WrongType {
            path,
            key: key.into(),
            expected: "an object",
            found,
        })
    }

    /// Write the content atomically; see [`write_atomic`] for the guarantees.
    pub fn write(&self, private: bool) -> Result<(), SettingsError> {
        write_atomic(&self.path, self.render().as_bytes(), private)
    }
}

/// Parse `text` strictly as a JSON object; blank text is an empty object.
pub fn parse_object(path: &Path, text: &str) -> Result<Map<String, Value>, SettingsError> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    if text.starts_with('\u{feff}') {
        return Err(SettingsError::Parse {
            path: path.into(),
            line: 1,
            column: 1,
            reason: "the file starts with a byte-order mark".into(),
        });
    }
    let value: Value = serde_json::from_str(text).map_err(|e| SettingsError::Parse {
        path: path.into(),
        line: e.line(),
        column: e.column(),
        reason: describe_parse_error(&e),
    })?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(SettingsError::NotObject {
            path: path.into(),
            found: type_name(&other),
        }),
    }
}

fn describe_parse_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    // serde_json appends " at line L column C", which the caller already reports.
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// Work out the indentation unit, line ends and final newline of a JSON text.
pub fn detect_layout(text: &str) -> Layout {
    let crlf = text.contains("\r\n");
    let final_newline = text.ends_with('\n');
    let trimmed = text.trim();
    let indent = if !trimmed.contains('\n') {
        None
    } else {
        let unit = text
            .lines()
            .skip(1)
            .map(|line| {
                let width = line.len() - line.trim_start_matches([' ', '\t']).len();
                &line[..width]
            })
            .find(|lead| !lead.is_empty());
        Some(unit.unwrap_or("  ").to_string())
    };
    Layout {
        indent,
        crlf,
        final_newline,
    }
}

/// Render an object in a layout.
pub fn render(root: &Map<String, Value>, layout: &Layout) -> String {
    let value = Value::Object(root.clone());
    let mut text = match &layout.indent {
        None => serde_json::to_string(&value),
        Some(unit) => {
            let mut out = Vec::new();
            let formatter = serde_json::ser::PrettyFormatter::with_indent(unit.as_bytes());
            let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
            serde::Serialize::serialize(&value, &mut ser)
                .map(|()| String::from_utf8(out).expect("serde_json writes UTF-8"))
        }
    }
    .expect("a serde_json::Value always serialises");
    if layout.final_newline {
        text.push('\n');
    }
    if layout.crlf {
        text = text.replace('\n', "\r\n");
    }
    text
}

/// Return the permission bits of a file or folder, through a symlink if it is one.
pub fn mode(path: &Path) -> io::Result<u32> {
    Ok(fs::metadata(resolve_target(path))?.permissions().mode() & 0o7777)
}

/// Set the permission bits of a file or folder, through a symlink if it is one.
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(resolve_target(path), fs::Permissions::from_mode(mode))
}

/// Resolve a path through any symlinks to the file that really holds the content.
///
/// A dangling link resolves to its target, so that writing creates the target and keeps
/// the link, as Claude Code does.
pub fn resolve_target(path: &Path) -> PathBuf {
    let mut current = path.to_path_buf();
    for _ in 0..32 {
        match fs::read_link(&current) {
            Ok(target) => {
                current = if target.is_absolute() {
                    target
                } else {
                    current.parent().map(|p| p.join(&target)).unwrap_or(target)
                };
            }
            Err(_) => break,
        }
    }
    current
}

/// Write `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename.
///
/// A symlink at `path` is followed and kept. The file keeps its mode; `private` makes it
/// 0600 (it holds a secret). A new file gets 0644, or 0600 when `private`. On failure the
/// original file is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> Result<(), SettingsError> {
    let target = resolve_target(path);
    let fail = |source: io::Error| SettingsError::Write {
        path: path.into(),
        source,
    };
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(fail)?;

    let mode = match fs::metadata(&target) {
        Ok(meta) => meta.permissions().mode() & 0o7777,
        Err(_) => 0o644,
    };
    let mode = if private { mode & 0o7700 } else { mode };

    let mut tmp = tempfile::Builder::new()
        .prefix(".archestra-connect-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(fail)?;
    tmp.write_all(bytes).map_err(fail)?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(fail)?;
    tmp.as_file().sync_all().map_err(fail)?;
    tmp.persist(&target).map_err(|e| fail(e.error))?;
    // Make the rename itself durable.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Check that a file can be written beside `path` (through a symlink), with room to spare.
///
/// Writes and removes a 64 KiB temporary file, so that a read-only or full file system is
/// found before anything else happens, rather than half way through.
pub fn probe_writable(path: &Path) -> Result<(), SettingsError> {
    let target = resolve_target(path);
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let fail = |source: io::Error| SettingsError::Write {
        path: path.into(),
        source,
    };
    fs::create_dir_all(dir).map_err(fail)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".archestra-connect-probe-")
        .tempfile_in(dir)
        .map_err(fail)?;
    tmp.write_all(&[0u8; 64 * 1024]).map_err(fail)?;
    tmp.as_file().sync_all().map_err(fail)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_error_names_line_and_column() {
        let text = "{\n  \"env\": {},\n  // note\n}\n";
        let err = parse_object(Path::new("s.json"), text).unwrap_err();
        match err {
            SettingsError::Parse { line, column, .. } => {
                assert_eq!((line, column), (3, 3));
            }
            other => panic!("unexpected {other:?}"),
        }
        let err = parse_object(Path::new("s.json"), "{\"a\": 1,}").unwrap_err();
        assert!(err.to_string().contains("line 1, column 9"), "{err}");
    }

    #[test]
    fn refuses_non_objects_and_bom() {
        assert!(matches!(
            parse_object(Path::new("s"), "[1]"),
            Err(SettingsError::NotObject { .. })
        ));
        assert!(parse_object(Path::new("s"), "\u{feff}{}").is_err());
        assert!(parse_object(Path::new("s"), "  \n").unwrap().is_empty());
    }

    #[test]
    fn round_trips_layouts_byte_for_byte() {
        for text in [
            "{\n    \"a\": 1,\n    \"b\": {\n        \"c\": \"é ✓\"\n    }\n}\n",
            "{\n\t\"a\": [\n\t\t1,\n\t\t2\n\t]\n}",
            "{\"a\":1,\"b\":\"x\"}",
            "{\r\n  \"a\": true\r\n}\r\n",
            "{\n  \"z\": 1,\n  \"a\": 2.50,\n  \"m\": -0.0\n}\n",
        ] {
            let root = parse_object(Path::new("s"), text).unwrap();
            assert_eq!(render(&root, &detect_layout(text)), text);
        }
    }

    #[test]
    fn atomic_write_keeps_symlink_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.json");
        fs::write(&real, "{}").unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.path().join("settings.json");
        std::os::unix::fs::symlink("real.json", &link).unwrap();

        write_atomic(&link, b"{\"a\":1}", false).unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_to_string(&real).unwrap(), "{\"a\":1}");
        let mode = fs::metadata(&real).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);

        write_atomic(&link, b"{}", true).unwrap();
        let mode = fs::metadata(&real).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
