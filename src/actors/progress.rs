//! Terminal progress: a bar (step, loss, tokens/s, ETA) on a terminal, a log line per logged
//! step otherwise (CI logs, files).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

use super::events::StepReport;

/// Cheap to clone; all clones drive the same bar.
#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar to `max_steps` when stderr is a terminal, plain lines otherwise.
    pub fn new(max_steps: u64, phase: &str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress { bar: None };
        }
        let bar = ProgressBar::new(max_steps);
        let style = ProgressStyle::with_template(&format!(
            "{phase} {{bar:30.cyan/blue}} {{pos}}/{{len}} {{msg}} [{{elapsed_precise}} < {{eta_precise}}]"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        Progress { bar: Some(bar) }
    }

    /// Shows a logged step.
    pub fn step(&self, r: &StepReport) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(r.step);
                bar.set_message(format!("loss {:.4} | lr {:.2e} | {:.0} tok/s", r.loss, r.lr, r.tokens_per_second));
            }
            None => crate::errln!(
                "{} step {:>6}  loss {:.4}  lr {:.3e}  grad {:.3}  {:.0} tok/s  data-wait {:.1}%{}  {:.1}s",
                r.phase,
                r.step,
                r.loss,
                r.lr,
                r.grad_norm,
                r.tokens_per_second,
                100.0 * r.data_wait_share,
                r.mfu.map_or(String::new(), |m| format!("  mfu {:.2}%", 100.0 * m)),
                r.elapsed_s
            ),
        }
    }

    /// A line above the bar (or on stderr).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => crate::errln!("{line}"),
        }
    }

    /// Leaves the bar in its final state.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
