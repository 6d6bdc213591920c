//! What every command returns, and the one JSON object `--output json`
//! prints for it: `ok`, and the report's own fields (or, for an error,
//! `ok: false`, the message and the exit code).

use std::fmt::Display;

use serde::Serialize;

use crate::error::Error;

/// A command's result: its JSON form (`Serialize`), its text form
/// (`Display`), and its exit code.
pub trait Report: Serialize + Display {
    /// 0, or 1 for a command that ran to its end and reports a failure
    /// (tests that failed).
    fn exit_code(&self) -> u8 {
        0
    }
}

#[derive(Serialize)]
struct Envelope<'a, R> {
    ok: bool,
    #[serde(flatten)]
    report: &'a R,
}

/// The report as the one JSON object of `--output json`.
pub fn json<R: Report>(report: &R) -> String {
    let envelope = Envelope {
        ok: report.exit_code() == 0,
        report,
    };
    serde_json::to_string(&envelope).expect("a report serializes")
}

/// An error as the one JSON object of `--output json`.
pub fn error_json(err: &Error) -> String {
    serde_json::json!({
        "ok": false,
        "kind": err.kind_name(),
        "error": err.to_string(),
        "exit_code": err.kind().exit_code(),
    })
    .to_string()
}

/// The keys of a report's JSON object, sorted (for the tests that pin them).
#[cfg(test)]
pub(crate) fn keys<R: Report>(report: &R) -> Vec<String> {
    let value: serde_json::Value = serde_json::from_str(&json(report)).unwrap();
    let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_carries_its_kind_message_and_exit_code() {
        let err = Error::Locked {
            scope: "prod1".into(),
            holder: "deploy run r".into(),
            expires_in: std::time::Duration::from_secs(5),
        };
        let json: serde_json::Value = serde_json::from_str(&error_json(&err)).unwrap();
        assert_eq!(json["ok"], false);
        assert_eq!(json["kind"], "lock_held");
        assert_eq!(json["exit_code"], 3);
        assert!(json["error"].as_str().unwrap().contains("prod1 is locked"));
    }
}
