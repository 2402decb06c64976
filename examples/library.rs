//! The library example of GUIDE.md ("As a Rust library"), kept compiling by `cargo test`:
//! two rows from memory through the built-in simulator (no key, no network, no cost).
//! `cargo run --example library`

use std::sync::{Arc, Mutex};

use promptbatch::{InputFormat, InputOptions, Job, SimOptions, StopReason};

#[tokio::main]
async fn main() -> Result<(), promptbatch::Error> {
    // Rows can come from a file (`Job::new("data.csv", "out.jsonl")`) or from memory.
    let rows = "{\"id\": \"a\", \"prompt\": \"Say hi\"}\n\
                {\"id\": \"b\", \"prompt\": \"Say bye\"}\n";
    let input = InputOptions::from_reader("greetings", InputFormat::Jsonl, rows.as_bytes());
    let output = std::env::temp_dir().join("promptbatch-example.jsonl");
    // Rows from memory are read once, like standard input: they cannot resume an output that
    // already has records, so start from an empty one.
    let _ = std::fs::remove_file(&output);

    // Every record also reaches a callback once it is safely in the output file.
    let answers = Arc::new(Mutex::new(Vec::new()));
    let seen = answers.clone();
    let summary = Job::with_input(input, &output)
        .model("gpt-5.2")
        .concurrency(8)
        .rpm(6_000)
        // No key, no network, no cost: the built-in simulator on a loopback port.
        // Drop this line to send to the API (key from EVOLINK_API_KEY, else OPENAI_API_KEY).
        .dry_run(SimOptions::default())
        .on_record(move |record| {
            let answer = (
                record.id.clone(),
                record.completion.clone().unwrap_or_default(),
            );
            seen.lock().unwrap().push(answer);
        })
        .run()
        .await?;

    assert!(matches!(summary.stop, StopReason::Completed));
    assert_eq!((summary.ok, summary.errors), (2, 0));
    let mut answers = answers.lock().unwrap().clone();
    answers.sort();
    assert_eq!(
        answers,
        [
            ("a".to_string(), "echo: Say hi".to_string()),
            ("b".to_string(), "echo: Say bye".to_string())
        ]
    );

    // The same records are in the output file, which a later run would resume from.
    let report = promptbatch::report(&output, None)?;
    assert_eq!((report.rows, report.ok), (2, 2));
    println!(
        "{} rows, {} ok, written to {}",
        report.rows,
        report.ok,
        output.display()
    );
    Ok(())
}
