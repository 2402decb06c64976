//! `--shard K/N` and `promptbatch merge`: N copies of a run split the input between them, each
//! with its own output, and the merged file holds every row exactly once. The real binary
//! against the simulator.

mod common;

use std::collections::HashSet;

use common::*;

fn input(dir: &Workdir, n: usize, with_ids: bool) -> std::path::PathBuf {
    let lines: String = (0..n)
        .map(|i| {
            if with_ids {
                format!("{{\"id\":\"ticket-{i}\",\"prompt\":\"p{i}\"}}\n")
            } else {
                format!("{{\"prompt\":\"p{i}\"}}\n")
            }
        })
        .collect();
    dir.write(if with_ids { "ids.jsonl" } else { "rows.jsonl" }, &lines)
}

#[test]
fn shards_split_the_rows_and_merge_checks_every_row_once() {
    for with_ids in [true, false] {
        let sim = Sim::plain();
        let dir = Workdir::new();
        let input = input(&dir, 300, with_ids);
        let mut outputs = Vec::new();
        let mut sizes = Vec::new();
        for k in 0..3 {
            let output = dir.path(&format!("out-{k}.jsonl"));
            let shard = format!("{k}/3");
            let r = run(&sim, &input, &output, &["--shard", &shard, "-q"]);
            assert_eq!(r.code, 0, "{}", r.stderr);
            sizes.push(read_jsonl(&output).len());
            outputs.push(output);
        }
        assert_eq!(sizes.iter().sum::<usize>(), 300, "{sizes:?}");
        assert!(
            sizes.iter().all(|n| *n > 50),
            "a roughly even split: {sizes:?}"
        );
        assert_eq!(sim.requests(), 300, "every row sent once, by one shard");

        // A shard re-run resumes its own rows only.
        let r = run(&sim, &input, &outputs[1], &["--shard", "1/3", "-q"]);
        assert!(r.stderr.contains("already complete"), "{}", r.stderr);

        let all = dir.path("all.csv");
        let mut args = vec!["merge".to_string()];
        args.extend(outputs.iter().map(|p| p.display().to_string()));
        args.extend([
            "-o".into(),
            all.display().to_string(),
            "--expect-rows".into(),
            "300".into(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = run_args(&args);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(
            r.stderr
                .contains("every one of the 300 rows is present exactly once"),
            "{}",
            r.stderr
        );
        let mut reader = csv::Reader::from_path(&all).unwrap();
        let ids: HashSet<String> = reader
            .records()
            .map(|r| r.unwrap().get(0).unwrap().to_string())
            .collect();
        assert_eq!(ids.len(), 300);

        // The same file twice is named as such; overlapping shards (a copy of a shard) and a
        // missing shard are both caught, and a failed merge says it wrote nothing.
        let mut twice = args.clone();
        twice[2] = twice[1];
        twice.push("--force");
        let r = run_args(&twice);
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert!(r.stderr.contains("are the same file"), "{}", r.stderr);
        let copy = dir.path("copy-of-out-0.jsonl");
        std::fs::copy(&outputs[0], &copy).unwrap();
        let copy = copy.display().to_string();
        let mut overlap = args.clone();
        overlap[2] = &copy;
        overlap.push("--force");
        let r = run_args(&overlap);
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert!(
            r.stderr.contains("is in ") && r.stderr.contains("repeat an id"),
            "{}",
            r.stderr
        );
        assert!(!r.stderr.contains("merged "), "{}", r.stderr);
        let missing: Vec<&str> = args
            .iter()
            .copied()
            .filter(|a| !a.ends_with("out-2.jsonl"))
            .chain(["--force"])
            .collect();
        let r = run_args(&missing);
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert!(r.stderr.contains("missing"), "{}", r.stderr);
        // Neither failed merge replaced the good merged file.
        let mut reader = csv::Reader::from_path(&all).unwrap();
        assert_eq!(reader.records().count(), 300);

        // Overlap plus --expect-rows: the count compares distinct rows, not records.
        let mut both = overlap.clone();
        both.retain(|a| *a != "--force");
        both.push("--force");
        let r = run_args(&both);
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert!(
            r.stderr.contains(&format!(": {} missing", sizes[1])),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains("was not written"), "{}", r.stderr);
    }
}

#[test]
fn a_bad_shard_is_a_usage_error() {
    for bad in ["3/3", "1", "a/b", "0/0"] {
        let r = run_args(&[
            "run",
            "samples/prompts.jsonl",
            "-o",
            "/tmp/x.jsonl",
            "--dry-run",
            "--shard",
            bad,
        ]);
        assert_eq!(r.code, 2, "{bad}: {}", r.stderr);
        assert!(r.stderr.contains("JOB_COMPLETION_INDEX"), "{}", r.stderr);
    }
}
