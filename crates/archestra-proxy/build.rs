// The same `--version` commit as the installer's: see the workspace root's build.rs.
include!("../../build.rs");
