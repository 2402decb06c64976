//! The human-readable report, and the plain-text tables `report` and `estimate` share: drawn by
//! `comfy-table` without borders or colours (so they read the same piped to a file), numbers
//! right-aligned, widths measured in displayed characters (a model name in any script aligns).

use comfy_table::presets::NOTHING;
use comfy_table::{CellAlignment, ColumnConstraint, ContentArrangement, Table};

use super::{Cost, ModelCost, Report};
use crate::util::human::{format_usd, group};

/// Columns a table may take before its widest column wraps: `COLUMNS` when the shell exports it
/// (at least 60), else 100 (always 100 in unit tests, whatever the environment).
pub(crate) fn width() -> u16 {
    if cfg!(test) {
        return 100;
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<u16>().ok())
        .filter(|&w| w >= 60)
        .unwrap_or(100)
}

/// A borderless table, with this header if any.
pub(crate) fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(width());
    if !header.is_empty() {
        t.set_header(header.to_vec());
    }
    t
}

/// The table's lines, indented by two spaces, without trailing blanks; the columns at `right`
/// (numbers) right-aligned. Only a last column of text (a note, a message) wraps; the others keep
/// their width.
pub(crate) fn render(mut t: Table, right: &[usize]) -> String {
    let last = t.column_count().saturating_sub(1);
    for (i, column) in t.column_iter_mut().enumerate() {
        if right.contains(&i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
        if i < last || right.contains(&i) {
            column.set_constraint(ColumnConstraint::ContentWidth);
        }
    }
    if let Some(first) = t.column_mut(0) {
        first.set_padding((2, 1));
    }
    t.lines().map(|l| l.trim_end().to_string() + "\n").collect()
}

/// `12.3%` of `of` (0 % of nothing).
fn percent(n: u64, of: u64) -> String {
    let share = if of == 0 {
        0.0
    } else {
        n as f64 * 100.0 / of as f64
    };
    format!("{share:.1}%")
}

impl Report {
    /// The human-readable report: plain text, one section per table.
    pub fn to_table(&self) -> String {
        let mut s = format!("Report of {} ({})\n", self.output, self.format);
        s += &self.counts_table();
        if !self.top_errors.is_empty() {
            s += "\nTop errors\n";
            s += &self.errors_table();
        }
        s += "\nTokens\n";
        s += &self.tokens_table();
        s += "\nCost\n";
        s += &self.cost.to_table();
        s += "\nLatency of ok rows\n";
        s += &self.latency_table();
        s += "\nAttempts\n";
        s += &self.attempts_table();
        s += &self.beside_lines();
        s
    }

    /// Batches not collected yet and paid answers no record holds, when there are any.
    fn beside_lines(&self) -> String {
        let b = &self.beside;
        let mut s = String::new();
        if b.batches_running > 0 {
            s += &format!(
                "\nBatches not collected yet: {} ({} rows; run the same `run --via batch` command to collect them)\n",
                group(b.batches_running),
                group(b.rows_in_batches)
            );
        }
        if b.unmatched_answers > 0 {
            s += &format!(
                "\nPaid answers no record holds: {} ({} at batch prices, not in the cost above), kept in {}\n",
                group(b.unmatched_answers),
                crate::util::human::format_usd(b.unmatched_usd),
                b.unmatched_file
            );
        }
        s
    }

    /// Rows, ok, error, simulated, and a torn last record.
    fn counts_table(&self) -> String {
        let mut t = table(&[]);
        t.add_row(vec!["rows".to_string(), group(self.rows)]);
        for (name, n) in [("ok", self.ok), ("error", self.error)] {
            t.add_row(vec![name.to_string(), group(n), percent(n, self.rows)]);
        }
        if self.schema_failures > 0 {
            t.add_row(vec![
                "schema failures".to_string(),
                group(self.schema_failures),
                percent(self.schema_failures, self.rows),
                "error records whose answers never matched --json-schema".to_string(),
            ]);
        }
        let answered = &self.answered;
        if answered.deduplicated + answered.reused > 0 {
            for (name, n, note) in [
                (
                    "paid (sent)",
                    answered.sent,
                    "a request was sent (or the row could not be)",
                ),
                (
                    "deduplicated",
                    answered.deduplicated,
                    "copied from a row with the same request (duplicate_of), cost 0",
                ),
                (
                    "reused",
                    answered.reused,
                    "copied from earlier outputs (--reuse), cost 0",
                ),
            ] {
                t.add_row(vec![
                    name.to_string(),
                    group(n),
                    percent(n, self.rows),
                    note.to_string(),
                ]);
            }
            t.add_row(vec![
                "saved".to_string(),
                format_usd(answered.saved_usd),
                String::new(),
                "what the copied answers cost when they were bought".to_string(),
            ]);
        }
        if self.simulated > 0 {
            t.add_row(vec![
                "simulated".to_string(),
                group(self.simulated),
                percent(self.simulated, self.rows),
                "answered by --dry-run's simulator, not an API".to_string(),
            ]);
        }
        let mut s = render(t, &[1, 2]);
        if let Some(torn) = &self.torn_last_line {
            s += &format!(
                "  torn last record at line {} skipped (incomplete write)\n",
                torn.line
            );
        }
        s
    }

    fn errors_table(&self) -> String {
        let mut t = table(&["rows", "message"]);
        for e in &self.top_errors {
            t.add_row(vec![group(e.count), e.message.clone()]);
        }
        render(t, &[0])
    }

    /// Sums by kind, and the means per ok row.
    fn tokens_table(&self) -> String {
        let k = &self.tokens;
        let mut t = table(&[]);
        for (name, n) in [
            ("prompt", k.prompt),
            ("cached", k.cached),
            ("completion", k.completion),
            ("reasoning", k.reasoning),
            ("total", k.total),
        ] {
            t.add_row(vec![name.to_string(), group(n)]);
        }
        let mut s = render(t, &[1]);
        if k.cached > 0 {
            s += &self.prompt_cache_line();
        }
        if let Some(m) = &self.mean_per_ok_row {
            s += &format!(
                "  per ok row: prompt {:.1} · completion {:.1} · reasoning {:.1}\n",
                m.prompt_tokens, m.completion_tokens, m.reasoning_tokens
            );
        }
        s
    }

    /// The cached share of prompt tokens and what it saved.
    fn prompt_cache_line(&self) -> String {
        let c = &self.prompt_cache;
        let mut s = format!(
            "  prompt cache: {} of prompt tokens cached, saved {}",
            percent(self.tokens.cached, self.tokens.prompt),
            format_usd(c.saved_usd)
        );
        if c.simulated_saved_usd > 0.0 {
            s += &format!(" (+ {} simulated)", format_usd(c.simulated_saved_usd));
        }
        if c.unpriced_rows > 0 {
            s += &format!(" (+ {} unpriced rows)", group(c.unpriced_rows));
        }
        s + "\n"
    }

    fn latency_table(&self) -> String {
        let Some(l) = &self.latency_ms else {
            return "  no ok rows\n".to_string();
        };
        let mut t = table(&["p50", "p90", "p99", "max"]);
        t.add_row(
            [l.p50, l.p90, l.p99, l.max]
                .iter()
                .map(|ms| format!("{ms} ms"))
                .collect::<Vec<_>>(),
        );
        render(t, &[0, 1, 2, 3])
    }

    fn attempts_table(&self) -> String {
        let mut t = table(&["attempts", "rows", "share"]);
        for (attempts, rows) in &self.attempts {
            t.add_row(vec![
                attempts.to_string(),
                group(*rows),
                percent(*rows, self.rows),
            ]);
        }
        render(t, &[0, 1, 2])
    }
}

impl Cost {
    /// Cost by model, the total, and where the costs came from.
    fn to_table(&self) -> String {
        let mut t = table(&["model", "rows", "cost", "note"]);
        for m in &self.by_model {
            let cost = match m.cost_usd {
                Some(c) => format_usd(c),
                None if m.unpriced_rows > 0 => "unpriced".to_string(),
                None => "-".to_string(), // only simulated rows: see the note
            };
            t.add_row(vec![m.model.clone(), group(m.rows), cost, model_note(m)]);
        }
        let unpriced = if self.unpriced_rows > 0 {
            format!(
                "+ {} unpriced rows of {}: add prices with --prices FILE",
                group(self.unpriced_rows),
                self.unpriced_models.join(", ")
            )
        } else {
            String::new()
        };
        t.add_row(vec![
            "total".to_string(),
            String::new(),
            format_usd(self.total_usd),
            unpriced,
        ]);
        let mut s = render(t, &[1, 2]);
        if self.computed_rows > 0 {
            s += &format!(
                "  ({} rows had no cost_usd: computed from the price table)\n",
                group(self.computed_rows)
            );
        }
        s
    }
}

/// What a model's cost leaves out: unpriced rows, simulated rows.
fn model_note(m: &ModelCost) -> String {
    let mut notes = Vec::new();
    if m.unpriced_rows > 0 {
        notes.push(format!("+ {} unpriced rows", group(m.unpriced_rows)));
    }
    if m.simulated_rows > 0 {
        notes.push(format!(
            "+ {} simulated rows ({} not spent)",
            group(m.simulated_rows),
            format_usd(m.simulated_usd)
        ));
    }
    notes.join("; ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::report::{ErrorCount, Latency, Means, PromptCache, Tokens, TornLine};

    /// Whitespace runs as one space: a note wrapped over lines reads as one.
    pub(crate) fn flat(s: &str) -> String {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    fn model(name: &str, rows: u64, cost: Option<f64>, unpriced: u64, sim: u64) -> ModelCost {
        ModelCost {
            model: name.into(),
            rows,
            cost_usd: cost,
            unpriced_rows: unpriced,
            simulated_rows: sim,
            simulated_usd: sim as f64 * 0.001,
        }
    }

    fn report() -> Report {
        Report {
            output: "out.jsonl".into(),
            format: "jsonl",
            rows: 1200,
            ok: 1150,
            error: 50,
            schema_failures: 0,
            simulated: 7,
            torn_last_line: Some(TornLine {
                line: 1201,
                reason: "no line end".into(),
            }),
            top_errors: vec![ErrorCount {
                message: "HTTP 400: bad request".into(),
                count: 50,
                examples: vec!["r1".into()],
            }],
            tokens: Tokens {
                prompt: 123_456,
                cached: 1_000,
                completion: 45_678,
                reasoning: 0,
                total: 169_134,
            },
            prompt_cache: PromptCache {
                cached_share: Some(1_000.0 / 123_456.0),
                saved_usd: 0.0016,
                simulated_saved_usd: 0.0,
                unpriced_rows: 2,
            },
            cost: Cost {
                total_usd: 1.5,
                simulated_usd: 0.007,
                from_records_rows: 1000,
                computed_rows: 150,
                unpriced_rows: 43,
                unpriced_models: vec!["模型中文".into()],
                by_model: vec![
                    model("gpt-5.2", 1150, Some(1.5), 0, 0),
                    model("模型中文", 43, None, 43, 0),
                    model("modèle-é", 7, None, 0, 7),
                ],
            },
            latency_ms: Some(Latency {
                p50: 800,
                p90: 1500,
                p99: 4000,
                max: 12_000,
            }),
            attempts: [(1, 1100), (2, 100)].into_iter().collect(),
            mean_per_ok_row: Some(Means {
                prompt_tokens: 100.0,
                completion_tokens: 40.0,
                reasoning_tokens: 0.0,
            }),
            beside: Default::default(),
            timeline: None,
            token_histogram: super::super::histogram(&[[0; super::super::HISTOGRAM_BINS]; 4]),
            slowest: Vec::new(),
            runs: Vec::new(),
            batches: Vec::new(),
            answered: crate::report::Answered {
                sent: 1158,
                deduplicated: 30,
                reused: 12,
                saved_usd: 0.25,
            },
        }
    }

    #[test]
    fn every_figure_and_note_is_printed() {
        let text = report().to_table();
        let flat = flat(&text);
        for expected in [
            "Report of out.jsonl (jsonl)",
            "rows 1,200",
            "ok 1,150 95.8%",
            "error 50 4.2%",
            "simulated 7 0.6% answered by --dry-run's simulator, not an API",
            "torn last record at line 1201 skipped (incomplete write)",
            "50 HTTP 400: bad request",
            "prompt 123,456",
            "total 169,134",
            "per ok row: prompt 100.0 · completion 40.0 · reasoning 0.0",
            "prompt cache: 0.8% of prompt tokens cached, saved $0.0016 (+ 2 unpriced rows)",
            "gpt-5.2 1,150 $1.50",
            "模型中文 43 unpriced + 43 unpriced rows",
            "modèle-é 7 - + 7 simulated rows ($0.0070 not spent)",
            "total $1.50 + 43 unpriced rows of 模型中文: add prices with --prices FILE",
            "(150 rows had no cost_usd: computed from the price table)",
            "800 ms 1500 ms 4000 ms 12000 ms",
            "1 1,100 91.7%",
            "2 100 8.3%",
        ] {
            assert!(flat.contains(expected), "{expected:?} missing from\n{text}");
        }
        assert!(!text.contains('\x1b'), "no colours: {text}");
        assert!(text.lines().all(|l| l == l.trim_end()), "{text}");
    }

    /// Display columns of `s`: CJK ideographs take two, the other characters here one.
    pub(crate) fn display_width(s: &str) -> usize {
        s.chars()
            .map(|c| {
                if ('\u{4e00}'..='\u{9fff}').contains(&c) {
                    2
                } else {
                    1
                }
            })
            .sum()
    }

    #[test]
    fn model_names_in_any_script_align_and_numbers_are_right_aligned() {
        let text = report().cost.to_table();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        // The right edge of the rows column: the header's `rows` and every model's count.
        let edge = |line: &str, figure: &str| {
            let end = line.find(figure).unwrap() + figure.len();
            display_width(&line[..end])
        };
        let header = edge(lines[0], "rows");
        assert_eq!(edge(lines[1], "1,150"), header, "{text}");
        assert_eq!(edge(lines[2], " 43"), header, "{text}");
        assert_eq!(edge(lines[3], " 7"), header, "{text}");
        // And of the cost column.
        let cost = edge(lines[0], "cost");
        assert_eq!(edge(lines[1], "$1.50"), cost, "{text}");
        assert_eq!(edge(lines[2], "unpriced"), cost, "{text}");
        assert_eq!(edge(lines[4], "$1.50"), cost, "{text}");
    }
}
