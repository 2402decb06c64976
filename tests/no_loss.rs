//! Issue 23's paths, end to end on the real binary: a key given where a variable's name
//! belongs is never echoed; simulated answers are marked so wherever they come from; a bad line
//! in the middle of a file is found before the first request; records no row claims are kept.

mod common;

use common::{command, Workdir};

/// `n` JSONL rows with ids `r1..rn`.
fn rows(n: usize) -> String {
    common::batch::rows(n, |_| "")
}

#[test]
fn a_key_passed_as_the_variable_name_is_never_printed() {
    let work = Workdir::new();
    let input = work.write("in.jsonl", &rows(3));
    let output = work.path("out.jsonl");
    let secret = "sk-abc123secret";
    let out = command()
        .arg("run")
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .args(["--api-key-env", secret])
        .env_remove("EVOLINK_API_KEY")
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("abc123secret"), "{stderr}");
    assert!(stderr.contains("--api-key-env takes the NAME"), "{stderr}");

    // The command printed to resume a run hides it too (a budget stop of a --dry-run).
    let out = command()
        .arg("run")
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .args([&format!("--api-key-env={secret}"), "--dry-run"])
        .args(["--max-cost", "0.0000001", "--max-tokens", "100"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--api-key-env=[redacted]"), "{stderr}");
    assert!(!stderr.contains("abc123secret"), "{stderr}");
}
