//! Reading the setup values out of the bash script today's Archestra servers answer with.
//!
//! Nothing of the script is ever run, and nothing in it is expanded. The steps:
//! 1. Check that it is a bash script of bounded size (a shebang naming bash, no NUL bytes).
//! 2. Split it into words the way a POSIX shell would: single quotes (also `'\''`), double
//!    quotes, backslashes, comments and line continuations. Here-document bodies (the
//!    embedded Python, banners, the launch check) are skipped whole. A word holding `$…` or a
//!    backtick anywhere outside single quotes is marked as not literal, and no value is ever
//!    taken from such a word.
//! 3. Pick out the fixed lines: `claude mcp add|remove`, `claude plugin marketplace add|remove`,
//!    `claude plugin install`, the `ARCHESTRA_*` assignments and the `# archestra-ending:`
//!    comment. The `claude` command may stand anywhere in its line (after `cli`, `if !`, or
//!    inside `$( … )`). Any other command is ignored; an unexpected shape of one of ours, an
//!    unknown env key or header line, or two different values for one setting refuse the
//!    script, naming the line.
//! 4. Build a [`SetupPayload`] and validate it like a JSON payload.

use base64::Engine;
use serde::Deserialize;
use thiserror::Error;

use archestra_wire::{
    AGENT_ID_HEADER, AuthMode, CLAUDE_CODE_AGENT_ID, CLIENT_ID_CLAUDE_CODE, McpSection,
    PayloadError, Provider, ProxySection, Secret, SetupPayload, SkillsSection, VIRTUAL_KEY_HEADER,
};

/// Largest script accepted, in bytes.
pub const MAX_SCRIPT_BYTES: usize = 256 * 1024;

/// Most lines a script may have.
pub const MAX_SCRIPT_LINES: usize = 10_000;

/// Display name used when the script carries none.
const DEFAULT_APP_NAME: &str = "Archestra";

/// Env keys the script may set through `ARCHESTRA_SET_ENV_<KEY>`, for Anthropic.
const ANTHROPIC_KEYS: [&str; 2] = ["ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"];

/// Env keys the script may set through `ARCHESTRA_SET_ENV_<KEY>`, for Bedrock.
const BEDROCK_KEYS: [&str; 4] = [
    "CLAUDE_CODE_USE_BEDROCK",
    "AWS_REGION",
    "ANTHROPIC_BEDROCK_BASE_URL",
    "AWS_BEARER_TOKEN_BEDROCK",
];

/// Env keys the script may ask to drop when they hold an Archestra key.
const REMOVABLE_KEYS: [&str; 3] = [
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_API_KEY",
    "AWS_BEARER_TOKEN_BEDROCK",
];

/// Words that may open a command without being the command (`if ! cli claude …`).
const LEADING_KEYWORDS: [&str; 12] = [
    "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}",
];

/// What the script's `# archestra-ending:` comment says to do after setup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ending {
    /// The deployment's display name.
    pub app_name: Option<String>,
    /// The command that signs in to the gateway, e.g. `claude mcp login archestra`.
    pub sign_in: Option<Vec<String>>,
    /// The command that starts Claude Code with a first prompt.
    pub launch: Option<Vec<String>>,
}

/// The values read out of a setup script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedScript {
    /// The setup, as a JSON payload would have said it; already validated.
    pub payload: SetupPayload,
    /// The script's ending, when it has one.
    pub ending: Option<Ending>,
}

/// Why a setup script was refused. No message holds a value from the script that could
/// be a secret: keys, URLs and tokens are named by the setting they belong to.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ScriptError {
    #[error("the setup script is larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("the setup script has more than {max} lines")]
    TooManyLines { max: usize },
    #[error("the server's answer is not text (it holds a NUL byte or invalid UTF-8)")]
    NotText,
    #[error("the server sent a PowerShell script (made for Windows), not a bash script")]
    PowerShell,
    #[error("the server's answer is not a bash setup script (its first line is not `#!…bash`)")]
    NotBash,
    #[error("line {line} of the setup script: {what}")]
    Syntax { line: usize, what: String },
    #[error("line {line} of the setup script: {what}")]
    Unexpected { line: usize, what: String },
    #[error("line {line} of the setup script: {what}")]
    Conflict { line: usize, what: String },
    #[error("line {line} of the setup script: the `# archestra-ending:` comment {what}")]
    BadEnding { line: usize, what: String },
    #[error("the setup script sets up nothing this installer recognises")]
    Nothing,
    #[error("the setup script's values were refused: {0}")]
    Invalid(#[from] PayloadError),
}

