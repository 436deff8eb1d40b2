//! SIGTERM in the middle of load on the `serve` binary: every answered LLM request keeps its
//! usage row, and no setup token is redeemed twice across the restart that follows.

use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use archestra_proxy::{Store, TokenState};
use archestra_wire::{AuthMode, SETUP_SCRIPT_PATH};

use crate::common::*;
use crate::process::{ServeProcess, run, text};
use crate::upstream::{MockUpstream, wait_until};

/// Threads sending LLM requests.
const SENDERS: usize = 4;
/// Threads redeeming setups.
const REDEEMERS: usize = 2;
/// Setups minted before the first start.
const TOKENS: usize = 100;
/// Answered LLM requests and attempted redemptions that must happen before SIGTERM.
const ANSWERED_BEFORE_SIGTERM: usize = 100;
const ATTEMPTED_BEFORE_SIGTERM: usize = 25;

/// What the first attempt at a token brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FirstTry {
    NotTried,
    Redeemed,
    NoAnswer,
}

/// Everything the load threads share.
#[derive(Default)]
struct Load {
    /// Set just before SIGTERM; a failed request is only acceptable after it.
    stopping: AtomicBool,
    /// Agent ids of the LLM requests that got a whole answer.
    answered: Mutex<Vec<String>>,
    /// Indexes of the tokens not tried yet.
    untried: Mutex<VecDeque<usize>>,
    attempted: AtomicUsize,
    first_tries: Mutex<Vec<FirstTry>>,
}

/// Return the status and the whole body, or the error that kept either from arriving.
fn whole_answer(
    sent: reqwest::Result<reqwest::blocking::Response>,
) -> reqwest::Result<(reqwest::StatusCode, String)> {
    let response = sent?;
    let status = response.status();
    Ok((status, response.text()?))
}

