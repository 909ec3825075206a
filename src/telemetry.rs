//! Logging setup: human-readable by default, JSON lines with `RUNLINK_LOG_FORMAT=json` for log
//! pipelines. The level comes from `RUST_LOG` (default `info`).

use std::io::Write;

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("RUNLINK_LOG_FORMAT").is_ok_and(|v| v == "json");
    // Colours are escape sequences too: the writer escapes them, so none are written.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(|| Escaping(std::io::stderr()));
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Writes each log record with its control characters escaped, but for the newline that
/// ends it: a value from a request (a path, a title) can neither forge a log line nor send
/// a terminal escape. The formatter hands over one whole record per write.
struct Escaping<W: Write>(W);

impl<W: Write> Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(escape_controls(buf).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn escape_controls(record: &[u8]) -> std::borrow::Cow<'_, str> {
    let text = String::from_utf8_lossy(record);
    let body = text.strip_suffix('\n').unwrap_or(&text);
    if !body.chars().any(|c| c.is_control() && c != '\t') {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in body.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push('\t'),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    if text.ends_with('\n') {
        out.push('\n');
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_cannot_start_a_new_log_line_or_colour_the_terminal() {
        let record = b"WARN name=x\n2026-01-01T00:00:00Z ERROR forged \x1b[31mred\x07\n";
        assert_eq!(
            escape_controls(record),
            "WARN name=x\\n2026-01-01T00:00:00Z ERROR forged \\u{1b}[31mred\\u{7}\n"
        );
        assert_eq!(escape_controls(b"plain\tline\n"), "plain\tline\n");
    }
}
