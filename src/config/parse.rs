//! The parsers every setting goes through: numbers, durations, URLs and enumerated values, each failing
//! with a [`SettingsError`] that names the variable and the fix.

use std::time::Duration;

use super::SettingsError;

/// A humantime duration above zero (`90s`, `12h`, `30d`), or `default` when unset.
pub(super) fn duration(
    var: &'static str,
    value: Option<String>,
    default: Duration,
) -> Result<Duration, SettingsError> {
    let Some(v) = value else {
        return Ok(default);
    };
    match humantime::parse_duration(&v) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(SettingsError {
            var,
            value: v,
            fix: "use a duration above zero such as `90s`, `15m`, `12h` or `30d`".into(),
        }),
    }
}

pub(super) fn parse_num<T: std::str::FromStr>(
    var: &'static str,
    value: &str,
    what: &str,
) -> Result<T, SettingsError> {
    value.parse().map_err(|_| SettingsError {
        var,
        value: value.to_string(),
        fix: format!("use {what}"),
    })
}

pub(super) fn positive<T: std::str::FromStr + PartialOrd + Default>(
    var: &'static str,
    value: &str,
) -> Result<T, SettingsError> {
    let n: T = parse_num(var, value, "a whole number above 0")?;
    if n <= T::default() {
        return Err(SettingsError {
            var,
            value: value.to_string(),
            fix: "use a whole number above 0".into(),
        });
    }
    Ok(n)
}

pub(super) fn check_url(var: &'static str, value: &str) -> Result<String, SettingsError> {
    match reqwest::Url::parse(value) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {
            Ok(value.trim_end_matches('/').to_string())
        }
        _ => Err(SettingsError {
            var,
            value: value.to_string(),
            fix: "use an absolute http(s) URL such as https://app.mavera.io/api/v1".into(),
        }),
    }
}

/// An enumerated setting: `value` (in any case) as one of `choices`, or an error whose fix lists them.
pub(super) fn choice<T: Clone>(
    var: &'static str,
    value: String,
    choices: &[(&str, T)],
    fix: &str,
) -> Result<T, SettingsError> {
    match choices
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(&value))
    {
        Some((_, chosen)) => Ok(chosen.clone()),
        None => Err(SettingsError {
            var,
            value,
            fix: fix.into(),
        }),
    }
}
