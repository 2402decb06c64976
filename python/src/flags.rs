//! Keyword arguments → the command line's own flag definitions. `src/cli.rs` (shared with the
//! binary, included as `crate::cli`) defines every option once: its name, default, parser,
//! checks and help. A Python call is turned into the flags it stands for (`max_cost=2.5` →
//! `--max-cost=2.5`) and parsed by that same definition, so the two front ends cannot drift:
//! the same names, the same defaults, the same messages for the same mistakes.

use std::ffi::OsString;

use clap::{Arg, ArgAction, Args, Command, FromArgMatches};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

/// The flags of one command (`run`, `estimate`, …) as clap knows them.
pub(crate) fn command<A: Args>(name: &'static str) -> Command {
    A::augment_args(Command::new(name))
        .no_binary_name(true)
        .disable_help_flag(true)
}

/// The keyword name of a flag: its long name with `_` for `-` (`--max-cost` → `max_cost`).
pub(crate) fn keyword(arg: &Arg) -> Option<String> {
    arg.get_long().map(|long| long.replace('-', "_"))
}

/// Parses `positional` values and keyword `options` with the flags of `A`. `function` names the
/// Python function in messages.
pub(crate) fn parse<A: Args + FromArgMatches>(
    function: &'static str,
    positional: &[OsString],
    options: &Bound<'_, PyDict>,
) -> PyResult<A> {
    let command = command::<A>(function);
    let mut argv: Vec<OsString> = Vec::new();
    for (key, value) in options.iter() {
        let key: String = key.extract()?;
        let arg = command
            .get_arguments()
            .find(|arg| !arg.is_positional() && keyword(arg).as_deref() == Some(key.as_str()))
            .ok_or_else(|| unexpected(function, &key, &command))?;
        flag_values(function, &key, arg, &value, &mut argv)?;
    }
    // Values after `--` are positional even when they start with `-`.
    argv.push("--".into());
    argv.extend(positional.iter().cloned());
    let matches = command
        .clone()
        .try_get_matches_from(argv)
        .map_err(|e| usage_error(function, &e))?;
    A::from_arg_matches(&matches).map_err(|e| usage_error(function, &e))
}

/// Appends the flags `key=value` stands for: nothing for `None` or `False`, the bare flag for
/// `True`, one flag per item of a list (or per `key: value` of a dict) for a repeatable one.
fn flag_values(
    function: &str,
    key: &str,
    arg: &Arg,
    value: &Bound<'_, PyAny>,
    argv: &mut Vec<OsString>,
) -> PyResult<()> {
    let flag = format!("--{}", arg.get_long().unwrap_or(key));
    if value.is_none() {
        return Ok(());
    }
    match arg.get_action() {
        ArgAction::SetTrue => {
            let on = value.downcast::<PyBool>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "{function}(): {key} takes True or False, not {}",
                    repr(value)
                ))
            })?;
            if on.is_true() {
                argv.push(flag.into());
            }
        }
        ArgAction::Append => {
            for item in items(value)? {
                argv.push(format!("{flag}={}", text(function, key, arg, &item)?).into());
            }
        }
        _ => argv.push(format!("{flag}={}", text(function, key, arg, value)?).into()),
    }
    Ok(())
}

/// The values of a repeatable option: a list or tuple's items, a dict's `KEY=JSON` pairs (for
/// `param`), or the one value given.
fn items<'py>(value: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let py = value.py();
    if let Ok(dict) = value.downcast::<PyDict>() {
        let json = py.import("json")?;
        return dict
            .iter()
            .map(|(k, v)| {
                let pair = format!(
                    "{}={}",
                    k.str()?,
                    json.call_method1("dumps", (v,))?.extract::<String>()?
                );
                Ok(PyString::new(py, &pair).into_any())
            })
            .collect();
    }
    if value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>() {
        return value.try_iter()?.collect();
    }
    Ok(vec![value.clone()])
}

