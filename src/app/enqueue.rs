//! Reading tasks for `redrive enqueue --file`: JSON Lines, one task per line.

use crate::error::{Error, Result};
use crate::task::NewTask;

/// Parses JSON Lines (one [`NewTask`] object per line; blank lines are skipped but counted),
/// each task with its 1-based line number in `text`. The first bad line fails the whole input
/// with its line number, so nothing is half-enqueued.
pub fn parse_jsonl(text: &str) -> Result<Vec<(usize, NewTask)>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str::<NewTask>(line)
                .map(|t| (i + 1, t))
                .map_err(|e| Error::InvalidTask(format!("line {}: {e}", i + 1)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_errors_name_the_line() {
        let ok = parse_jsonl("\n{\"tenant\":\"a\",\"kind\":\"k\",\"payload\":{}}\n\n").unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].0, 2, "blank lines count");
        let err =
            parse_jsonl("{\"tenant\":\"a\",\"kind\":\"k\",\"payload\":{}}\n{oops\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
