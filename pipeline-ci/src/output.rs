//! What a step prints: one result on stdout (its text, or the single JSON
//! object of `--output json`), progress and errors on stderr, and the exit
//! code (the report's, or the error kind's).

use std::process::ExitCode;

use pipeline_core::Error;
use pipeline_core::session::{self, Report};

use crate::cli::OutputFormat;

/// Prints a command's report; exits with its code.
pub fn report<R: Report>(format: OutputFormat, report: &R) -> ExitCode {
    let code = report.exit_code();
    crate::progress::finish(code == 0);
    match format {
        OutputFormat::Text => println!("{report}"),
        OutputFormat::Json => println!("{}", session::json(report)),
    }
    ExitCode::from(code)
}

/// Prints an error: always on stderr; in JSON mode also as the one result.
pub fn error(format: OutputFormat, err: &Error) -> ExitCode {
    crate::progress::finish(false);
    eprintln!("error: {err}");
    if format == OutputFormat::Json {
        println!("{}", session::error_json(err));
    }
    ExitCode::from(err.kind().exit_code())
}

/// Prints a JSON document (an IAM policy, a JSON Schema): indented (text)
/// or on one line (JSON).
pub fn document(format: OutputFormat, document: &serde_json::Value) -> ExitCode {
    crate::progress::finish(true);
    match format {
        OutputFormat::Text => println!(
            "{}",
            serde_json::to_string_pretty(document).unwrap_or_default()
        ),
        OutputFormat::Json => println!("{document}"),
    }
    ExitCode::SUCCESS
}