/// Read the setup values out of an Archestra bash setup script, without running any of it.
pub fn parse_setup_script(text: &str) -> Result<ParsedScript, ScriptError> {
    if text.len() > MAX_SCRIPT_BYTES {
        return Err(ScriptError::TooLarge {
            max: MAX_SCRIPT_BYTES,
        });
    }
    if text.contains('\0') {
        return Err(ScriptError::NotText);
    }
    if text.lines().count() > MAX_SCRIPT_LINES {
        return Err(ScriptError::TooManyLines {
            max: MAX_SCRIPT_LINES,
        });
    }
    check_shebang(text)?;

    let tokens = Lexer::new(text).run()?;
    let mut found = Found::default();
    for item in split_commands(tokens) {
        match item {
            Item::Command(command) => found.command(&command)?,
            Item::Comment { text, line } => found.comment(&text, line)?,
        }
    }
    let ending = found.ending.clone();
    let payload = found.into_payload()?;
    payload.validate()?;
    if let (
        Some(mcp),
        Some((
            Ending {
                sign_in: Some(sign_in),
                ..
            },
            line,
        )),
    ) = (&payload.mcp, &ending)
        && sign_in.last() != Some(&mcp.server_name)
    {
        return Err(ScriptError::BadEnding {
            line: *line,
            what: "signs in to a server other than the one the script registers".into(),
        });
    }
    Ok(ParsedScript {
        payload,
        ending: ending.map(|(ending, _)| ending),
    })
}

fn check_shebang(text: &str) -> Result<(), ScriptError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let first = text.lines().next().unwrap_or("").trim_end();
    let is_bash = first.strip_prefix("#!").is_some_and(|rest| {
        let mut parts = rest.split_whitespace();
        match parts.next() {
            Some(p) if p.ends_with("/env") => parts.next() == Some("bash"),
            Some(p) => p.ends_with("/bash"),
            None => false,
        }
    });
    if is_bash {
        return Ok(());
    }
    let powershell = ["$ErrorActionPreference", "Write-Host", "$env:USERPROFILE"]
        .iter()
        .any(|marker| text.contains(marker));
    Err(if powershell {
        ScriptError::PowerShell
    } else {
        ScriptError::NotBash
    })
}

// ---------------------------------------------------------------------------------------
// Lexing

/// One shell word, with its quotes taken off and nothing expanded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Word {
    text: String,
    /// No `$…`, backtick, glob or `~` outside single quotes: the text is the value.
    literal: bool,
    /// Byte index of the `=` of an assignment (`NAME=value` with `NAME` unquoted).
    assign: Option<usize>,
    /// Every character so far was unquoted and plain, so a `=` can still make an assignment.
    plain: bool,
    line: usize,
}

impl Word {
    fn new(line: usize) -> Word {
        Word {
            literal: true,
            plain: true,
            line,
            ..Word::default()
        }
    }

    fn name(&self) -> Option<&str> {
        self.assign.map(|i| &self.text[..i])
    }

    fn value(&self) -> &str {
        self.assign.map_or(&self.text, |i| &self.text[i + 1..])
    }
}

#[derive(Debug)]
enum Token {
    Word(Word),
    /// Anything that ends a simple command: a newline, `;`, `&&`, `|`, `(`, `)`, `$(`.
    Separator,
    /// A redirection operator; the next word is its target, not an argument.
    Redirect,
    Comment {
        text: String,
        line: usize,
    },
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    line: usize,
    tokens: Vec<Token>,
    /// Here-documents opened on the current line: delimiter, strip tabs, line opened.
    heredocs: Vec<(String, bool, usize)>,
    /// Commands lexed inside a `$( … )`, emitted once the command around it has ended so
    /// that the outer command keeps all its words.
    deferred: Vec<Token>,
}

fn syntax(line: usize, what: impl Into<String>) -> ScriptError {
    ScriptError::Syntax {
        line,
        what: what.into(),
    }
}

impl Lexer {
    fn new(text: &str) -> Lexer {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        Lexer {
            chars: text.chars().collect(),
            pos: 0,
            line: 1,
            tokens: Vec::new(),
            heredocs: Vec::new(),
            deferred: Vec::new(),
        }
    }

