//! What a path names, decided in one place for inputs and outputs alike: the format its
//! extension implies (`.csv`, `.parquet`, else JSONL), a Parquet output's JSONL checkpoint,
//! whether it is standard input, and its sibling files (`OUTPUT.bak`, `OUTPUT.rewrite`, …).

use std::path::{Path, PathBuf};

/// The file formats promptbatch reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Jsonl,
    Csv,
    Parquet,
}

impl FileKind {
    /// The one extension rule of inputs and outputs: the kind a path's extension names (any
    /// case): `.csv`, `.parquet`, or JSON lines (`.jsonl`, `.ndjson`, `.jsonlines`, `.json`);
    /// `None` for any other extension (an output is then JSONL, an input's content decides).
    pub(crate) fn of(path: &Path) -> Option<FileKind> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(FileKind::Csv),
            "parquet" => Some(FileKind::Parquet),
            "jsonl" | "ndjson" | "jsonlines" | "json" => Some(FileKind::Jsonl),
            _ => None,
        }
    }
}

/// Whether the path's extension names CSV (an output is JSONL unless it does).
pub fn is_csv(path: &Path) -> bool {
    FileKind::of(path) == Some(FileKind::Csv)
}

/// The extension of a file kind promptbatch does not write (a spreadsheet, another table
/// format), lower-cased: an output named so would hold JSONL no tool opening it expects.
pub(crate) fn foreign_output_extension(path: &Path) -> Option<String> {
    const FOREIGN: [&str; 14] = [
        "xlsx", "xls", "xlsm", "xlsb", "ods", "numbers", "tsv", "feather", "arrow", "avro", "orc",
        "sqlite", "db", "pdf",
    ];
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    FOREIGN.contains(&ext.as_str()).then_some(ext)
}

/// `.parquet`: a Parquet input, or a run's output written as Parquet at the end of the run
/// from its JSONL checkpoint ([`checkpoint`]).
pub(crate) fn is_parquet(path: &Path) -> bool {
    FileKind::of(path) == Some(FileKind::Parquet)
}

/// The JSONL checkpoint of a Parquet output: `results.parquet` → `results.parquet.jsonl`. A run
/// appends its records there (Parquet cannot be appended to); resume, the lock and `--fresh`
/// work on it, and the Parquet file is written from it when the run completes.
pub(crate) fn checkpoint(path: &Path) -> PathBuf {
    suffixed(path, ".jsonl")
}

/// Whether `path` names standard input (`-`).
pub(crate) fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// `path` + `suffix`, in the same folder (so renames between them are atomic).
pub(crate) fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The event log beside an output (`OUTPUT.events.jsonl`, `monitor/event_log.rs`), and its
/// rotated part (`OUTPUT.events.1.jsonl`).
pub(crate) fn event_logs(output: &Path) -> [PathBuf; 2] {
    [
        suffixed(output, ".events.jsonl"),
        suffixed(output, ".events.1.jsonl"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_stdin_and_siblings() {
        assert!(is_csv(Path::new("a/b.CSV")) && !is_csv(Path::new("b.csv.jsonl")));
        assert!(!is_csv(Path::new("csv")));
        assert!(is_parquet(Path::new("r.Parquet")) && !is_parquet(Path::new("r.parquet.jsonl")));
        assert_eq!(
            checkpoint(Path::new("d/r.parquet")),
            Path::new("d/r.parquet.jsonl")
        );
        assert_eq!(FileKind::of(Path::new("x.NDJSON")), Some(FileKind::Jsonl));
        assert_eq!(FileKind::of(Path::new("x.txt")), None);
        assert_eq!(FileKind::of(Path::new("x")), None);
        assert!(is_stdin(Path::new("-")) && !is_stdin(Path::new("./-")));
        assert_eq!(
            suffixed(Path::new("d/out.jsonl"), ".bak.2"),
            Path::new("d/out.jsonl.bak.2")
        );
    }
}
