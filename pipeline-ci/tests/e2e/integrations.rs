//! The CI integrations (CircleCI orb, GitHub Action, Jenkins step) are valid:
//! `integrations/validate.sh` checks them against check-jsonschema's vendored
//! schemas and runs every `pipeline` invocation of their examples through the
//! binary's argument parser. Offline: no moto, no network.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn ci_integrations_validate() {
    let root = pipeline_fixtures::moto::workspace();
    // check-jsonschema and PyYAML live in the venv next to moto's Python.
    let python = std::env::var_os("PIPELINE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    let venv_bin = python.parent().expect("PIPELINE_PYTHON is a path");
    let path = std::env::join_paths(std::iter::once(venv_bin.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let out = Command::new("bash")
        .arg(root.join("integrations/validate.sh"))
        .env("PIPELINE_BIN", env!("CARGO_BIN_EXE_pipeline"))
        .env("PATH", path)
        .output()
        .expect("bash runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(
        out.status.success(),
        "integrations/validate.sh failed ({}); run `make venv` if check-jsonschema is missing:\n{stdout}\n{stderr}",
        out.status
    );
}