    fn run(mut self) -> Result<Vec<Token>, ScriptError> {
        self.sequence(false)?;
        self.separator();
        if let Some((delimiter, _, line)) = self.heredocs.first() {
            return Err(syntax(
                *line,
                format!("the here-document ending at `{delimiter}` never ends"),
            ));
        }
        Ok(self.tokens)
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    /// End the current command, then emit the commands deferred from inside it.
    fn separator(&mut self) {
        self.tokens.push(Token::Separator);
        if !self.deferred.is_empty() {
            self.tokens.append(&mut self.deferred);
            self.tokens.push(Token::Separator);
        }
    }

    fn flush(&mut self, word: &mut Option<Word>) {
        if let Some(w) = word.take() {
            self.tokens.push(Token::Word(w));
        }
    }

    /// Lex commands until the end of input, or until the `)` closing a `$(` when `nested`.
    fn sequence(&mut self, nested: bool) -> Result<(), ScriptError> {
        let opened = self.line;
        let mut word: Option<Word> = None;
        let mut depth = 0usize;
        loop {
            let Some(c) = self.peek() else {
                self.flush(&mut word);
                if nested {
                    return Err(syntax(opened, "a `$(` is never closed"));
                }
                return Ok(());
            };
            match c {
                ' ' | '\t' | '\r' => {
                    self.flush(&mut word);
                    self.bump();
                }
                '\n' => {
                    self.flush(&mut word);
                    self.separator();
                    self.bump();
                    self.skip_heredoc_bodies()?;
                }
                '\\' if self.peek_at(1) == Some('\n') => {
                    self.bump();
                    self.bump();
                }
                '\\' => {
                    let w = word.get_or_insert_with(|| Word::new(self.line));
                    self.bump();
                    w.plain = false;
                    if let Some(next) = self.bump() {
                        w.text.push(next);
                    }
                }
                '#' if word.is_none() => {
                    let line = self.line;
                    let mut text = String::new();
                    while let Some(c) = self.peek().filter(|c| *c != '\n') {
                        text.push(c);
                        self.bump();
                    }
                    self.tokens.push(Token::Comment { text, line });
                }
                ';' | '&' | '|' => {
                    self.flush(&mut word);
                    while matches!(self.peek(), Some(';' | '&' | '|')) {
                        self.bump();
                    }
                    self.separator();
                }
                '(' => {
                    self.flush(&mut word);
                    depth += 1;
                    self.bump();
                    self.separator();
                }
                ')' => {
                    self.flush(&mut word);
                    self.bump();
                    self.separator();
                    if depth == 0 && nested {
                        return Ok(());
                    }
                    depth = depth.saturating_sub(1);
                }
                '<' | '>' => {
                    // A word of digits right before the operator is a file descriptor.
                    if word
                        .as_ref()
                        .is_some_and(|w| w.plain && w.text.chars().all(|c| c.is_ascii_digit()))
                    {
                        word = None;
                    }
                    self.flush(&mut word);
                    self.redirection()?;
                }
                '\'' => {
                    let w = word.get_or_insert_with(|| Word::new(self.line));
                    let line = self.line;
                    self.single_quoted(w, line)?;
                }
                '"' => {
                    let mut w = word.take().unwrap_or_else(|| Word::new(self.line));
                    self.double_quoted(&mut w)?;
                    word = Some(w);
                }
                '$' => {
                    let mut w = word.take().unwrap_or_else(|| Word::new(self.line));
                    self.dollar(&mut w, false)?;
                    word = Some(w);
                }
                '`' => {
                    let w = word.get_or_insert_with(|| Word::new(self.line));
                    w.literal = false;
                    w.plain = false;
                    let line = self.line;
                    self.backticks(line)?;
                }
                _ => {
                    let w = word.get_or_insert_with(|| Word::new(self.line));
                    self.bump();
                    if matches!(c, '*' | '?' | '[') || (c == '~' && w.text.is_empty()) {
                        w.literal = false;
                    }
                    if c == '=' && w.plain && w.assign.is_none() && is_identifier(&w.text) {
                        w.assign = Some(w.text.len());
                    } else if !(c.is_ascii_alphanumeric() || c == '_') {
                        w.plain = false;
                    }
                    w.text.push(c);
                }
            }
        }
    }

    fn single_quoted(&mut self, word: &mut Word, line: usize) -> Result<(), ScriptError> {
        self.bump();
        word.plain = false;
        loop {
            match self.bump() {
                None => return Err(syntax(line, "a single-quoted value never ends")),
                Some('\'') => return Ok(()),
                Some(c) => word.text.push(c),
            }
        }
    }

    fn double_quoted(&mut self, word: &mut Word) -> Result<(), ScriptError> {
        let line = self.line;
        self.bump();
        word.plain = false;
        loop {
            match self.peek() {
                None => return Err(syntax(line, "a double-quoted value never ends")),
                Some('"') => {
                    self.bump();
                    return Ok(());
                }
                Some('\\') => {
                    self.bump();
                    match self.peek() {
                        Some('\n') => {
                            self.bump();
                        }
                        Some(c @ ('$' | '`' | '"' | '\\')) => {
                            self.bump();
                            word.text.push(c);
                        }
                        _ => word.text.push('\\'),
                    }
                }
                Some('$') => self.dollar(word, true)?,
                Some('`') => {
                    word.literal = false;
                    let line = self.line;
                    self.backticks(line)?;
                }
                Some(c) => {
                    self.bump();
                    word.text.push(c);
                }
            }
        }
    }

    /// Lex a `$` form; every one makes the word non-literal, and a `$( … )` is lexed as
    /// commands of its own so that a `claude` call inside it is seen.
    fn dollar(&mut self, word: &mut Word, in_double_quotes: bool) -> Result<(), ScriptError> {
        let line = self.line;
        word.literal = false;
        word.plain = false;
        self.bump();
        match self.peek() {
            Some('(') => {
                self.bump();
                let outer = std::mem::take(&mut self.tokens);
                let outer_deferred = std::mem::take(&mut self.deferred);
                let result = self.sequence(true);
                let inner = std::mem::replace(&mut self.tokens, outer);
                self.deferred = outer_deferred;
                result?;
                self.deferred.extend(inner);
                word.text.push_str("$(…)");
            }
            Some('{') => {
                let mut depth = 0usize;
                loop {
                    match self.bump() {
                        None => return Err(syntax(line, "a `${` is never closed")),
                        Some('{') => depth += 1,
                        Some('}') => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        Some(_) => {}
                    }
                }
                word.text.push_str("${…}");
            }
            Some('\'') if !in_double_quotes => {
                self.bump();
                loop {
                    match self.bump() {
                        None => return Err(syntax(line, "a `$'` value never ends")),
                        Some('\\') => {
                            self.bump();
                        }
                        Some('\'') => break,
                        Some(_) => {}
                    }
                }
                word.text.push_str("$'…'");
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                word.text.push('$');
                while let Some(c) = self
                    .peek()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                {
                    self.bump();
                    word.text.push(c);
                }
            }
            Some(c) if c.is_ascii_digit() || "@*#?$!-".contains(c) => {
                self.bump();
                word.text.push('$');
                word.text.push(c);
            }
            _ => word.text.push('$'),
        }
        Ok(())
    }

    fn backticks(&mut self, line: usize) -> Result<(), ScriptError> {
        self.bump();
        loop {
            match self.bump() {
                None => return Err(syntax(line, "a backtick command never ends")),
                Some('\\') => {
                    self.bump();
                }
                Some('`') => return Ok(()),
                Some(_) => {}
            }
        }
    }

    fn redirection(&mut self) -> Result<(), ScriptError> {
        let line = self.line;
        let first = self.bump().expect("called on `<` or `>`");
        if first == '<' && self.peek() == Some('<') {
            self.bump();
            if self.peek() == Some('<') {
                // A here-string: its word is data, not an argument.
                self.bump();
                self.tokens.push(Token::Redirect);
                return Ok(());
            }
            let strip_tabs = self.peek() == Some('-');
            if strip_tabs {
                self.bump();
            }
            while matches!(self.peek(), Some(' ' | '\t')) {
                self.bump();
            }
            let delimiter = self.heredoc_delimiter(line)?;
            self.heredocs.push((delimiter, strip_tabs, line));
            return Ok(());
        }
        if matches!(self.peek(), Some('>' | '&' | '|'))
            || (first == '<' && self.peek() == Some('>'))
        {
            self.bump();
        }
        self.tokens.push(Token::Redirect);
        Ok(())
    }

    fn heredoc_delimiter(&mut self, line: usize) -> Result<String, ScriptError> {
        let mut delimiter = String::new();
        while let Some(c) = self.peek() {
            match c {
                '\'' | '"' => {
                    self.bump();
                    loop {
                        match self.bump() {
                            None | Some('\n') => {
                                return Err(syntax(line, "a here-document delimiter is cut off"));
                            }
                            Some(q) if q == c => break,
                            Some(q) => delimiter.push(q),
                        }
                    }
                }
                '\\' => {
                    self.bump();
                }
                c if c.is_whitespace() || ";&|()<>".contains(c) => break,
                c => {
                    self.bump();
                    delimiter.push(c);
                }
            }
        }
        if delimiter.is_empty() {
            return Err(syntax(line, "a here-document has no delimiter"));
        }
        Ok(delimiter)
    }

    /// Skip the bodies of the here-documents opened on the line just ended.
    fn skip_heredoc_bodies(&mut self) -> Result<(), ScriptError> {
        for (delimiter, strip_tabs, opened) in std::mem::take(&mut self.heredocs) {
            loop {
                if self.peek().is_none() {
                    return Err(syntax(
                        opened,
                        format!("the here-document ending at `{delimiter}` never ends"),
                    ));
                }
                let mut text = String::new();
                while let Some(c) = self.bump() {
                    if c == '\n' {
                        break;
                    }
                    text.push(c);
                }
                let text = text.trim_end_matches('\r');
                let text = if strip_tabs {
                    text.trim_start_matches('\t')
                } else {
                    text
                };
                if text == delimiter {
                    break;
                }
            }
        }
        Ok(())
    }
}

fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

// ---------------------------------------------------------------------------------------
// Commands

enum Item {
    Command(Vec<Word>),
    Comment { text: String, line: usize },
}

fn split_commands(tokens: Vec<Token>) -> Vec<Item> {
    let mut items = Vec::new();
    let mut words = Vec::new();
    let mut skip_next = false;
    for token in tokens {
        match token {
            Token::Word(_) if skip_next => skip_next = false,
            Token::Word(word) => words.push(word),
            Token::Redirect => skip_next = true,
            Token::Separator => {
                skip_next = false;
                if !words.is_empty() {
                    items.push(Item::Command(std::mem::take(&mut words)));
                }
            }
            Token::Comment { text, line } => items.push(Item::Comment { text, line }),
        }
    }
    if !words.is_empty() {
        items.push(Item::Command(words));
    }
    items
}

/// Everything the fixed lines said, before it becomes a payload.
#[derive(Default)]
struct Found {
    mcp: Option<((String, String), usize)>,
    removed_names: Vec<String>,
    mcp_name: Option<(String, usize)>,
    legacy_names: Option<(Vec<String>, usize)>,
    set_env: Vec<(String, String, usize)>,
    remove_env: Option<(Vec<String>, usize)>,
    headers: Option<(Vec<String>, usize)>,
    clone_url: Option<(String, usize)>,
    marketplace_names: Vec<(String, usize)>,
    plugin_refs: Vec<(String, usize)>,
    ending: Option<(Ending, usize)>,
}

fn unexpected(line: usize, what: impl Into<String>) -> ScriptError {
    ScriptError::Unexpected {
        line,
        what: what.into(),
    }
}

/// Keep the first value for a setting; a different second value refuses the script.
fn set_once<T: PartialEq>(
    slot: &mut Option<(T, usize)>,
    value: T,
    line: usize,
    what: &str,
) -> Result<(), ScriptError> {
    match slot {
        Some((existing, first)) if *existing != value => Err(ScriptError::Conflict {
            line,
            what: format!("{what} differs from the one on line {first}"),
        }),
        Some(_) => Ok(()),
        None => {
            *slot = Some((value, line));
            Ok(())
        }
    }
}

/// Return the literal text of an argument, or refuse it.
fn literal<'w>(word: &'w Word, what: &str) -> Result<&'w str, ScriptError> {
    if word.literal {
        Ok(&word.text)
    } else {
        Err(unexpected(
            word.line,
            format!("{what} is not a plain quoted value (it would need the shell to expand it)"),
        ))
    }
}