/// Send LLM requests to `origin` until one fails after SIGTERM; panic if one fails before.
fn send_llm_requests(load: &Load, origin: &str, key: &str, sender: usize) {
    let client = client();
    for n in 0.. {
        let agent = format!("load-{sender}-{n}");
        let result = client
            .post(format!("{origin}/v1/anthropic/v1/messages?mode=json"))
            .header("x-api-key", "sk-ant-api03-the-users-own-key")
            .header("X-Archestra-Virtual-Key", key)
            .header("X-Archestra-Agent-Id", &agent)
            .body(r#"{"model":"claude-mock","max_tokens":16,"messages":[]}"#)
            .send();
        let result = whole_answer(result);
        match result {
            Ok((status, body)) => {
                assert_eq!(status, 200, "{body}");
                assert!(body.contains("msg_json"), "{body}");
                load.answered.lock().unwrap().push(agent);
            }
            Err(err) => {
                assert!(
                    load.stopping.load(Ordering::SeqCst),
                    "a request failed before SIGTERM: {err}"
                );
                return;
            }
        }
    }
}

/// Redeem untried tokens at `origin` until one gets no answer after SIGTERM.
fn redeem_tokens(load: &Load, origin: &str, tokens: &[String]) {
    let client = client();
    loop {
        let Some(index) = load.untried.lock().unwrap().pop_front() else {
            return;
        };
        load.attempted.fetch_add(1, Ordering::SeqCst);
        let url = format!("{origin}{SETUP_SCRIPT_PATH}{}", tokens[index]);
        let outcome = client
            .get(&url)
            .header("Accept", "application/json")
            .header("X-Archestra-Device-Name", "box")
            .send();
        let outcome = whole_answer(outcome);
        match outcome {
            Ok((status, body)) => {
                assert_eq!(status, 200, "a first redemption was refused: {body}");
                load.first_tries.lock().unwrap()[index] = FirstTry::Redeemed;
            }
            Err(err) => {
                assert!(
                    load.stopping.load(Ordering::SeqCst),
                    "a redemption failed before SIGTERM: {err}"
                );
                load.first_tries.lock().unwrap()[index] = FirstTry::NoAnswer;
                return;
            }
        }
        // Leave tokens for the shutdown and the restart.
        thread::sleep(Duration::from_millis(25));
    }
}

/// Return the agent ids of every row in the usage log, read with `logs --json`.
fn logged_agents(scratch: &Scratch, db: &Path) -> Vec<String> {
    let output = run(
        scratch,
        &[
            "logs",
            "--json",
            "--limit",
            "1000000",
            "--db",
            db.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    rows.iter()
        .map(|row| row["agentId"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn sigterm_under_load_loses_no_answered_request_and_redeems_no_token_twice() {
    let scratch = Scratch::new();
    let db = scratch.db();
    let upstream = MockUpstream::start();
    let key = new_key(&db, "ada@example.com", AuthMode::ProviderKey);
    let tokens: Vec<String> = (0..TOKENS)
        .map(|_| {
            token_of(&mint(
                &db,
                &request("bob@example.com"),
                "http://127.0.0.1:9",
            ))
        })
        .collect();
    let load = Arc::new(Load {
        untried: Mutex::new((0..TOKENS).collect()),
        first_tries: Mutex::new(vec![FirstTry::NotTried; TOKENS]),
        ..Load::default()
    });
    let upstream_flag = ["--upstream", upstream.origin.as_str()];
    let first = ServeProcess::start_with(&scratch, &db, "first", &upstream_flag);

    // Load from several threads, then SIGTERM in the middle of it.
    let mut threads = Vec::new();
    for sender in 0..SENDERS {
        let (load, origin, key) = (Arc::clone(&load), first.origin.clone(), key.clone());
        threads.push(thread::spawn(move || {
            send_llm_requests(&load, &origin, &key, sender)
        }));
    }
    for _ in 0..REDEEMERS {
        let (load, origin, tokens) = (Arc::clone(&load), first.origin.clone(), tokens.clone());
        threads.push(thread::spawn(move || {
            redeem_tokens(&load, &origin, &tokens)
        }));
    }
    wait_until("enough load before SIGTERM", || {
        load.answered.lock().unwrap().len() >= ANSWERED_BEFORE_SIGTERM
            && load.attempted.load(Ordering::SeqCst) >= ATTEMPTED_BEFORE_SIGTERM
    });
    load.stopping.store(true, Ordering::SeqCst);
    let (exit, output) = first.terminate();
    assert!(exit.success(), "{exit:?}\n{output}");
    for thread in threads {
        thread.join().unwrap();
    }

    // Every answered request has its row.
    let answered = load.answered.lock().unwrap().clone();
    let logged: HashSet<String> = logged_agents(&scratch, &db).into_iter().collect();
    let missing: Vec<&String> = answered.iter().filter(|a| !logged.contains(*a)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered requests have no usage row: {missing:?}",
        missing.len(),
        answered.len()
    );

    // A token whose redemption was answered is used; one whose answer was lost is used or
    // not, and either way the store says which.
    let first_tries = load.first_tries.lock().unwrap().clone();
    let store = Store::open(&db).unwrap();
    let states: Vec<TokenState> = tokens
        .iter()
        .map(|token| store.token_state(token).unwrap())
        .collect();
    for (first_try, state) in first_tries.iter().zip(&states) {
        match first_try {
            FirstTry::Redeemed => assert_eq!(*state, TokenState::Used),
            FirstTry::NotTried => assert_eq!(*state, TokenState::Unused),
            FirstTry::NoAnswer => {
                assert!(matches!(state, TokenState::Used | TokenState::Unused))
            }
        }
    }
    drop(store);

    // Start again on the same database and try every token once more: a used token, even
    // one whose answer was lost, is refused; an unused one is redeemed now.
    let second = ServeProcess::start_with(&scratch, &db, "second", &upstream_flag);
    let client = client();
    for (token, state) in tokens.iter().zip(&states) {
        let url = format!("{}{SETUP_SCRIPT_PATH}{token}", second.origin);
        let expected = match state {
            TokenState::Used => 410,
            _ => 200,
        };
        assert_eq!(redeem(&client, &url, "box").status(), expected);
    }
    let after_restart = client
        .post(format!("{}/v1/anthropic/v1/messages", second.origin))
        .header("x-api-key", "sk-ant-api03-the-users-own-key")
        .header("X-Archestra-Virtual-Key", &key)
        .header("X-Archestra-Agent-Id", "after-restart")
        .body(r#"{"model":"claude-mock","max_tokens":16,"messages":[]}"#)
        .send()
        .unwrap();
    assert_eq!(after_restart.status(), 200);
    let (exit, output) = second.terminate();
    assert!(exit.success(), "{exit:?}\n{output}");

    // One key per token, none twice.
    let keys = Store::open(&db)
        .unwrap()
        .list_keys(Some("bob@example.com"))
        .unwrap();
    assert_eq!(keys.len(), TOKENS);
    let setups: HashSet<i64> = keys.iter().map(|key| key.setup_id).collect();
    assert_eq!(setups.len(), TOKENS);
    let logged = logged_agents(&scratch, &db);
    assert!(logged.iter().any(|agent| agent == "after-restart"));

    let count = |wanted: FirstTry| first_tries.iter().filter(|t| **t == wanted).count();
    eprintln!(
        "answered before and during SIGTERM: {}; usage rows: {}; tokens redeemed before the restart: {}, answer lost: {} (used {}), left for the restart: {}",
        answered.len(),
        logged.len(),
        count(FirstTry::Redeemed),
        count(FirstTry::NoAnswer),
        first_tries
            .iter()
            .zip(&states)
            .filter(|(t, s)| **t == FirstTry::NoAnswer && **s == TokenState::Used)
            .count(),
        count(FirstTry::NotTried),
    );
}
