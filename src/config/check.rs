//! Checks shared by every section: identifiers and ranges, each with a message that names the
//! setting.

use crate::error::{Error, Result};

/// Refuses `value` unless it is 1 to 64 ASCII letters, digits, `_`, `-`, `.` or one of `extra`.
pub(crate) fn check_ident(setting: &str, value: &str, extra: &[char]) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value.chars().all(|c| {
            c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' || extra.contains(&c)
        });
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{setting} = '{value}' is invalid: use 1 to 64 ASCII letters, digits, '_', '-', '.'{}",
            extra.iter().map(|c| format!(", '{c}'")).collect::<String>()
        )))
    }
}

/// Refuses `value` outside `min..=max`.
pub(crate) fn check_range<T: PartialOrd + std::fmt::Display>(
    setting: &str,
    value: T,
    min: T,
    max: T,
) -> Result<()> {
    if value < min || value > max {
        return Err(Error::Config(format!(
            "{setting} = {value} is out of range: it must be between {min} and {max}"
        )));
    }
    Ok(())
}
