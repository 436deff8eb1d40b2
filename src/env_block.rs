//! The `env` block of settings.json: what setup merges in, and how revert takes it out.
//!
//! Both directions live here so that each stays the exact inverse of the other. Setup
//! records every value it overwrites in an [`EnvJournal`]; revert removes a value only
//! while it still equals what setup wrote, and puts back what was there before.
//!
//! `ANTHROPIC_CUSTOM_HEADERS` holds one `Name: Value` a line. Only our two header names are
//! ever replaced (compared case-insensitively); every other line stays where it is.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use archestra_wire::{
    AGENT_ID_HEADER, AuthMode, CLAUDE_CODE_AGENT_ID, Provider, ProxySection, VIRTUAL_KEY_HEADER,
    is_archestra_key,
};

/// The env key holding custom header lines.
pub const HEADERS_KEY: &str = "ANTHROPIC_CUSTOM_HEADERS";

/// Env keys that may hold a secret: their values are masked wherever they are shown.
pub const SECRET_KEYS: [&str; 4] = [
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_API_KEY",
    "AWS_BEARER_TOKEN_BEDROCK",
    HEADERS_KEY,
];

/// Region written for Bedrock when the user has none; the summary says how to change it.
const DEFAULT_AWS_REGION: &str = "us-east-1";

/// What setup wants the `env` block to say, worked out from the payload alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvPlan {
    /// Keys set whatever they held before.
    pub set: Vec<(String, String)>,
    /// Keys set only when absent.
    pub set_if_absent: Vec<(String, String)>,
    /// Keys removed only when they hold an Archestra key (never a user's own credential).
    pub remove_archestra_values: Vec<String>,
    /// Our header lines, in order.
    pub header_lines: Vec<String>,
    /// The top-level `apiKeyHelper` command, when the key lives in the keyring.
    pub api_key_helper: Option<String>,
}

impl EnvPlan {
    /// Work out the env changes for a proxy section.
    ///
    /// With `api_key_helper`, a virtual key is not written into `env`: Claude Code asks the
    /// helper for it instead (Anthropic only; Bedrock has no helper).
    pub fn for_proxy(proxy: &ProxySection, api_key_helper: Option<String>) -> EnvPlan {
        let mut set = Vec::new();
        let mut set_if_absent = Vec::new();
        let mut remove = Vec::new();
        let key = |s: &str| s.to_string();
        match proxy.provider {
            Provider::Anthropic => {
                set.push((key("ANTHROPIC_BASE_URL"), proxy.url.clone()));
                match (&proxy.auth_mode, &proxy.virtual_key) {
                    (AuthMode::VirtualKey, Some(_)) if api_key_helper.is_some() => {
                        remove.push(key("ANTHROPIC_AUTH_TOKEN"));
                        remove.push(key("ANTHROPIC_API_KEY"));
                    }
                    (AuthMode::VirtualKey, Some(vk)) => {
                        set.push((key("ANTHROPIC_AUTH_TOKEN"), vk.expose().to_string()));
                        // An API key beside the token would be sent too, and prompts the user.
                        remove.push(key("ANTHROPIC_API_KEY"));
                    }
                    _ => {
                        remove.push(key("ANTHROPIC_AUTH_TOKEN"));
                        remove.push(key("ANTHROPIC_API_KEY"));
                    }
                }
            }
            Provider::Bedrock => {
                set.push((key("CLAUDE_CODE_USE_BEDROCK"), key("1")));
                set.push((key("ANTHROPIC_BEDROCK_BASE_URL"), proxy.url.clone()));
                set_if_absent.push((key("AWS_REGION"), key(DEFAULT_AWS_REGION)));
                match (&proxy.auth_mode, &proxy.virtual_key) {
                    (AuthMode::VirtualKey, Some(vk)) => {
                        set.push((key("AWS_BEARER_TOKEN_BEDROCK"), vk.expose().to_string()));
                    }
                    _ => remove.push(key("AWS_BEARER_TOKEN_BEDROCK")),
                }
            }
        }
        let mut header_lines = vec![format!("{AGENT_ID_HEADER}: {CLAUDE_CODE_AGENT_ID}")];
        if let Some(pk) = &proxy.passthrough_virtual_key {
            header_lines.push(format!("{VIRTUAL_KEY_HEADER}: {}", pk.expose()));
        }
        let api_key_helper = match (proxy.provider, proxy.auth_mode) {
            (Provider::Anthropic, AuthMode::VirtualKey) => api_key_helper,
            _ => None,
        };
        EnvPlan {
            set,
            set_if_absent,
            remove_archestra_values: remove,
            header_lines,
            api_key_helper,
        }
    }

