//! Console output that never ends a run: `println!` and `eprintln!` panic when the reader has
//! gone (`pretune train ... | head`, a `less` that quit, a dead log shipper: `EPIPE`), and a
//! panic there would stop training with no checkpoint. These macros write the line if they
//! can and drop it if they cannot; checkpoints and `events.jsonl` go on being written.

/// `println!` that drops the line when stdout is closed.
#[macro_export]
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// `print!` that drops the text when stdout is closed.
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($t)*);
    }};
}

/// `eprintln!` that drops the line when stderr is closed.
#[macro_export]
macro_rules! errln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}
