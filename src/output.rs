//! Rendering for people: sizes, durations, times in the operator's zone; writing results to
//! stdout ([`outln!`], [`json`]).

/// `println!` for results: a reader of stdout that went away (`coffer files ls latest | head`)
/// ends the command quietly with exit 0 (through [`StdoutClosed`]) instead of a panic, as it
/// ends `ls`; any other write error is an error. Use it with `?` in a function returning
/// `anyhow::Result`.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))?
    };
}

/// stdout's reader went away: the command stops there, successfully.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes one line to stdout (see [`outln!`]).
pub fn line(args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::anyhow!("writing the result to stdout: {e}")),
    }
}

/// `1.5 GiB`, `320 KiB`, `12 B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A timestamp in the operator's zone: `2026-11-26 17:46:43 +03`.
pub fn local_time(at: jiff::Timestamp, tz: &jiff::tz::TimeZone) -> String {
    at.to_zoned(tz.clone())
        .strftime("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

/// A progress spinner on stderr, shown only on a terminal: bytes so far, rate, elapsed time.
pub struct Spinner {
    bar: indicatif::ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Spinner {
    /// Starts a spinner that reads `progress`, or nothing when stderr is not a terminal.
    pub fn start(verb: &str, progress: coffer_core::pipeline::Progress) -> Option<Spinner> {
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            return None;
        }
        let bar = indicatif::ProgressBar::new_spinner();
        let template = format!("{{spinner}} {verb} {{bytes}} ({{bytes_per_sec}}) {{elapsed}}");
        bar.set_style(indicatif::ProgressStyle::with_template(&template).expect("valid template"));
        let ticking = bar.clone();
        let ticker = tokio::spawn(async move {
            loop {
                ticking.set_position(progress.bytes());
                ticking.tick();
                tokio::time::sleep(std::time::Duration::from_millis(150)).await;
            }
        });
        Some(Spinner { bar, ticker })
    }

    /// Stops and clears the spinner.
    pub fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

/// Prints a value as pretty JSON on stdout.
pub fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_well() {
        assert_eq!(super::bytes(12), "12 B");
        assert_eq!(super::bytes(1536), "1.5 KiB");
        assert_eq!(super::bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
