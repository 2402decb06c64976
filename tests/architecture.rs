//! The rule ARCHITECTURE.md states: the command line depends on the library, never the reverse.
//! `src/cli.rs` belongs to the front ends — the binary (`mod cli` in `src/main.rs`) and the
//! Python module (`python/src/lib.rs` includes the same file, so keyword arguments are parsed
//! by the flags' own definitions); no file of the library may name it, nor clap. A grep over `src/`, so a new import of the CLI fails here with the file and line.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// Whether `code` contains `pattern` as whole words (`mod cli` but not `mod client`).
fn names(code: &str, pattern: &str) -> bool {
    code.match_indices(pattern).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + pattern.len()..].chars().next();
        let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !word(before) && !word(after)
    })
}

#[test]
fn the_word_match_tells_cli_from_client() {
    assert!(names("use crate::cli::RunArgs;", "crate::cli"));
    assert!(names("mod cli;", "mod cli"));
    assert!(!names("pub mod client;", "mod cli"));
    assert!(!names("use crate::client;", "crate::cli"));
}

#[test]
fn no_library_module_imports_the_cli() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let binary = [src.join("main.rs"), src.join("cli.rs")];
    let mut offences = Vec::new();
    for file in files.iter().filter(|f| !binary.contains(f)) {
        let text = std::fs::read_to_string(file).expect("a source file is readable");
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            let names_cli = [
                "crate::cli",
                "super::cli",
                "mod cli",
                "use cli",
                // No clap at all: option enums name their values through `Choice`, and the
                // library builds without the `cli` feature.
                "clap",
            ]
            .iter()
            .any(|pattern| names(code, pattern));
            if names_cli {
                offences.push(format!(
                    "{}:{}: {}",
                    file.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        files.len() > 20,
        "the scan found only {} files: is it looking at src/?",
        files.len()
    );
    assert!(
        offences.is_empty(),
        "library code must not depend on the command line (ARCHITECTURE.md):\n{}",
        offences.join("\n")
    );
}

#[test]
fn the_cli_is_part_of_the_binary_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let main = std::fs::read_to_string(src.join("main.rs")).expect("src/main.rs");
    assert!(
        main.lines().any(|l| l.trim() == "mod cli;"),
        "src/main.rs declares `mod cli;`"
    );
    let python =
        std::fs::read_to_string(src.join("../python/src/lib.rs")).expect("python/src/lib.rs");
    assert!(
        python.contains("#[path = \"../../src/cli.rs\"]"),
        "python/src/lib.rs includes src/cli.rs, the one definition of the options"
    );
}
