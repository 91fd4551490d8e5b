//! Logging set-up, and running blocking work without losing the caller's span.

use std::io::{BufWriter, IsTerminal, Write};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::{
    EnvFilter, Layer, Registry, filter::Targets, fmt, layer::SubscriberExt, util::SubscriberInitExt,
};

/// Lines the log buffer holds before it starts dropping them: about half a second of the
/// busiest endpoint at full speed. Every slot is written when the queue is made, 32 bytes
/// each, so tracing-appender's default of 128,000 held 4 MiB from the start.
const BUFFERED_LINES: usize = 32_768;

/// How much of a batch of log lines the writer thread gathers before writing it out.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// Installs the global subscriber, with `filter` (`RUST_LOG`, parsed with the settings).
///
/// Lines go to `to` through a bounded in-memory queue drained by one background thread,
/// so a request never waits for the terminal or a log pipe. The queue is **lossy**: when it
/// is full (the output slower than the service for 32,768 lines), new lines are dropped rather
/// than making the workers wait. Dropped lines are not counted or reported anywhere.
///
/// The returned guard flushes the queue when dropped: hold it until the process ends. When a
/// subscriber is installed already (a second call, as in tests), that one is kept and the
/// guard belongs to an unused writer.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(format: LogFormat, filter: &LogFilterSpec, to: LogOutput) -> WorkerGuard {
    let builder = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("log-writer");
    // Colours only for a person at a terminal: escape codes in a log file or a collector's
    // pipe are noise, and cost a tenth of a small request's time.
    // The writer thread drains every line queued, then flushes: buffered, that is one write
    // to the pipe per batch of lines rather than one per line.
    let buffered = |out: Box<dyn Write + Send>| BufWriter::with_capacity(WRITE_BUFFER_BYTES, out);
    let (writer, guard, ansi) = match to {
        LogOutput::Stdout => {
            let ansi = std::io::stdout().is_terminal();
            let (writer, guard) = builder.finish(buffered(Box::new(std::io::stdout())));
            (writer, guard, ansi)
        }
        LogOutput::Stderr => {
            let ansi = std::io::stderr().is_terminal();
            let (writer, guard) = builder.finish(buffered(Box::new(std::io::stderr())));
            (writer, guard, ansi)
        }
    };
    let filter: Box<dyn Layer<Registry> + Send + Sync> = match log_filter(filter) {
        LogFilter::Targets(targets) => targets,
        LogFilter::Env(filter) => filter,
    };
    let registry = tracing_subscriber::registry().with(filter);
    // `try_init` so that a second call (as in tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(writer),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(fmt::layer().with_ansi(ansi).with_writer(writer))
            .try_init(),
    };
    guard
}

/// The directives of `RUST_LOG`, known to parse: `info` when it is unset or blank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilterSpec(String);

impl LogFilterSpec {
    /// Refuses directives that `EnvFilter` (which reads every form) does not take.
    pub fn parse(spec: Option<&str>) -> Result<Self, String> {
        // Blank directives dropped: `Targets` would read one as a target matching everything.
        let directives: Vec<&str> = spec
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|directive| !directive.is_empty())
            .collect();
        let spec = if directives.is_empty() {
            "info".to_owned()
        } else {
            directives.join(",")
        };
        EnvFilter::try_new(&spec).map_err(|e| format!("{spec:?} is not a log filter: {e}"))?;
        Ok(Self(spec))
    }
}

/// What `RUST_LOG` asks for, as one of two filters.
enum LogFilter {
    Targets(Box<Targets>),
    Env(Box<EnvFilter>),
}

/// The filter of `spec`. `EnvFilter` takes a lock every thread shares on each span entered
/// and left, to follow directives that name spans or fields (`[…]`), which are kept for it;
/// levels by target alone (`warn,user_service=debug`) go to `Targets`, which takes none.
fn log_filter(spec: &LogFilterSpec) -> LogFilter {
    let spec = spec.0.as_str();
    if !spec.contains('[')
        && let Ok(targets) = spec.parse::<Targets>()
    {
        return LogFilter::Targets(Box::new(targets));
    }
    LogFilter::Env(Box::new(
        EnvFilter::try_new(spec).expect("a LogFilterSpec parses"),
    ))
}

/// `spawn_blocking` that keeps the caller's span, so blocking work logs with the request id.
pub fn spawn_blocking_with_tracing<F, R>(f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
}

/// Where log lines go: stdout for the server; stderr for commands whose output is data
/// (`export` writes users to stdout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOutput {
    Stdout,
    Stderr,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::*;

    fn filter(spec: Option<&str>) -> LogFilter {
        log_filter(&LogFilterSpec::parse(spec).expect("a filter"))
    }

    fn targets(spec: Option<&str>) -> Targets {
        match filter(spec) {
            LogFilter::Targets(targets) => *targets,
            LogFilter::Env(filter) => panic!("{spec:?} became an EnvFilter: {filter}"),
        }
    }

    #[test]
    fn levels_by_target_are_filtered_without_a_lock() {
        for unset in [None, Some(""), Some(" , ")] {
            let filter = targets(unset);
            assert!(filter.would_enable("user_service::routes", &Level::INFO));
            assert!(!filter.would_enable("user_service::routes", &Level::DEBUG));
        }
        let filter = targets(Some(" warn, user_service=debug, "));
        assert!(filter.would_enable("user_service::routes", &Level::DEBUG));
        assert!(!filter.would_enable("user_service::routes", &Level::TRACE));
        assert!(filter.would_enable("mongodb", &Level::WARN));
        assert!(!filter.would_enable("mongodb", &Level::INFO));
    }

    #[test]
    fn directives_on_spans_or_fields_keep_the_env_filter() {
        for spec in [
            "info,[HTTP request]=debug",
            "user_service[{request_id}]=trace",
        ] {
            assert!(matches!(filter(Some(spec)), LogFilter::Env(_)), "{spec}");
        }
    }

    #[test]
    fn a_filter_that_does_not_parse_is_refused() {
        for spec in [
            "foo=bar=baz[",
            "info,user_service[=debug",
            "user_service=verbose",
        ] {
            let refused = LogFilterSpec::parse(Some(spec));
            assert!(refused.is_err(), "{spec}: {refused:?}");
        }
    }
}