fn args_match(words: &[Word], expected: &[&str]) -> bool {
    words.len() >= expected.len()
        && words
            .iter()
            .zip(expected)
            .all(|(w, e)| w.literal && w.text == *e)
}

impl Found {
    fn command(&mut self, words: &[Word]) -> Result<(), ScriptError> {
        let mut rest = words;
        while let Some(first) = rest.first()
            && first.literal
            && LEADING_KEYWORDS.contains(&first.text.as_str())
        {
            rest = &rest[1..];
        }
        while let Some(first) = rest.first()
            && first.assign.is_some()
        {
            self.assignment(first)?;
            rest = &rest[1..];
        }
        let Some(first) = rest.first() else {
            return Ok(());
        };
        if first.literal && matches!(first.text.as_str(), "export" | "declare" | "local") {
            for word in &rest[1..] {
                if word.assign.is_some() {
                    self.assignment(word)?;
                }
            }
            return Ok(());
        }
        if first.literal && matches!(first.text.as_str(), "cli" | "command") {
            rest = &rest[1..];
        }
        match rest.first() {
            Some(w) if w.literal && w.text == "claude" => self.claude(&rest[1..], w.line),
            _ => Ok(()),
        }
    }

    fn claude(&mut self, args: &[Word], line: usize) -> Result<(), ScriptError> {
        if args_match(args, &["mcp", "add"]) {
            let rest = &args[2..];
            if rest.len() != 6 || !args_match(rest, &["--scope", "user", "--transport", "http"]) {
                return Err(unexpected(
                    line,
                    "`claude mcp add` has a shape this installer does not know (expected `--scope user --transport http <name> <url>`)",
                ));
            }
            let name = literal(&rest[4], "the MCP server name")?.to_string();
            let url = literal(&rest[5], "the MCP gateway URL")?.to_string();
            return set_once(&mut self.mcp, (name, url), line, "this `claude mcp add`");
        }
        if args_match(args, &["mcp", "remove"]) {
            let rest = &args[2..];
            let name = match rest.len() {
                1 => &rest[0],
                3 if args_match(rest, &["--scope", "local"])
                    || args_match(rest, &["--scope", "user"]) =>
                {
                    &rest[2]
                }
                _ => {
                    return Err(unexpected(
                        line,
                        "`claude mcp remove` has a shape this installer does not know",
                    ));
                }
            };
            let name = literal(name, "the MCP server name to remove")?.to_string();
            if !self.removed_names.contains(&name) {
                self.removed_names.push(name);
            }
            return Ok(());
        }
        if args_match(args, &["plugin", "marketplace", "add"]) {
            let rest = &args[3..];
            let url = match rest.len() {
                1 => &rest[0],
                3 if args_match(rest, &["--scope", "user"]) => &rest[2],
                _ => {
                    return Err(unexpected(
                        line,
                        "`claude plugin marketplace add` has a shape this installer does not know",
                    ));
                }
            };
            let url = literal(url, "the marketplace URL")?.to_string();
            return set_once(&mut self.clone_url, url, line, "this marketplace URL");
        }
        if args_match(args, &["plugin", "marketplace", "remove"]) {
            let rest = &args[3..];
            let name = match rest.len() {
                1 => &rest[0],
                3 if args_match(rest, &["--scope", "user"]) => &rest[2],
                _ => {
                    return Err(unexpected(
                        line,
                        "`claude plugin marketplace remove` has a shape this installer does not know",
                    ));
                }
            };
            let name = literal(name, "the marketplace name")?.to_string();
            self.marketplace_names.push((name, line));
            return Ok(());
        }
        if args_match(args, &["plugin", "install"]) {
            let rest = &args[2..];
            let reference = match rest.len() {
                1 => &rest[0],
                3 if args_match(rest, &["--scope", "user"]) => &rest[2],
                _ => {
                    return Err(unexpected(
                        line,
                        "`claude plugin install` has a shape this installer does not know",
                    ));
                }
            };
            let reference = literal(reference, "the plugin to install")?.to_string();
            if !self.plugin_refs.iter().any(|(r, _)| *r == reference) {
                self.plugin_refs.push((reference, line));
            }
            return Ok(());
        }
        tracing::debug!(line, "ignoring a `claude` call that sets nothing up");
        Ok(())
    }

