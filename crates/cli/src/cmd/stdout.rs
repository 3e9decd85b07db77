//! Standard output that a reader going away cannot break: `shardvault get ... | head` ends
//! quietly and an apply goes on with every document when nobody reads what it prints. Every
//! command prints through [`out!`] and [`outln!`] (clippy refuses `print!` in this crate).

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a write failed: later text is dropped.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// The first failure that was not the reader going away (a full disk, say).
static FAILURE: Mutex<Option<String>> = Mutex::new(None);

/// Writes text to standard output and flushes it; after the reader has gone (EPIPE) or a
/// write failed, the text is dropped and the command goes on.
pub fn write(args: std::fmt::Arguments<'_>) {
    if closed() {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            let mut failure = FAILURE.lock().unwrap_or_else(|p| p.into_inner());
            failure.get_or_insert_with(|| e.to_string());
        }
    }
}

/// True once nothing more reaches standard output (its reader closed it, or it failed).
pub fn closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}

/// Why standard output failed, when it was not its reader closing it.
pub fn failure() -> Option<String> {
    FAILURE.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// `print!` that survives a closed standard output.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cmd::stdout::write(format_args!($($arg)*))
    };
}

/// `println!` that survives a closed standard output.
macro_rules! outln {
    () => {
        $crate::cmd::stdout::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cmd::stdout::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};
