//! `install/install.sh` and what it installs: both binaries, completions for three shells and
//! man pages, into a temporary prefix, from the binaries this test run built.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{mode, root, show};

/// A folder holding both binaries as built for this test run.
///
/// The installer's binary is this package's. The companion's is the one `cargo nextest run
/// --workspace` built beside it for the companion's own tests; only when it is missing (this
/// file run alone) is it built here, which takes a while: built alone, the package resolves its
/// dependencies' features differently from the workspace build and shares none of its work.
fn built_binaries(into: &Path) -> PathBuf {
    let connect = PathBuf::from(env!("CARGO_BIN_EXE_archestra-connect"));
    let target = connect.parent().unwrap();
    if !target.join("archestra-proxy").is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = Command::new(cargo)
            .current_dir(root())
            .args(["build", "--quiet", "-p", "archestra-proxy", "--bin"])
            .arg("archestra-proxy")
            .env("CARGO_TARGET_DIR", target.parent().unwrap())
            .output()
            .unwrap();
        assert!(built.status.success(), "{}", show(&built));
    }
    let from = into.join("from");
    fs::create_dir_all(&from).unwrap();
    for program in ["archestra-connect", "archestra-proxy"] {
        fs::copy(target.join(program), from.join(program)).unwrap();
    }
    from
}

fn install(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(root().join("install/install.sh"))
        .args(args)
        .env("HOME", home)
        .env("PATH", std::env::var("PATH").unwrap())
        .output()
        .unwrap()
}

/// Run install.sh with `--prefix prefix --from from`.
fn install_from(home: &Path, prefix: &Path, from: &Path) -> std::process::Output {
    let (prefix, from) = (prefix.to_str().unwrap(), from.to_str().unwrap());
    install(home, &["--prefix", prefix, "--from", from])
}

#[test]
fn install_sh_puts_binaries_completions_and_man_pages_under_the_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let from = built_binaries(dir.path());
    let prefix = dir.path().join("prefix");
    let out = install_from(dir.path(), &prefix, &from);
    assert!(out.status.success(), "{}", show(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("is not on your PATH"), "{said}");

    for program in ["archestra-connect", "archestra-proxy"] {
        let bin = prefix.join("bin").join(program);
        assert_eq!(mode(&bin), 0o755, "{}", bin.display());
        let version = Command::new(&bin).arg("--version").output().unwrap();
        assert!(version.status.success(), "{}", show(&version));
        let version = String::from_utf8_lossy(&version.stdout).into_owned();
        // The commit the binary was built from, for bug reports.
        assert!(
            version.starts_with(&format!("{program} 0.")) && version.contains(" ("),
            "{version}"
        );

        let bash = prefix
            .join("share/bash-completion/completions")
            .join(program);
        let zsh = prefix
            .join("share/zsh/site-functions")
            .join(format!("_{program}"));
        let fish = prefix
            .join("share/fish/vendor_completions.d")
            .join(format!("{program}.fish"));
        for script in [&bash, &zsh, &fish] {
            let text = fs::read_to_string(script).unwrap();
            assert!(text.contains(program), "{}", script.display());
        }
        // The bash script must at least parse, and define completion for the program.
        let checked = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "set -e; source '{}'; complete -p {program}",
                bash.display()
            ))
            .output()
            .unwrap();
        assert!(checked.status.success(), "{}", show(&checked));
        assert!(
            fs::read_to_string(&zsh)
                .unwrap()
                .starts_with(&format!("#compdef {program}"))
        );

        let page = prefix.join("share/man/man1").join(format!("{program}.1"));
        let text = fs::read_to_string(&page).unwrap();
        assert!(text.starts_with(".ie \\n(.g .ds Aq"), "{text}");
        assert!(text.contains(&format!(".TH {program} 1")), "{text}");
    }
    let man = prefix.join("share/man/man1");
    for page in [
        "archestra-connect-setup.1",
        "archestra-connect-revert.1",
        "archestra-connect-status.1",
        "archestra-proxy-serve.1",
        "archestra-proxy-setups.1",
        "archestra-proxy-keys.1",
    ] {
        assert!(man.join(page).is_file(), "{page} missing");
    }
    // Hidden commands and clap's `help` get no page.
    for page in ["archestra-connect-manpages.1", "archestra-connect-help.1"] {
        assert!(!man.join(page).exists(), "{page} should not be there");
    }
    let setup_page = fs::read_to_string(man.join("archestra-connect-setup.1")).unwrap();
    assert!(setup_page.contains("\\-\\-yes"), "{setup_page}");

    // Running it again replaces what it installed.
    let again = install_from(dir.path(), &prefix, &from);
    assert!(again.status.success(), "{}", show(&again));
}

#[test]
fn install_sh_refuses_unknown_flags_and_missing_binaries_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("prefix");

    let out = install(dir.path(), &["--frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown argument `--frobnicate`"));

    let empty = dir.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let out = install_from(dir.path(), &prefix, &empty);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is missing or not executable"));
    assert!(!prefix.exists());

    let help = install(dir.path(), &["--help"]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("--prefix DIR") && text.contains("--from DIR"),
        "{text}"
    );
    assert!(!text.contains("set -e"), "{text}");
}

#[test]
fn completions_end_quietly_when_the_reader_is_gone() {
    // As in `completions bash | head -1`, but certain: the pipe's reading end is closed
    // before the program writes, so its write fails with a broken pipe.
    let dir = tempfile::tempdir().unwrap();
    let proxy = built_binaries(dir.path()).join("archestra-proxy");
    for program in [Path::new(env!("CARGO_BIN_EXE_archestra-connect")), &proxy] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(program)
            .args(["completions", "bash"])
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let name = program.display();
        assert!(out.status.success(), "{name}: {}", show(&out));
        assert!(out.stderr.is_empty(), "{name}: {}", show(&out));
    }
}
