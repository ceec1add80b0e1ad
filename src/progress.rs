//! Progress output. On a terminal (stderr), an indicatif bar; elsewhere (a pipe, a CI log, a
//! Kubernetes pod) no bar, and long commands print a status line at a fixed interval instead
//! ([`Ticker`]), so a campaign is never silent for hours and a log never fills with bar
//! redraws. Results go to stdout, progress to stderr.

use std::io::IsTerminal;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether stderr is a terminal (where bars are drawn).
pub fn on_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// A progress bar on stderr when it is a terminal; hidden otherwise.
#[derive(Debug, Clone)]
pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    /// A bar of `len` steps of `unit` (`seeds`), with `what` in front.
    pub fn new(len: u64, what: &str, unit: &str) -> Bar {
        Bar::with_template(
            len,
            &format!("{what} {{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{msg}}"),
        )
    }

    /// A bar drawn with an indicatif `template`.
    pub fn with_template(len: u64, template: &str) -> Bar {
        // Styled before it is drawn: hidden until then.
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        if on_terminal() {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        Bar { bar }
    }

    /// A spinner (no known length) with `what` in front.
    pub fn spinner(what: &str) -> Bar {
        let bar = if on_terminal() {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        let template = format!("{what} {{elapsed_precise}} {{spinner}} {{msg}}");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        Bar { bar }
    }

    /// One step done.
    pub fn inc(&self) {
        self.bar.inc(1);
    }

    /// Sets the position.
    pub fn set_position(&self, pos: u64) {
        self.bar.set_position(pos);
    }

    /// Sets the message after the bar.
    pub fn set_message(&self, message: String) {
        self.bar.set_message(message);
    }

    /// Prints `line` to stdout without tearing the bar.
    pub fn println(&self, line: &str) {
        self.bar.suspend(|| {
            println!("{line}");
            // Seen at once by whoever watches, even through a pipe.
            let _ = std::io::Write::flush(&mut std::io::stdout());
        });
    }

    /// Prints `line` to stderr without tearing the bar.
    pub fn eprintln(&self, line: &str) {
        self.bar.suspend(|| eprintln!("{line}"));
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// A thread that calls `tick` every `period` until dropped (then once more), outside any
/// simulation: for status lines and bar updates while long batches run.
#[derive(Debug)]
pub struct Ticker {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Ticker {
    /// Starts calling `tick(elapsed since start)` every `period`.
    pub fn start(period: Duration, mut tick: impl FnMut(Duration) + Send + 'static) -> Ticker {
        assert!(period > Duration::ZERO);
        let (stop, stopped) = mpsc::channel::<()>();
        let started = Instant::now();
        let handle = std::thread::spawn(move || loop {
            match stopped.recv_timeout(period) {
                Err(mpsc::RecvTimeoutError::Timeout) => tick(started.elapsed()),
                _ => return,
            }
        });
        Ticker {
            stop: Some(stop),
            handle: Some(handle),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// `1h02m03s`, `4m05s`, `6s`.
pub fn hms(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    if h > 0 {
        format!("{h}h{m:02}m{s:02}s")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_clock() {
        assert_eq!(hms(Duration::from_secs(3723)), "1h02m03s");
        assert_eq!(hms(Duration::from_secs(245)), "4m05s");
        assert_eq!(hms(Duration::from_secs(6)), "6s");
    }

    #[test]
    fn a_ticker_ticks_and_stops() {
        let (tx, rx) = mpsc::channel();
        let ticker = Ticker::start(Duration::from_millis(5), move |_| {
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(10)).expect("a tick");
        drop(ticker);
    }
}
