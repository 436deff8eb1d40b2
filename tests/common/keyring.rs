//! A real Secret Service for tests: a private D-Bus session bus with an unlocked
//! gnome-keyring on it, both ended when the value is dropped.
//!
//! `scripts/test.sh` installs `dbus-daemon` and `gnome-keyring`; without them this panics
//! with a message saying so, rather than skipping.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct KeyringSession {
    pub address: String,
    pub runtime_dir: PathBuf,
    bus_pid: u32,
}

impl KeyringSession {
    /// Start a bus and an unlocked keyring whose files live under `home`.
    pub fn start(home: &Path, dir: &Path) -> KeyringSession {
        let runtime_dir = dir.join("run");
        std::fs::create_dir_all(&runtime_dir).unwrap();
        std::fs::set_permissions(
            &runtime_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let out = Command::new("dbus-daemon")
            .args(["--session", "--fork", "--print-address=1", "--print-pid=1"])
            .arg(format!(
                "--address=unix:path={}",
                runtime_dir.join("bus").display()
            ))
            .stdin(Stdio::null())
            .output()
            .expect("dbus-daemon is missing: run scripts/test.sh, which installs it");
        assert!(
            out.status.success(),
            "dbus-daemon failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut lines = text.lines();
        let address = lines.next().expect("bus address").trim().to_string();
        let bus_pid: u32 = lines.next().expect("bus pid").trim().parse().unwrap();
        let session = KeyringSession {
            address,
            runtime_dir,
            bus_pid,
        };

        let mut unlock = Command::new("gnome-keyring-daemon")
            .args(["--unlock", "--components=secrets", "--daemonize"])
            .envs(session.env())
            .env("HOME", home)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gnome-keyring-daemon is missing: run scripts/test.sh, which installs it");
        use std::io::Write;
        unlock
            .stdin
            .take()
            .unwrap()
            .write_all(b"test-password")
            .unwrap();
        assert!(
            unlock.wait().unwrap().success(),
            "gnome-keyring-daemon did not start"
        );
        session
    }

    /// The environment a process needs to reach this keyring.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("DBUS_SESSION_BUS_ADDRESS".into(), self.address.clone()),
            (
                "XDG_RUNTIME_DIR".into(),
                self.runtime_dir.display().to_string(),
            ),
        ]
    }
}

impl Drop for KeyringSession {
    fn drop(&mut self) {
        // The keyring daemon leaves with its bus.
        let _ = Command::new("kill").arg(self.bus_pid.to_string()).status();
    }
}
