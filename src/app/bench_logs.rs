//! The bench's log counter: reads a child member's stderr (its log, human format) to the end on
//! a thread of its own and tallies lines, bytes, lines by level, and the storm summaries with
//! the lines they stand for (`suppressed=N`), and the failure lines written in full. The
//! `log-volume` scenario reports it.

use std::io::{BufRead, BufReader, Read};
use std::thread::JoinHandle;

/// What a member's log held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LogTally {
    /// Lines written.
    pub lines: u64,
    /// Bytes written, newlines included.
    pub bytes: u64,
    /// Lines at WARN.
    pub warn: u64,
    /// Lines at ERROR.
    pub error: u64,
    /// Storm summaries among the lines.
    pub summaries: u64,
    /// Lines the summaries stand for (not written one by one).
    pub suppressed: u64,
    /// Lines about one failure event written in full: a failed attempt, a retry scheduled, a
    /// dead letter.
    pub failure_lines: u64,
}

/// The messages of the lines about one failure event (`<target>: <message> <fields>`).
const FAILURE_MESSAGES: [&str; 3] = [
    ": task attempt failed ",
    ": retry scheduled ",
    ": task dead-lettered ",
];

impl LogTally {
    /// Counts one line (without its newline).
    fn add(&mut self, line: &str) {
        self.lines += 1;
        self.bytes += line.len() as u64 + 1;
        // Human format: `<timestamp> <LEVEL> <target>: <message> <fields>`.
        match line.split_whitespace().nth(1) {
            Some("WARN") => self.warn += 1,
            Some("ERROR") => self.error += 1,
            _ => {}
        }
        if let Some(n) = summary_count(line) {
            self.summaries += 1;
            self.suppressed += n;
        } else if FAILURE_MESSAGES.iter().any(|m| line.contains(m)) {
            self.failure_lines += 1;
        }
    }

    /// Reads `stream` to its end (the child's exit) on a thread; join it for the tally.
    pub(crate) fn spawn(stream: impl Read + Send + 'static) -> JoinHandle<LogTally> {
        std::thread::spawn(move || {
            let mut tally = LogTally::default();
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&buf);
                        tally.add(text.trim_end_matches('\n'));
                    }
                }
            }
            tally
        })
    }
}

/// The `suppressed=N` of a storm summary line (`None` for any other line).
fn summary_count(line: &str) -> Option<u64> {
    if !line.contains(" event=") {
        return None;
    }
    let rest = line.split(" suppressed=").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_levels_and_summaries_are_counted() {
        let log = "\
2026-11-30T20:19:01.217484Z  INFO redrive::fleet: fleet member started member=\"m1\"
2026-11-30T20:19:01.217484Z  WARN redrive::fleet::settler: task attempt failed tenant=t0 task_id=a
2026-11-30T20:19:11.217484Z  WARN redrive::fleet::settler: 2999 more \"task attempt failed\" lines like the one above in the last 10s: not logged one by one event=\"attempt_failed\" suppressed=2999 tenants=[t0] fingerprint=bac15a63b3e8
2026-11-30T20:19:11.217484Z ERROR redrive::fleet::reader: pending entries were deleted before they ran: payloads lost tombstones=3
2026-11-30T20:19:11.317484Z  INFO redrive::fleet::settler: 7 more \"retry scheduled\" lines like the one above in the last 10s: not logged one by one event=\"retry_scheduled\" suppressed=7 tenants=[t0]
";
        let t = LogTally::spawn(std::io::Cursor::new(log.as_bytes().to_vec()))
            .join()
            .unwrap();
        assert_eq!(
            t,
            LogTally {
                lines: 5,
                bytes: log.len() as u64,
                warn: 2,
                error: 1,
                summaries: 2,
                suppressed: 3_006,
                failure_lines: 1,
            }
        );
    }
}
