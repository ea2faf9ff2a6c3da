//! Rendering for people: sizes, durations, times in the operator's zone.

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
    println!("{}", serde_json::to_string_pretty(value)?);
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