    fn assignment(&mut self, word: &Word) -> Result<(), ScriptError> {
        let name = word.name().expect("only assignments are passed");
        let line = word.line;
        if !name.starts_with("ARCHESTRA_") {
            return Ok(());
        }
        let value = || -> Result<String, ScriptError> {
            if word.literal {
                Ok(word.value().to_string())
            } else {
                Err(unexpected(
                    line,
                    format!(
                        "the value of `{name}` is not a plain quoted value (it would need the shell to expand it)"
                    ),
                ))
            }
        };
        if let Some(key) = name.strip_prefix("ARCHESTRA_SET_ENV_") {
            if !ANTHROPIC_KEYS.contains(&key) && !BEDROCK_KEYS.contains(&key) {
                return Err(unexpected(
                    line,
                    format!(
                        "the script sets the env key `{key}`, which this installer does not know"
                    ),
                ));
            }
            let value = value()?;
            if let Some((_, _, first)) = self
                .set_env
                .iter()
                .find(|(k, v, _)| k == key && *v != value)
            {
                return Err(ScriptError::Conflict {
                    line,
                    what: format!("the value of `{key}` differs from the one on line {first}"),
                });
            }
            self.set_env.push((key.to_string(), value, line));
            return Ok(());
        }
        match name {
            "ARCHESTRA_REMOVE_VIRTUAL_KEY_ENV" => {
                let keys: Vec<String> = value()?
                    .split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(str::to_string)
                    .collect();
                if let Some(key) = keys.iter().find(|k| !REMOVABLE_KEYS.contains(&k.as_str())) {
                    let shown: String = key
                        .chars()
                        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .take(40)
                        .collect();
                    return Err(unexpected(
                        line,
                        format!(
                            "the script asks to remove the env key `{shown}`, which this installer does not know"
                        ),
                    ));
                }
                set_once(
                    &mut self.remove_env,
                    keys,
                    line,
                    "the list of env keys to remove",
                )
            }
            "ARCHESTRA_APPEND_ANTHROPIC_CUSTOM_HEADERS" => {
                // The script indents its env block, and with it the value's later lines.
                let lines: Vec<String> = value()?
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect();
                set_once(&mut self.headers, lines, line, "the custom header lines")
            }
            "ARCHESTRA_MCP_NAME" => {
                set_once(&mut self.mcp_name, value()?, line, "the MCP server name")
            }
            "ARCHESTRA_MCP_LEGACY_NAMES" => {
                let names: Vec<String> = serde_json::from_str(&value()?).map_err(|_| {
                    unexpected(
                        line,
                        "`ARCHESTRA_MCP_LEGACY_NAMES` is not a JSON list of names",
                    )
                })?;
                set_once(&mut self.legacy_names, names, line, "the legacy MCP names")
            }
            "ARCHESTRA_MARKETPLACE_NAME" => {
                self.marketplace_names.push((value()?, line));
                Ok(())
            }
            "ARCHESTRA_MARKETPLACE_URL" => {
                set_once(&mut self.clone_url, value()?, line, "this marketplace URL")
            }
            _ => {
                tracing::debug!(line, name, "ignoring an assignment that sets nothing up");
                Ok(())
            }
        }
    }