    /// Tell whether the plan writes a secret into the file.
    pub fn holds_secret(&self) -> bool {
        self.set
            .iter()
            .any(|(k, _)| SECRET_KEYS.contains(&k.as_str()) && k != HEADERS_KEY)
            || self
                .header_lines
                .iter()
                .any(|l| header_name(l).eq_ignore_ascii_case(VIRTUAL_KEY_HEADER))
    }
}

/// One env key setup changed: what it held before the first setup, and what we wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvKeyChange {
    pub key: String,
    /// The value before the first setup on this machine; `None` when the key was absent.
    pub previous: Option<Value>,
    /// The value setup wrote; `None` when setup removed the key.
    pub written: Option<String>,
}

/// What setup did to `ANTHROPIC_CUSTOM_HEADERS`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderChange {
    /// The whole value before the first setup; `None` when the key was absent.
    pub previous: Option<String>,
    /// Our lines, as they stand in the file.
    pub added: Vec<String>,
}

/// Everything setup changed in the `env` block, enough to undo it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvJournal {
    /// Setup created the `env` object itself.
    pub created_env: bool,
    pub keys: Vec<EnvKeyChange>,
    pub headers: Option<HeaderChange>,
    /// The top-level `apiKeyHelper` setup wrote, with its key name `apiKeyHelper`.
    #[serde(default)]
    pub api_key_helper: Option<EnvKeyChange>,
}

/// The settings key Claude Code runs to get an API key.
pub const API_KEY_HELPER: &str = "apiKeyHelper";

impl EnvJournal {
    fn entry(&mut self, key: &str, previous: Option<&Value>) -> &mut EnvKeyChange {
        if let Some(i) = self.keys.iter().position(|c| c.key == key) {
            return &mut self.keys[i];
        }
        self.keys.push(EnvKeyChange {
            key: key.to_string(),
            previous: previous.cloned(),
            written: None,
        });
        self.keys.last_mut().expect("just pushed")
    }
}

/// Return the header name of a `Name: Value` line, trimmed.
pub fn header_name(line: &str) -> &str {
    line.split_once(':').map_or(line, |(name, _)| name).trim()
}

/// Tell whether a header line is one of ours (agent id or virtual key).
pub fn is_our_header(line: &str) -> bool {
    let name = header_name(line);
    name.eq_ignore_ascii_case(AGENT_ID_HEADER) || name.eq_ignore_ascii_case(VIRTUAL_KEY_HEADER)
}

/// Tell whether a header line belongs to Archestra at all (`X-Archestra-*`).
pub fn is_archestra_header(line: &str) -> bool {
    header_name(line)
        .to_ascii_lowercase()
        .starts_with("x-archestra-")
}

fn split_lines(value: &str) -> Vec<String> {
    value
        .split('\n')
        .map(|l| l.trim_end_matches('\r').to_string())
        .filter(|l| !l.trim().is_empty())
        .collect()
}

