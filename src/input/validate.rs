//! `promptbatch validate`: one streaming pass over an input with the same flags as `run`, no
//! request sent. Every problem a row has (malformed record, duplicate id, empty prompt, missing
//! field) is listed as `file:line: what` (the first [`SHOWN`], then a count), followed by the
//! row count, where the ids come from, the columns or fields found and the models the rows
//! name. Exit 0 when every row can be sent, 1 otherwise (also when there is no data row).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::api::request::RequestOptions;
use crate::error::Error;
use crate::input::{self, InputOptions, RowContent};
use crate::util::human::{count, group};

/// Problems printed one by one; the rest are counted.
pub(crate) const SHOWN: u64 = 100;

/// What one pass over the input found.
#[derive(Debug, Default)]
pub struct Validation {
    pub rows: u64,
    pub invalid: u64,
    /// Invalid rows that are records that cannot be read (a run stops at the first unless
    /// `--skip-invalid`), and the first `SHOWN` of them.
    pub malformed: u64,
    pub malformed_shown: Vec<String>,
    /// The first `SHOWN` problems, `file:line: what`.
    pub problems: Vec<String>,
    /// A problem that stopped reading (the rest of the file was not checked).
    pub stopped: Option<String>,
    pub explicit_ids: u64,
    pub models: BTreeMap<String, u64>,
    /// The CSV header's columns or the first JSONL object's fields, as a line of text.
    pub columns: String,
}

impl Validation {
    /// Whether every row can be sent and reading reached the end.
    pub fn is_clean(&self) -> bool {
        self.invalid == 0 && self.stopped.is_none() && self.rows > 0
    }
}

/// Reads the whole input once and collects what is wrong with it.
pub(crate) fn check(rows: input::RowStream, path: &Path) -> Validation {
    let mut v = Validation::default();
    for item in rows {
        let row = match item {
            Ok(row) => row,
            Err(e) => {
                v.stopped = Some(e.to_string());
                break;
            }
        };
        // Rows once, whatever the number of models (`--model a,b`); models per request.
        if row.slot == 0 {
            v.rows += 1;
            if row.explicit_id {
                v.explicit_ids += 1;
            }
            if let Some(problem) = row.problem(path) {
                v.invalid += 1;
                if row.is_malformed() {
                    v.malformed += 1;
                    if v.malformed <= SHOWN {
                        v.malformed_shown.push(problem.clone());
                    }
                }
                if v.invalid <= SHOWN {
                    v.problems.push(problem);
                }
            }
        }
        if let RowContent::Request(request) = &row.content {
            match v.models.get_mut(request.model.as_str()) {
                Some(n) => *n += 1,
                None => {
                    v.models.insert(request.model.clone(), 1);
                }
            }
        }
    }
    v
}

/// Before a run sends anything: every record of a file input must be readable, unless
/// `--skip-invalid` (which records each as an error and goes on). A run that met a malformed
/// line at row 900,000 would stop there after paying for the rows before it; this pass lists
/// every such line first (the first [`REFUSED_SHOWN`]). Standard input is read once: it keeps
/// stopping at its first bad record.
pub(crate) fn refuse_unreadable_rows(
    input: &InputOptions,
    request: &RequestOptions,
) -> Result<(), Error> {
    if input.skip_invalid || input.reads_once() {
        return Ok(());
    }
    let v = check(input::open_reporting_all(input, request)?, &input.path);
    if v.malformed == 0 && v.stopped.is_none() {
        return Ok(());
    }
    let mut lines: Vec<String> = v
        .malformed_shown
        .iter()
        .take(REFUSED_SHOWN)
        .cloned()
        .collect();
    if v.malformed > REFUSED_SHOWN as u64 {
        lines.push(format!(
            "… and {} more (`promptbatch validate` lists them)",
            group(v.malformed - REFUSED_SHOWN as u64)
        ));
    }
    if let Some(stopped) = &v.stopped {
        lines.push(format!("{stopped} (reading stopped there)"));
    }
    Err(Error::Config(format!(
        "{}: {} cannot be read, so nothing was sent:\n  {}\nfix them, or pass --skip-invalid to record each as an error and send the other rows",
        input.path.display(),
        count(v.malformed.max(u64::from(v.stopped.is_some())), "record"),
        lines.join("\n  ")
    )))
}

/// Unreadable records a refused run lists.
pub(crate) const REFUSED_SHOWN: usize = 10;

/// `promptbatch validate`: one pass over the input, nothing sent.
pub fn validate(input: &InputOptions, request: &RequestOptions) -> Result<Validation, Error> {
    let rows = input::open_reporting_all(input, request)?;
    let mut validation = check(rows, &input.path);
    validation.columns = describe_columns(input);
    Ok(validation)
}

/// What `validate` found, as printed: the problems, the counts, ids, columns, models, verdict.
pub fn render(v: &Validation, input: &InputOptions) -> String {
    let columns = &v.columns;
    let path = input.path.display();
    let mut s = String::new();
    for problem in &v.problems {
        let _ = writeln!(s, "{problem}");
    }
    if v.invalid > SHOWN {
        let _ = writeln!(
            s,
            "… and {} more invalid rows (the first {SHOWN} are shown)",
            group(v.invalid - SHOWN)
        );
    }
    if let Some(stopped) = &v.stopped {
        let _ = writeln!(s, "{stopped}");
        let _ = writeln!(
            s,
            "reading stopped there: the rest of {path} was not checked; fix that record and validate again"
        );
    }
    let limit = input
        .limit
        .map_or_else(String::new, |n| format!(" (--limit {})", group(n)));
    let _ = writeln!(
        s,
        "{path}: {} data rows{limit}: {} valid, {} invalid",
        group(v.rows),
        group(v.rows - v.invalid),
        group(v.invalid)
    );
    let ids = match (&input.id_column, v.explicit_ids) {
        (Some(column), _) => format!("from column `{column}`"),
        (None, 0) => {
            "row numbers (the input has no `id` or `custom_id`; choose a column with --id-column)"
                .to_string()
        }
        (None, n) if n == v.rows => "from the input's `id` (else `custom_id`)".to_string(),
        (None, n) => format!(
            "from the input's `id`/`custom_id` for {} rows, row numbers for the other {}",
            group(n),
            group(v.rows - n)
        ),
    };
    let _ = writeln!(s, "ids: {ids}");
    let _ = writeln!(s, "{columns}");
    let models: Vec<String> = v
        .models
        .iter()
        .map(|(model, rows)| format!("{model} ({})", count(*rows, "row")))
        .collect();
    if !models.is_empty() {
        let _ = writeln!(s, "models: {}", models.join(", "));
    }
    let verdict = if v.rows == 0 && v.stopped.is_none() {
        "warning: no data rows: a run would send nothing".to_string()
    } else if v.is_clean() {
        "ok: every row can be sent".to_string()
    } else {
        "not ok: fix the rows above (or run with --skip-invalid to record them as errors and go on)"
            .to_string()
    };
    let _ = writeln!(s, "{verdict}");
    s
}

/// The CSV header's or Parquet file's columns, or the top-level fields of the first JSONL object.
fn describe_columns(input: &InputOptions) -> String {
    if input.reads_once() {
        return "columns: (standard input: not re-read)".to_string();
    }
    let source = input::source_for(input::resolve_format(input));
    let (what, names) = if source.has_header() {
        ("columns", source.header(input).unwrap_or_default())
    } else {
        (
            "fields of the first line",
            input::jsonl::first_object_fields(&input.path),
        )
    };
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    format!("{what}: {}", quoted.join(", "))
}