    fn comment(&mut self, text: &str, line: usize) -> Result<(), ScriptError> {
        let Some(encoded) = text.strip_prefix("# archestra-ending:") else {
            return Ok(());
        };
        let bad = |what: &str| ScriptError::BadEnding {
            line,
            what: what.into(),
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| bad("is not base64"))?;
        let raw: RawEnding =
            serde_json::from_slice(&bytes).map_err(|_| bad("does not hold the expected JSON"))?;
        let command = |c: Option<RawCommand>| -> Result<Option<Vec<String>>, ScriptError> {
            match c.and_then(|c| c.command) {
                None => Ok(None),
                Some(words) if words.first().is_some_and(|w| w == "claude") => Ok(Some(words)),
                Some(_) => Err(bad("names a command other than `claude`")),
            }
        };
        let ending = Ending {
            app_name: raw.app_name,
            sign_in: command(raw.sign_in)?,
            launch: command(raw.launch)?,
        };
        set_once(&mut self.ending, ending, line, "this ending")
    }

    fn into_payload(self) -> Result<SetupPayload, ScriptError> {
        let app_name = self
            .ending
            .as_ref()
            .and_then(|(e, _)| e.app_name.clone())
            .unwrap_or_else(|| DEFAULT_APP_NAME.to_string());

        let mcp = self.mcp_section()?;
        let proxy = self.proxy_section()?;
        let skills = self.skills_section()?;
        if mcp.is_none() && proxy.is_none() && skills.is_none() {
            return Err(ScriptError::Nothing);
        }
        Ok(SetupPayload {
            client_id: CLIENT_ID_CLAUDE_CODE.to_string(),
            app_name,
            mcp,
            proxy,
            skills,
            health_url: None,
        })
    }

