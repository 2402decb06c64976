//! What a path names, decided in one place for inputs and outputs alike: the format its
//! extension implies, whether it is standard input, and its sibling files (`OUTPUT.bak`,
//! `OUTPUT.rewrite`, …).

use std::path::{Path, PathBuf};

/// The one extension rule of inputs and outputs: `.csv` (any case) is CSV, anything else JSONL.
pub fn is_csv(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
}

/// Whether `path` names standard input (`-`).
pub fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// `path` + `suffix`, in the same folder (so renames between them are atomic).
pub fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_stdin_and_siblings() {
        assert!(is_csv(Path::new("a/b.CSV")) && !is_csv(Path::new("b.csv.jsonl")));
        assert!(!is_csv(Path::new("csv")));
        assert!(is_stdin(Path::new("-")) && !is_stdin(Path::new("./-")));
        assert_eq!(
            suffixed(Path::new("d/out.jsonl"), ".bak.2"),
            Path::new("d/out.jsonl.bak.2")
        );
    }
}
