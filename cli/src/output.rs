//! Writing to stdout and stderr without panicking. `println!` panics when the reader of a pipe
//! has gone (`runledger runs show RUN | head`); like ripgrep, runledger then exits quietly
//! instead: the reader asked for no more, so there is nothing to report.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

/// Exit status when stdout's reader has gone. 0 for commands whose output is the answer; `run
/// --wait` raises it to 1, because its status promises "completed" and it did not see the end.
static BROKEN_PIPE_EXIT: AtomicU8 = AtomicU8::new(0);

/// Sets the exit status used when stdout's reader goes away (see [`BROKEN_PIPE_EXIT`]).
pub fn set_broken_pipe_exit(code: u8) {
    BROKEN_PIPE_EXIT.store(code, Ordering::Relaxed);
}

/// Exits the process quietly, as the closed pipe asks.
pub fn exit_on_broken_pipe() -> ! {
    std::process::exit(i32::from(BROKEN_PIPE_EXIT.load(Ordering::Relaxed)))
}

/// Writes one line to stdout. A closed pipe ends the process quietly; any other write error
/// (a full disk) is reported on stderr and exits 1, as nothing more can be printed.
pub fn stdout_line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            exit_on_broken_pipe();
        }
        stderr_text(format_args!(
            "runledger: error: cannot write to stdout: {e}\n"
        ));
        std::process::exit(1);
    }
}

/// Writes text to stderr as is; errors are ignored (there is nowhere left to report them).
pub fn stderr_text(args: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args);
    let _ = err.flush();
}

/// `println!` that exits quietly on a closed pipe instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::stdout_line(format_args!($($arg)*))
    };
}

/// `eprintln!` that never panics.
macro_rules! errln {
    () => {
        $crate::output::stderr_text(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::stderr_text(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprint!` that never panics.
macro_rules! errout {
    ($($arg:tt)*) => {
        $crate::output::stderr_text(format_args!($($arg)*))
    };
}
