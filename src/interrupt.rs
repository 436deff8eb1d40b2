//! Ctrl-C: before any change it ends the program at once; while setup or revert is changing
//! files it is noted, the step in progress finishes, and the command stops between steps,
//! so the state record stays truthful and says how to go on.

use std::io::Write;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

static APPLYING: AtomicBool = AtomicBool::new(false);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

/// Install the Ctrl-C handler; calling it again does nothing.
pub fn install() {
    INSTALL.call_once(|| {
        let result = ctrlc::set_handler(|| {
            if APPLYING.load(Ordering::SeqCst) {
                INTERRUPTED.store(true, Ordering::SeqCst);
                let _ = writeln!(
                    std::io::stderr(),
                    "\nStopping after the current step, so that nothing is left half done…"
                );
            } else {
                let _ = writeln!(std::io::stderr(), "\nInterrupted; nothing was changed.");
                std::process::exit(crate::exit::INTERRUPTED);
            }
        });
        if let Err(e) = result {
            tracing::debug!(error = %e, "could not install the Ctrl-C handler");
        }
    });
}

/// Mark the start (or end) of the part where an interruption must wait for a step to end.
pub fn set_applying(applying: bool) {
    APPLYING.store(applying, Ordering::SeqCst);
}

/// Tell whether Ctrl-C was pressed while changes were being applied.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
