//! Turning a failed call into a `CallError` an operator can act on: deadline and memory-cap hits
//! by their limit, every other trap led by its kind ("stack overflow", "unreachable"…) and the
//! guest's last stderr words (a Rust panic's message), then a short backtrace.

use wasmtime::{Trap, WasmBacktrace};

use crate::error::CallError;
use crate::text::escape_bounded;

/// Frames of the guest's backtrace quoted in a report (after folding repeats).
const BACKTRACE_FRAMES: usize = 5;
/// Characters of a whole trap report.
const REPORT_CHARS: usize = 1000;
/// Characters of the error text quoted for a failure that is not a wasm trap.
const DETAIL_CHARS: usize = 300;
/// A fault address at or above this is a stack pointer that wrapped below address 0: Rust and C
/// guests keep their stack at the bottom of linear memory, growing down.
const WRAPPED_STACK_ADDRESS: u64 = 0xFFF0_0000;
/// Innermost frames that, all one function, make an out-of-bounds access a stack overflow: with
/// explicit bounds checks wasmtime gives no fault address, but a guest that ran off the bottom
/// of its stack was recursing.
const RECURSION_FRAMES: usize = 8;

/// What is known about a failed call.
pub(crate) struct Failure<'a> {
    /// `id@version`.
    pub(crate) plugin: &'a str,
    /// What wasmtime returned.
    pub(crate) error: &'a wasmtime::Error,
    /// Whether the memory limiter refused a growth during the call.
    pub(crate) memory_denied: bool,
    /// The guest's last stderr words, escaped.
    pub(crate) stderr: Option<String>,
    /// The call's deadline.
    pub(crate) deadline_ms: u64,
    /// The plugin's memory cap.
    pub(crate) memory_mib: usize,
    /// Whether the failure happened while creating the instance.
    pub(crate) instantiating: bool,
}

pub(crate) fn classify(failure: Failure<'_>) -> CallError {
    let plugin = failure.plugin.to_owned();
    if failure.memory_denied {
        return CallError::MemoryLimit {
            plugin,
            limit_mib: failure.memory_mib,
        };
    }
    let trap = failure.error.downcast_ref::<Trap>().copied();
    if trap == Some(Trap::Interrupt) {
        return CallError::Timeout {
            plugin,
            deadline_ms: failure.deadline_ms,
        };
    }
    if failure.instantiating && trap.is_none() {
        return CallError::Instantiate {
            plugin,
            reason: escape_bounded(&host_error_text(failure.error), REPORT_CHARS).into_owned(),
        };
    }
    CallError::Trap {
        plugin,
        reason: report(trap, failure.error, failure.stderr.as_deref()),
    }
}

/// `<kind>[: <detail>][; guest stderr: <words>][; backtrace: <frames>]`, bounded.
fn report(trap: Option<Trap>, error: &wasmtime::Error, stderr: Option<&str>) -> String {
    let fault = fault_address(error);
    let trace = error.downcast_ref::<WasmBacktrace>();
    let mut text = match trap {
        Some(Trap::StackOverflow) => "stack overflow".to_owned(),
        Some(Trap::UnreachableCodeReached) => "unreachable".to_owned(),
        Some(Trap::OutOfFuel) => "out of fuel".to_owned(),
        Some(Trap::MemoryOutOfBounds)
            if fault.is_some_and(|at| at >= WRAPPED_STACK_ADDRESS)
                || trace.is_some_and(recursing) =>
        {
            "stack overflow (out of guest stack in linear memory)".to_owned()
        }
        Some(Trap::MemoryOutOfBounds) => match fault {
            Some(at) => format!("out-of-bounds memory access at 0x{at:x}"),
            None => "out-of-bounds memory access".to_owned(),
        },
        Some(other) => other
            .to_string()
            .trim_start_matches("wasm trap: ")
            .to_owned(),
        // a host-side failure (a resource cap, a broken stream): its own words, without the
        // backtrace wasmtime puts around them
        None => escape_bounded(&host_error_text(error), DETAIL_CHARS).into_owned(),
    };
    if let Some(words) = stderr {
        text.push_str("; guest stderr: ");
        text.push_str(words);
    }
    if let Some(frames) = trace.map(backtrace).filter(|frames| !frames.is_empty()) {
        text.push_str("; backtrace: ");
        text.push_str(&frames);
    }
    match text.char_indices().nth(REPORT_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

/// The error's messages, outermost first, leaving out the backtrace context.
fn host_error_text(error: &wasmtime::Error) -> String {
    error
        .chain()
        .map(ToString::to_string)
        .filter(|text| !text.starts_with("error while executing at wasm backtrace"))
        .collect::<Vec<_>>()
        .join(": ")
}

/// The wasm address of a memory fault, from wasmtime's context ("memory fault at wasm address
/// 0x… in linear memory of size 0x…"), whose type is not public.
fn fault_address(error: &wasmtime::Error) -> Option<u64> {
    error.chain().find_map(|cause| {
        let text = cause.to_string();
        let hex = text
            .strip_prefix("memory fault at wasm address 0x")?
            .split_whitespace()
            .next()?;
        u64::from_str_radix(hex, 16).ok()
    })
}

/// Whether the innermost frames are one function calling itself.
fn recursing(trace: &WasmBacktrace) -> bool {
    let frames = trace.frames();
    frames.len() >= RECURSION_FRAMES
        && frames[..RECURSION_FRAMES]
            .iter()
            .all(|frame| frame.func_index() == frames[0].func_index())
}

/// The innermost frames, repeats folded (`f ×200`), names escaped.
fn backtrace(trace: &WasmBacktrace) -> String {
    let mut folded: Vec<(String, usize)> = Vec::new();
    for frame in trace.frames() {
        let name = match frame.func_name() {
            Some(name) => escape_bounded(name, 80).into_owned(),
            None => format!("wasm function {}", frame.func_index()),
        };
        match folded.last_mut() {
            Some((last, count)) if *last == name => *count += 1,
            _ => folded.push((name, 1)),
        }
    }
    let mut parts: Vec<String> = folded
        .iter()
        .take(BACKTRACE_FRAMES)
        .map(|(name, count)| {
            if *count > 1 {
                format!("{name} ×{count}")
            } else {
                name.clone()
            }
        })
        .collect();
    if folded.len() > BACKTRACE_FRAMES {
        parts.push("…".to_owned());
    }
    parts.join(" < ")
}