    fn mcp_section(&self) -> Result<Option<McpSection>, ScriptError> {
        let Some(((name, url), line)) = &self.mcp else {
            if let Some((_, line)) = &self.mcp_name {
                return Err(unexpected(
                    *line,
                    "the script names an MCP server but never registers it with `claude mcp add`",
                ));
            }
            return Ok(None);
        };
        if let Some((other, other_line)) = &self.mcp_name
            && other != name
        {
            return Err(ScriptError::Conflict {
                line: *other_line,
                what: format!(
                    "`ARCHESTRA_MCP_NAME` differs from the name registered on line {line}"
                ),
            });
        }
        let mut legacy = Vec::new();
        let listed = self.legacy_names.iter().flat_map(|(names, _)| names.iter());
        for old in listed.chain(self.removed_names.iter()) {
            if old != name && !legacy.contains(old) {
                legacy.push(old.clone());
            }
        }
        Ok(Some(McpSection {
            server_name: name.clone(),
            url: url.clone(),
            legacy_server_names: legacy,
        }))
    }

    fn env(&self, key: &str) -> Option<&str> {
        self.set_env
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, _)| v.as_str())
    }

    fn proxy_section(&self) -> Result<Option<ProxySection>, ScriptError> {
        let Some((_, _, line)) = self.set_env.first() else {
            if let Some((_, line)) = &self.headers {
                return Err(unexpected(
                    *line,
                    "the script adds custom header lines but points Claude Code at no proxy",
                ));
            }
            return Ok(None);
        };
        let line = *line;
        let anthropic = self
            .set_env
            .iter()
            .any(|(k, _, _)| ANTHROPIC_KEYS.contains(&k.as_str()));
        let bedrock = self
            .set_env
            .iter()
            .any(|(k, _, _)| BEDROCK_KEYS.contains(&k.as_str()));
        if anthropic && bedrock {
            return Err(unexpected(
                line,
                "the script mixes Anthropic and Bedrock proxy settings",
            ));
        }
        let missing = |key: &str| {
            unexpected(
                line,
                format!("the script sets up the LLM proxy without `{key}`"),
            )
        };
        let (provider, url, virtual_key) = if bedrock {
            if self.env("CLAUDE_CODE_USE_BEDROCK") != Some("1") {
                return Err(unexpected(
                    line,
                    "the script sets up Bedrock without `CLAUDE_CODE_USE_BEDROCK=1`",
                ));
            }
            if let Some(region) = self.env("AWS_REGION")
                && (region.is_empty()
                    || region.len() > 32
                    || !region
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
            {
                return Err(unexpected(line, "`AWS_REGION` is not a region name"));
            }
            let url = self
                .env("ANTHROPIC_BEDROCK_BASE_URL")
                .ok_or_else(|| missing("ANTHROPIC_BEDROCK_BASE_URL"))?;
            (Provider::Bedrock, url, self.env("AWS_BEARER_TOKEN_BEDROCK"))
        } else {
            let url = self
                .env("ANTHROPIC_BASE_URL")
                .ok_or_else(|| missing("ANTHROPIC_BASE_URL"))?;
            (Provider::Anthropic, url, self.env("ANTHROPIC_AUTH_TOKEN"))
        };

        let mut passthrough: Option<String> = None;
        if let Some((lines, headers_line)) = &self.headers {
            for header in lines {
                let (name, value) = header.split_once(':').unwrap_or((header, ""));
                let (name, value) = (name.trim(), value.trim());
                if name.eq_ignore_ascii_case(AGENT_ID_HEADER) {
                    if value != CLAUDE_CODE_AGENT_ID {
                        return Err(unexpected(
                            *headers_line,
                            format!(
                                "the `{AGENT_ID_HEADER}` header line is not `{CLAUDE_CODE_AGENT_ID}`"
                            ),
                        ));
                    }
                } else if name.eq_ignore_ascii_case(VIRTUAL_KEY_HEADER) {
                    if passthrough.as_deref().is_some_and(|p| p != value) {
                        return Err(ScriptError::Conflict {
                            line: *headers_line,
                            what: format!("two `{VIRTUAL_KEY_HEADER}` header lines differ"),
                        });
                    }
                    passthrough = Some(value.to_string());
                } else {
                    let shown: String = name
                        .chars()
                        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                        .take(40)
                        .collect();
                    return Err(unexpected(
                        *headers_line,
                        format!("the custom header line `{shown}` is not one of Archestra's"),
                    ));
                }
            }
        }

        Ok(Some(ProxySection {
            auth_mode: if virtual_key.is_some() {
                AuthMode::VirtualKey
            } else {
                AuthMode::ProviderKey
            },
            provider,
            url: url.to_string(),
            virtual_key: virtual_key.map(Secret::new),
            virtual_key_name: None,
            passthrough_virtual_key: passthrough.map(Secret::new),
        }))
    }

    fn skills_section(&self) -> Result<Option<SkillsSection>, ScriptError> {
        let Some((clone_url, url_line)) = &self.clone_url else {
            if let Some((_, line)) = self.plugin_refs.first() {
                return Err(unexpected(
                    *line,
                    "the script installs a plugin but adds no marketplace",
                ));
            }
            return Ok(None);
        };

        // The marketplace's name: from its own variable, its removal, or the plugin refs;
        // every source must agree.
        let mut name: Option<(String, usize)> = None;
        for (candidate, line) in &self.marketplace_names {
            set_once(&mut name, candidate.clone(), *line, "the marketplace name")?;
        }
        let mut refs = Vec::new();
        for (reference, line) in &self.plugin_refs {
            let Some((plugin, market)) = reference.split_once('@') else {
                return Err(unexpected(
                    *line,
                    "a plugin to install is not written `<plugin>@<marketplace>`",
                ));
            };
            set_once(&mut name, market.to_string(), *line, "the marketplace name")?;
            refs.push(plugin.to_string());
        }
        let Some((name, _)) = name else {
            return Err(unexpected(
                *url_line,
                "the script adds a marketplace but never names it",
            ));
        };
        let has_skills = refs.contains(&name);
        let plugin_names = refs.into_iter().filter(|p| *p != name).collect();
        Ok(Some(SkillsSection {
            clone_url: Secret::new(clone_url.clone()),
            marketplace_name: name,
            has_skills,
            plugin_names,
        }))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEnding {
    #[serde(default)]
    app_name: Option<String>,
    #[serde(default)]
    sign_in: Option<RawCommand>,
    #[serde(default)]
    launch: Option<RawCommand>,
}

#[derive(Deserialize)]
struct RawCommand {
    #[serde(default)]
    command: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<Vec<(String, bool)>> {
        split_commands(Lexer::new(text).run().unwrap())
            .into_iter()
            .filter_map(|item| match item {
                Item::Command(words) => Some(
                    words
                        .into_iter()
                        .map(|w| (w.text, w.literal))
                        .collect::<Vec<_>>(),
                ),
                Item::Comment { .. } => None,
            })
            .collect()
    }

    #[test]
    fn single_quotes_keep_everything_literal_and_join_escaped_quotes() {
        let cmds = words("echo 'a'\\''b' '$(touch /tmp/x)' 'line\nbreak'\n");
        assert_eq!(
            cmds,
            vec![vec![
                ("echo".into(), true),
                ("a'b".into(), true),
                ("$(touch /tmp/x)".into(), true),
                ("line\nbreak".into(), true),
            ]]
        );
    }

    #[test]
    fn expansions_make_a_word_non_literal() {
        for text in [
            "x=$HOME",
            "x=\"$(id)\"",
            "x=`id`",
            "x=${A:-b}",
            "x=$'\\e'",
            "x=*",
        ] {
            let cmds = words(text);
            let word = cmds
                .iter()
                .flatten()
                .find(|(t, _)| t.starts_with("x="))
                .unwrap();
            assert!(!word.1, "{text} came out literal");
        }
    }

    #[test]
    fn a_command_inside_a_substitution_is_seen() {
        let cmds = words("if ! out=\"$( cli claude plugin install 'a@b' )\"; then\n  :\nfi\n");
        assert!(cmds.iter().any(|c| {
            c.iter()
                .map(|(t, _)| t.as_str())
                .eq(["cli", "claude", "plugin", "install", "a@b"])
        }));
    }

    #[test]
    fn heredoc_bodies_and_redirections_are_skipped() {
        let text = "python3 - <<'PY' >/dev/null 2>&1\nclaude mcp add x y\nPY\ncat <<-EOF\n\tclaude\n\tEOF\nnext 'arg'\n";
        let cmds = words(text);
        let flat: Vec<Vec<&str>> = cmds
            .iter()
            .map(|c| c.iter().map(|(t, _)| t.as_str()).collect())
            .collect();
        assert_eq!(
            flat,
            vec![vec!["python3", "-"], vec!["cat"], vec!["next", "arg"]]
        );
    }

    #[test]
    fn unterminated_quotes_and_heredocs_are_refused_with_their_line() {
        for (text, line) in [
            ("#!/bin/bash\necho ok\necho 'never\n", 3),
            ("#!/bin/bash\ncat <<'X'\nbody\n", 2),
            ("#!/bin/bash\n\necho \"open\n", 3),
            ("#!/bin/bash\nx=$(echo\n", 2),
        ] {
            match Lexer::new(text).run() {
                Err(ScriptError::Syntax { line: l, .. }) => assert_eq!(l, line, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn refuses_text_that_is_not_a_bash_script() {
        assert_eq!(
            parse_setup_script("<html><body>Sign in</body></html>"),
            Err(ScriptError::NotBash)
        );
        assert_eq!(
            parse_setup_script("$ErrorActionPreference = 'Stop'\nWrite-Host 'hi'\n"),
            Err(ScriptError::PowerShell)
        );
        assert_eq!(
            parse_setup_script("#!/usr/bin/env python3\nprint(1)\n"),
            Err(ScriptError::NotBash)
        );
        assert_eq!(
            parse_setup_script("#!/usr/bin/env bash\necho hello\n"),
            Err(ScriptError::Nothing)
        );
        assert_eq!(
            parse_setup_script("#!/bin/bash\n\0"),
            Err(ScriptError::NotText)
        );
        let huge = format!("#!/bin/bash\n{}", "#\n".repeat(MAX_SCRIPT_BYTES));
        assert!(matches!(
            parse_setup_script(&huge),
            Err(ScriptError::TooLarge { .. })
        ));
        let long = format!("#!/bin/bash\n{}", "\n".repeat(MAX_SCRIPT_LINES + 1));
        assert!(matches!(
            parse_setup_script(&long),
            Err(ScriptError::TooManyLines { .. })
        ));
    }
}