/// Apply `plan` to the settings object, recording in `journal` what changed.
///
/// Applying the same plan twice changes nothing the second time. A journal from an earlier
/// setup is extended, never reset, so it keeps the values from before the first setup.
/// Returns an error naming the key when `env` or a header value is not of the right type.
pub fn apply(
    root: &mut Map<String, Value>,
    plan: &EnvPlan,
    journal: &mut EnvJournal,
) -> Result<(), String> {
    if let Some(helper) = &plan.api_key_helper {
        let previous = root.get(API_KEY_HELPER).cloned();
        let change = journal.api_key_helper.get_or_insert(EnvKeyChange {
            key: API_KEY_HELPER.into(),
            previous,
            written: None,
        });
        change.written = Some(helper.clone());
        root.insert(API_KEY_HELPER.into(), Value::String(helper.clone()));
    } else if let Some(change) = &journal.api_key_helper
        && root.get(API_KEY_HELPER).and_then(Value::as_str) == change.written.as_deref()
    {
        // This setup keeps the key in the file: the earlier helper must go.
        match &change.previous {
            Some(v) => {
                root.insert(API_KEY_HELPER.into(), v.clone());
            }
            None => {
                root.remove(API_KEY_HELPER);
            }
        }
        journal.api_key_helper = None;
    }

    if !root.contains_key("env") {
        journal.created_env = true;
        root.insert("env".into(), Value::Object(Map::new()));
    }
    let env = root
        .get_mut("env")
        .and_then(Value::as_object_mut)
        .ok_or("`env` is not an object")?;

    for key in &plan.remove_archestra_values {
        let holds_ours = env
            .get(key)
            .and_then(Value::as_str)
            .is_some_and(is_archestra_key);
        if holds_ours {
            let previous = env.get(key).cloned();
            journal.entry(key, previous.as_ref()).written = None;
            env.remove(key);
        }
    }
    for (key, value) in &plan.set {
        let previous = env.get(key).cloned();
        journal.entry(key, previous.as_ref()).written = Some(value.clone());
        env.insert(key.clone(), Value::String(value.clone()));
    }
    for (key, value) in &plan.set_if_absent {
        if !env.contains_key(key) {
            journal.entry(key, None).written = Some(value.clone());
            env.insert(key.clone(), Value::String(value.clone()));
        }
    }

    let existing = match env.get(HEADERS_KEY) {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(format!("`env.{HEADERS_KEY}` is not a string")),
    };
    let change = journal.headers.get_or_insert_with(|| HeaderChange {
        previous: existing.clone(),
        added: Vec::new(),
    });
    let mut lines = existing.as_deref().map(split_lines).unwrap_or_default();
    lines.retain(|l| !is_our_header(l));
    lines.extend(plan.header_lines.iter().cloned());
    change.added = plan.header_lines.clone();
    env.insert(HEADERS_KEY.into(), Value::String(lines.join("\n")));
    Ok(())
}

/// A value revert left in place because the user changed it after setup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptValue {
    pub key: String,
}

