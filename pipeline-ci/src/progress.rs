//! Progress on stderr that fits where it runs.
//!
//! On a terminal (and not in CI), each phase is a live spinner line with its
//! elapsed time, and a finished phase becomes a `✓` line with how long it
//! took. In CI (`CI` set, or stderr not a terminal) progress is plain
//! timestamped log lines with no control codes. `NO_COLOR` turns colour off;
//! `-v`/`-q` choose how much is shown. stdout (the result) is never touched.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{Cli, Command};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// The live spinner and the phase it shows, when there is one.
static LIVE: OnceLock<Live> = OnceLock::new();

struct Live {
    bar: ProgressBar,
    phase: Mutex<Option<(String, Instant)>>,
}

/// Sets up logging: live progress on a terminal for a stage (`live`),
/// plain lines elsewhere. `filter` is the tracing filter (from `-v`/`-q` or
/// `PIPELINE_LOG`).
pub fn init(filter: &str, live: bool) {
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
    let terminal = std::io::stderr().is_terminal();
    let color = terminal && std::env::var_os("NO_COLOR").is_none();
    if live && terminal && !ci {
        // Every check of a wait updates the live line.
        let filter = format!("{filter},{}=debug", pipeline_core::wait::PROGRESS);
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        let _ = LIVE.set(Live {
            bar,
            phase: Mutex::new(None),
        });
        tracing_subscriber::registry()
            .with(EnvFilter::new(&filter))
            .with(LiveLayer)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(color)
            .init();
    }
}

/// Ends the live display: the last phase is marked done (or failed) and the
/// spinner line is cleared, so the terminal is left clean. Called before the
/// result is printed; calling it again does nothing.
pub fn finish(succeeded: bool) {
    if let Some(live) = LIVE.get() {
        live.close_phase(if succeeded { "✓" } else { "✗" });
        live.bar.finish_and_clear();
    }
}

impl Live {
    fn close_phase(&self, mark: &str) {
        let mut phase = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((message, started)) = phase.take() {
            self.bar.println(format!(
                "{mark} {message} ({:.1}s)",
                started.elapsed().as_secs_f64()
            ));
        }
    }

    fn start_phase(&self, message: String) {
        self.close_phase("✓");
        self.bar.set_message(message.clone());
        self.bar.reset_elapsed();
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = Some((message, Instant::now()));
    }
}

/// Info events become phases; warnings and errors are printed above the
/// spinner as they come; debug and trace are printed plainly.
struct LiveLayer;

impl<S: Subscriber> Layer<S> for LiveLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let Some(live) = LIVE.get() else { return };
        let mut text = MessageText(String::new());
        event.record(&mut text);
        let message = text.0;
        if event.metadata().target() == pipeline_core::wait::PROGRESS {
            // How far a wait got: in place, on the live line.
            live.bar.set_message(message);
            return;
        }
        match *event.metadata().level() {
            Level::INFO => live.start_phase(message),
            Level::WARN => live.bar.println(format!("! {message}")),
            Level::ERROR => live.bar.println(format!("✗ {message}")),
            _ => live.bar.println(format!("  {message}")),
        }
    }
}

struct MessageText(String);

impl Visit for MessageText {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

/// Sets up logging for the command line `cli`: `-v`/`-q` (or
/// `PIPELINE_LOG`) choose how much; stages and status get live progress.
pub fn init_for(cli: &Cli) {
    let ours = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = std::env::var("PIPELINE_LOG")
        .unwrap_or_else(|_| format!("warn,pipeline={ours},pipeline_core={ours}"));
    // `test` streams its command's output, which is its progress.
    let stage = cli.command.stage().is_some() || matches!(cli.command, Command::Status { .. });
    init(&filter, stage);
}
