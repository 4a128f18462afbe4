//! Progress of a long-running command: a block redrawn in place on a terminal, changed lines appended otherwise.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};

/// One line of progress: `key` tells which thing it is about, `stable` its text without
/// what changes by itself (ages), `display` what is shown.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Which thing the line is about (a cluster and work, a resource).
    pub key: String,
    /// The text without what changes by itself (ages): a change of it is printed.
    pub stable: String,
    /// What is shown.
    pub display: String,
}

impl Line {
    /// A line whose text does not change by itself.
    pub fn plain(key: String, text: String) -> Self {
        Line {
            key,
            stable: text.clone(),
            display: text,
        }
    }
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Nothing at all (`--quiet`).
    Quiet,
    /// A block redrawn in place (the stream is a terminal).
    Terminal,
    /// Plain lines, each printed when it changes (CI logs, pipes, files).
    Append,
}

/// Progress of a wait on stdout (on stderr when stdout carries an `-o` document).
pub struct Progress {
    out: Box<dyn Write + Send>,
    mode: ProgressMode,
    /// Lines of the block drawn last (terminal mode).
    drawn: Vec<String>,
    /// `key` → `stable` of what was printed last (append mode).
    printed: HashMap<String, String>,
}

impl Progress {
    /// Progress on stdout, or on stderr when `to_stderr`; redrawn in place when that
    /// stream is a terminal, nothing at all when `quiet`.
    pub fn new(to_stderr: bool, quiet: bool) -> Self {
        let (out, terminal): (Box<dyn Write + Send>, bool) = if to_stderr {
            (Box::new(std::io::stderr()), std::io::stderr().is_terminal())
        } else {
            (Box::new(std::io::stdout()), std::io::stdout().is_terminal())
        };
        let mode = match (quiet, terminal) {
            (true, _) => ProgressMode::Quiet,
            (false, true) => ProgressMode::Terminal,
            (false, false) => ProgressMode::Append,
        };
        Progress::with_writer(out, mode)
    }

    /// Progress written to `out` in this mode.
    pub fn with_writer(out: Box<dyn Write + Send>, mode: ProgressMode) -> Self {
        Progress {
            out,
            mode,
            drawn: Vec::new(),
            printed: HashMap::new(),
        }
    }

    /// The mode.
    pub fn mode(&self) -> ProgressMode {
        self.mode
    }

    /// Shows the current lines: redraws the block on a terminal, prints the lines that
    /// changed otherwise.
    pub fn update(&mut self, lines: &[Line]) {
        let mut text = String::new();
        match self.mode {
            ProgressMode::Quiet => return,
            ProgressMode::Terminal => {
                let display: Vec<String> = lines.iter().map(|l| l.display.clone()).collect();
                if display == self.drawn {
                    return;
                }
                if !self.drawn.is_empty() {
                    // Up to the block's first line, then clear to the end of the screen.
                    text.push_str(&format!("\x1b[{}A\r\x1b[J", self.drawn.len()));
                }
                // No wrapping while drawing, so each line takes exactly one row.
                text.push_str("\x1b[?7l");
                for l in &display {
                    text.push_str(l);
                    text.push('\n');
                }
                text.push_str("\x1b[?7h");
                self.drawn = display;
            }
            ProgressMode::Append => {
                for l in lines {
                    if self.printed.get(&l.key) != Some(&l.stable) {
                        text.push_str(&l.display);
                        text.push('\n');
                    }
                }
                self.printed = lines
                    .iter()
                    .map(|l| (l.key.clone(), l.stable.clone()))
                    .collect();
            }
        }
        self.write(&text);
    }

    /// A line that stays (below the block on a terminal, which is not redrawn after it).
    pub fn line(&mut self, text: &str) {
        if self.mode == ProgressMode::Quiet || text.is_empty() {
            return;
        }
        self.drawn.clear();
        self.write(&format!("{text}\n"));
    }

    fn write(&mut self, text: &str) {
        let _ = self
            .out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush());
    }
}