/// Undo what `journal` records, leaving alone every value the user changed since.
///
/// Returns the keys kept because they no longer hold what setup wrote. Undoing twice is
/// the same as undoing once.
pub fn undo(root: &mut Map<String, Value>, journal: &EnvJournal) -> Vec<KeptValue> {
    let mut kept = Vec::new();
    if let Some(change) = &journal.api_key_helper {
        let now = root.get(API_KEY_HELPER);
        if now == change.previous.as_ref() {
            // Undone already.
        } else if now.and_then(Value::as_str) == change.written.as_deref() {
            match &change.previous {
                Some(v) => {
                    root.insert(API_KEY_HELPER.into(), v.clone());
                }
                None => {
                    root.remove(API_KEY_HELPER);
                }
            }
        } else {
            kept.push(KeptValue {
                key: API_KEY_HELPER.into(),
            });
        }
    }
    let Some(env) = root.get_mut("env").and_then(Value::as_object_mut) else {
        return kept;
    };

    for change in journal.keys.iter().rev() {
        let current = env.get(&change.key);
        let ours = match (&change.written, current) {
            (Some(written), Some(Value::String(now))) => now == written,
            (None, None) => true,
            _ => false,
        };
        let already_undone = current == change.previous.as_ref();
        if already_undone {
            continue;
        }
        if !ours {
            kept.push(KeptValue {
                key: change.key.clone(),
            });
            continue;
        }
        match &change.previous {
            Some(value) => {
                env.insert(change.key.clone(), value.clone());
            }
            None => {
                env.remove(&change.key);
            }
        }
    }

    if let Some(headers) = &journal.headers
        && let Some(Value::String(value)) = env.get(HEADERS_KEY)
    {
        let mut lines = split_lines(value);
        let before = lines.clone();
        lines.retain(|l| !headers.added.contains(l));
        // When the user's lines are exactly as they were, put the old value back as it was
        // written (line order, an earlier Archestra line setup replaced, blank lines).
        let users_before: Vec<String> = headers
            .previous
            .as_deref()
            .map(split_lines)
            .unwrap_or_default()
            .into_iter()
            .filter(|l| !is_our_header(l))
            .collect();
        if lines == users_before {
            match &headers.previous {
                Some(previous) => {
                    env.insert(HEADERS_KEY.into(), Value::String(previous.clone()));
                }
                None => {
                    env.remove(HEADERS_KEY);
                }
            }
        } else if lines != before {
            env.insert(HEADERS_KEY.into(), Value::String(lines.join("\n")));
        }
    }

    let env_empty = env.is_empty();
    if env_empty && journal.created_env {
        root.remove("env");
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use archestra_wire::Secret;
    use serde_json::json;

    fn key(c: char) -> String {
        format!("arch_{}", c.to_string().repeat(64))
    }

    fn passthrough() -> ProxySection {
        ProxySection {
            auth_mode: AuthMode::ProviderKey,
            provider: Provider::Anthropic,
            url: "https://h.example/v1/anthropic".into(),
            virtual_key: None,
            virtual_key_name: None,
            passthrough_virtual_key: Some(Secret::new(key('a'))),
        }
    }

    fn virtual_key() -> ProxySection {
        ProxySection {
            auth_mode: AuthMode::VirtualKey,
            passthrough_virtual_key: None,
            virtual_key: Some(Secret::new(key('b'))),
            ..passthrough()
        }
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn merge_keeps_user_keys_and_header_lines() {
        let mut root = obj(json!({
            "theme": "dark",
            "env": {
                "FOO": "1",
                "ANTHROPIC_API_KEY": "sk-ant-user-own",
                "ANTHROPIC_CUSTOM_HEADERS": "X-Team: blue\nx-archestra-agent-id: old\nX-Other: 2"
            }
        }));
        let original = root.clone();
        let mut journal = EnvJournal::default();
        apply(
            &mut root,
            &EnvPlan::for_proxy(&passthrough(), None),
            &mut journal,
        )
        .unwrap();

        let env = root["env"].as_object().unwrap();
        assert_eq!(env["FOO"], "1");
        assert_eq!(env["ANTHROPIC_API_KEY"], "sk-ant-user-own");
        assert_eq!(env["ANTHROPIC_BASE_URL"], "https://h.example/v1/anthropic");
        assert_eq!(
            env[HEADERS_KEY],
            format!(
                "X-Team: blue\nX-Other: 2\nX-Archestra-Agent-Id: anthropic_claude_code\nX-Archestra-Virtual-Key: {}",
                key('a')
            )
        );

        let kept = undo(&mut root, &journal);
        assert!(kept.is_empty());
        assert_eq!(root, original);
    }

    #[test]
    fn merge_twice_equals_merge_once() {
        let mut root = obj(json!({"env": {"ANTHROPIC_API_KEY": "arch_legacy"}}));
        let original = root.clone();
        let mut journal = EnvJournal::default();
        let plan = EnvPlan::for_proxy(&virtual_key(), None);
        apply(&mut root, &plan, &mut journal).unwrap();
        let once = root.clone();
        apply(&mut root, &plan, &mut journal).unwrap();
        assert_eq!(root, once);
        assert!(
            !root["env"]
                .as_object()
                .unwrap()
                .contains_key("ANTHROPIC_API_KEY")
        );
        assert_eq!(root["env"]["ANTHROPIC_AUTH_TOKEN"], key('b'));

        undo(&mut root, &journal);
        assert_eq!(root, original);
    }

    #[test]
    fn mode_switch_drops_the_stale_token_and_revert_goes_back_to_before_the_first_setup() {
        let mut root = Map::new();
        let mut journal = EnvJournal::default();
        apply(
            &mut root,
            &EnvPlan::for_proxy(&virtual_key(), None),
            &mut journal,
        )
        .unwrap();
        apply(
            &mut root,
            &EnvPlan::for_proxy(&passthrough(), None),
            &mut journal,
        )
        .unwrap();
        let env = root["env"].as_object().unwrap();
        assert!(!env.contains_key("ANTHROPIC_AUTH_TOKEN"));
        assert_eq!(env[HEADERS_KEY].as_str().unwrap().lines().count(), 2);

        undo(&mut root, &journal);
        assert!(root.is_empty(), "{root:?}");
    }

    #[test]
    fn undo_keeps_values_the_user_changed() {
        let mut root = Map::new();
        let mut journal = EnvJournal::default();
        apply(
            &mut root,
            &EnvPlan::for_proxy(&passthrough(), None),
            &mut journal,
        )
        .unwrap();
        let env = root["env"].as_object_mut().unwrap();
        env.insert("ANTHROPIC_BASE_URL".into(), json!("https://mine.example"));
        let headers = env[HEADERS_KEY].as_str().unwrap().to_string();
        env.insert(HEADERS_KEY.into(), json!(format!("{headers}\nX-Mine: 1")));

        let kept = undo(&mut root, &journal);
        assert_eq!(
            kept,
            vec![KeptValue {
                key: "ANTHROPIC_BASE_URL".into()
            }]
        );
        assert_eq!(
            root["env"],
            json!({"ANTHROPIC_BASE_URL": "https://mine.example", HEADERS_KEY: "X-Mine: 1"})
        );
        let again = root.clone();
        undo(&mut root, &journal);
        assert_eq!(root, again);
    }

    #[test]
    fn bedrock_keeps_a_user_region() {
        let proxy = ProxySection {
            provider: Provider::Bedrock,
            ..virtual_key()
        };
        let mut root = obj(json!({"env": {"AWS_REGION": "eu-west-1"}}));
        let mut journal = EnvJournal::default();
        let plan = EnvPlan::for_proxy(&proxy, None);
        assert!(plan.holds_secret());
        apply(&mut root, &plan, &mut journal).unwrap();
        assert_eq!(root["env"]["AWS_REGION"], "eu-west-1");
        assert_eq!(root["env"]["CLAUDE_CODE_USE_BEDROCK"], "1");
        assert_eq!(root["env"]["AWS_BEARER_TOKEN_BEDROCK"], key('b'));
    }

    #[test]
    fn a_helper_replaces_the_token_and_revert_restores_the_users_helper() {
        let mut root = obj(json!({"apiKeyHelper": "~/bin/my-key", "env": {}}));
        let original = root.clone();
        let mut journal = EnvJournal::default();
        let plan = EnvPlan::for_proxy(
            &virtual_key(),
            Some("/x/archestra-connect credential".into()),
        );
        assert!(!plan.holds_secret());
        apply(&mut root, &plan, &mut journal).unwrap();
        assert_eq!(root["apiKeyHelper"], "/x/archestra-connect credential");
        assert!(root["env"].get("ANTHROPIC_AUTH_TOKEN").is_none());
        apply(&mut root, &plan, &mut journal).unwrap();
        undo(&mut root, &journal);
        assert_eq!(root, original);

        // Falling back to the file later takes our helper out again.
        let mut root = Map::new();
        let mut journal = EnvJournal::default();
        apply(&mut root, &plan, &mut journal).unwrap();
        apply(
            &mut root,
            &EnvPlan::for_proxy(&virtual_key(), None),
            &mut journal,
        )
        .unwrap();
        assert!(root.get("apiKeyHelper").is_none());
        assert!(root["env"]["ANTHROPIC_AUTH_TOKEN"].is_string());
    }

    #[test]
    fn refuses_a_non_object_env() {
        let mut root = obj(json!({"env": "x"}));
        let err = apply(
            &mut root,
            &EnvPlan::for_proxy(&passthrough(), None),
            &mut EnvJournal::default(),
        );
        assert!(err.is_err());
    }

    mod properties {
        use super::*;
        use proptest::collection::{btree_map, vec};
        use proptest::prelude::*;

        fn leaf() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(|n| json!(n)),
                "[a-zA-Z0-9 é✓:_-]{0,12}".prop_map(Value::String),
            ]
        }

        fn value() -> impl Strategy<Value = Value> {
            leaf().prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    vec(inner.clone(), 0..4).prop_map(Value::Array),
                    btree_map("[a-zA-Z]{1,6}", inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn env_value() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(json!(format!("arch_{}", "c".repeat(64)))),
                Just(json!("archestra_legacy_key")),
                Just(json!("sk-ant-user-key")),
                Just(json!("https://elsewhere.example")),
                "[a-z0-9]{0,8}".prop_map(Value::String),
                any::<i32>().prop_map(|n| json!(n)),
            ]
        }

        fn header_line() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("X-Team: blue".to_string()),
                Just("x-archestra-agent-id: old".to_string()),
                Just(format!("X-Archestra-Virtual-Key: arch_{}", "d".repeat(64))),
                Just("X-Other:2".to_string()),
                "[A-Z][a-z]{1,5}: [a-z0-9 ]{0,6}",
            ]
        }

        prop_compose! {
            fn settings()(
                top in btree_map("[a-zA-Z]{1,8}", value(), 0..5),
                env in proptest::option::of(btree_map(
                    prop_oneof![
                        Just("ANTHROPIC_BASE_URL".to_string()),
                        Just("ANTHROPIC_AUTH_TOKEN".to_string()),
                        Just("ANTHROPIC_API_KEY".to_string()),
                        Just("AWS_REGION".to_string()),
                        Just("AWS_BEARER_TOKEN_BEDROCK".to_string()),
                        "[A-Z_]{1,8}",
                    ],
                    env_value(),
                    0..6,
                )),
                headers in proptest::option::of(vec(header_line(), 0..5)),
                helper in proptest::option::of("[a-z/ ]{1,10}"),
            ) -> Map<String, Value> {
                let mut root: Map<String, Value> = top.into_iter().collect();
                root.remove("env");
                root.remove(API_KEY_HELPER);
                if let Some(env) = env {
                    let mut env: Map<String, Value> = env.into_iter().collect();
                    if let Some(lines) = headers {
                        env.insert(HEADERS_KEY.into(), json!(lines.join("\n")));
                    }
                    root.insert("env".into(), Value::Object(env));
                }
                if let Some(h) = helper {
                    root.insert(API_KEY_HELPER.into(), json!(h));
                }
                root
            }
        }

        fn plan() -> impl Strategy<Value = EnvPlan> {
            (0..3usize, any::<bool>()).prop_map(|(kind, helper)| {
                let proxy = match kind {
                    0 => passthrough(),
                    1 => virtual_key(),
                    _ => ProxySection {
                        provider: Provider::Bedrock,
                        ..virtual_key()
                    },
                };
                EnvPlan::for_proxy(
                    &proxy,
                    helper.then(|| "/bin/archestra-connect credential".into()),
                )
            })
        }

        fn user_lines(root: &Map<String, Value>) -> Vec<String> {
            root.get("env")
                .and_then(|e| e.get(HEADERS_KEY))
                .and_then(Value::as_str)
                .map(split_lines)
                .unwrap_or_default()
                .into_iter()
                .filter(|l| !is_our_header(l))
                .collect()
        }

        proptest! {
            #[test]
            fn merge_then_unmerge_gives_back_the_same_content(root in settings(), plan in plan()) {
                let mut merged = root.clone();
                let mut journal = EnvJournal::default();
                apply(&mut merged, &plan, &mut journal).unwrap();
                let kept = undo(&mut merged, &journal);
                prop_assert!(kept.is_empty());
                prop_assert_eq!(merged, root);
            }

            #[test]
            fn merging_twice_equals_merging_once(root in settings(), plan in plan()) {
                let mut once = root.clone();
                let mut journal = EnvJournal::default();
                apply(&mut once, &plan, &mut journal).unwrap();
                let mut twice = once.clone();
                apply(&mut twice, &plan, &mut journal).unwrap();
                prop_assert_eq!(&twice, &once);
                // And the second journal still undoes to the very first content.
                undo(&mut twice, &journal);
                prop_assert_eq!(twice, root);
            }

            #[test]
            fn user_keys_and_header_lines_are_never_lost(root in settings(), plan in plan()) {
                let mut merged = root.clone();
                apply(&mut merged, &plan, &mut EnvJournal::default()).unwrap();
                for (key, value) in &root {
                    if key != "env" && key != API_KEY_HELPER {
                        prop_assert_eq!(merged.get(key), Some(value));
                    }
                }
                let ours: Vec<&str> = plan
                    .set
                    .iter()
                    .chain(&plan.set_if_absent)
                    .map(|(k, _)| k.as_str())
                    .chain(plan.remove_archestra_values.iter().map(String::as_str))
                    .chain([HEADERS_KEY])
                    .collect();
                let before = root.get("env").and_then(Value::as_object).cloned().unwrap_or_default();
                let after = merged["env"].as_object().unwrap();
                for (key, value) in &before {
                    let replaced = ours.contains(&key.as_str())
                        && (plan.set.iter().any(|(k, _)| k == key)
                            || value.as_str().is_some_and(is_archestra_key));
                    if !replaced && key != HEADERS_KEY {
                        prop_assert_eq!(after.get(key), Some(value), "{} was lost", key);
                    }
                }
                // Every user header line survives, in its order, ahead of ours.
                let lines = split_lines(after[HEADERS_KEY].as_str().unwrap());
                let users = user_lines(&root);
                prop_assert_eq!(&lines[..users.len()], &users[..]);
            }
        }
    }
}