/// One value as the text its flag takes: a string as it is, a path by `os.fspath`, a number by
/// `str` — or, for a duration (an option whose default is one, e.g. `timeout`), seconds or a
/// `datetime.timedelta` as nanoseconds (`"30s"` works as on the command line too).
fn text(function: &str, key: &str, arg: &Arg, value: &Bound<'_, PyAny>) -> PyResult<String> {
    let py = value.py();
    if let Ok(s) = value.downcast::<PyString>() {
        return Ok(s.to_string());
    }
    // A list for a one-value option that takes a comma-separated list (`keep_columns`).
    if value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>() {
        let parts: PyResult<Vec<String>> = value
            .try_iter()?
            .map(|item| text(function, key, arg, &item?))
            .collect();
        return Ok(parts?.join(","));
    }
    if value.is_instance_of::<PyBool>() {
        return Ok(if value.is_truthy()? { "true" } else { "false" }.into());
    }
    let seconds = if value.hasattr("total_seconds")? {
        Some(value.call_method0("total_seconds")?.extract::<f64>()?)
    } else if is_duration(arg)
        && (value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>())
    {
        Some(value.extract::<f64>()?)
    } else {
        None
    };
    if let Some(seconds) = seconds {
        if !seconds.is_finite() || seconds < 0.0 {
            return Err(PyValueError::new_err(format!(
                "{function}(): {key}={} is not a duration: give seconds (>= 0), a timedelta, or text such as \"90s\"",
                repr(value)
            )));
        }
        return Ok(format!("{}ns", (seconds * 1e9).round() as u128));
    }
    if value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>() {
        return Ok(value.str()?.to_string());
    }
    if let Ok(path) = py.import("os")?.call_method1("fspath", (value,)) {
        return Ok(path.str()?.to_string());
    }
    Err(PyTypeError::new_err(format!(
        "{function}(): {key} takes text, a number or a path, not {}",
        repr(value)
    )))
}

/// Whether an option takes a duration: its default is one (`timeout`: `10m`).
pub(crate) fn is_duration(arg: &Arg) -> bool {
    arg.get_default_values().first().is_some_and(|default| {
        let default = default.to_string_lossy();
        default.chars().any(|c| c.is_ascii_alphabetic())
            && promptbatch::internals::duration::parse(&default).is_ok()
    })
}

/// `repr(value)`, for messages.
fn repr(value: &Bound<'_, PyAny>) -> String {
    value
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Python's own message for an unknown keyword, with the nearest option's name.
fn unexpected(function: &str, key: &str, command: &Command) -> PyErr {
    let nearest = command
        .get_arguments()
        .filter_map(keyword)
        .map(|name| (edit_distance(key, &name), name))
        .filter(|(distance, name)| *distance <= 2.max(name.len() / 3))
        .min();
    let hint = match nearest {
        Some((_, name)) => format!("; did you mean '{name}'?"),
        None => format!("; help(promptbatch.{function}) lists the options"),
    };
    PyTypeError::new_err(format!(
        "{function}() got an unexpected keyword argument '{key}'{hint}"
    ))
}

/// Levenshtein distance, for the "did you mean" hint.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// clap's message for a bad value, with the keyword in place of the flag
/// (`invalid value '0' for concurrency: 0 is not in 1..=100000`).
fn usage_error(function: &str, error: &clap::Error) -> PyErr {
    let rendered = error.render().to_string();
    let mut lines = rendered
        .lines()
        .map(str::trim_end)
        .filter(|line| !line.is_empty() && !line.starts_with("Usage:"))
        .filter(|line| !line.starts_with("For more information"));
    let first = lines.next().unwrap_or("invalid options");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let mut message = format!("{function}(): {}", keywords_for_flags(first));
    for line in lines {
        message.push_str("\n  ");
        message.push_str(&keywords_for_flags(line.trim()));
    }
    PyValueError::new_err(message)
}

/// `'--max-cost <USD>'` → `max_cost` in a clap message.
fn keywords_for_flags(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("'--") {
        out.push_str(&rest[..at]);
        let quoted = &rest[at + 1..];
        let Some(end) = quoted.find('\'') else {
            out.push_str(&rest[at..]);
            return out;
        };
        let flag = &quoted[2..end];
        let name = flag.split([' ', '=']).next().unwrap_or(flag);
        out.push_str(&name.replace('-', "_"));
        rest = &quoted[end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_in_clap_messages_become_keywords() {
        assert_eq!(
            keywords_for_flags("invalid value '0' for '--concurrency <CONCURRENCY>': too small"),
            "invalid value '0' for concurrency: too small"
        );
        assert_eq!(edit_distance("concurency", "concurrency"), 1);
    }
}
