//! The human-readable estimate: a summary table (figure and note per line), a table by model when
//! there are several or some are unpriced, and the first invalid row. Drawn with the tables
//! `report` uses ([`crate::report::text`]).

use super::{Estimate, ExpectedOutput, TimeEstimate};
use crate::report::text::{render, table};
use crate::util::human::{format_usd, group};

/// One summary line: what, the figure (right-aligned), a note.
type Line = [String; 3];

fn line(what: &str, figure: String, note: String) -> Line {
    [what.to_string(), figure, note]
}

impl Estimate {
    /// The human-readable estimate: plain text.
    pub fn to_table(&self) -> String {
        let mut t = table(&[]);
        let not_sent = self.not_sent_line();
        for row in [
            Some(self.rows_line()),
            not_sent,
            Some(self.prompt_line()),
            Some(self.expected_output_line()),
            Some(self.worst_output_line()),
            Some(self.expected_cost_line()),
            Some(self.worst_cost_line()),
            Some(self.batch_expected_line()),
            Some(self.batch_worst_line()),
            Some(self.time_line()),
        ]
        .into_iter()
        .flatten()
        {
            t.add_row(row.to_vec());
        }
        let mut s = format!("Estimate for {}\n", self.input);
        s += &render(t, &[1]);
        if self.models.len() > 1 || !self.unpriced_models.is_empty() {
            s += "\n";
            s += &self.models_table();
        }
        if let Some(first) = &self.first_invalid {
            s += &format!(
                "\n  first invalid row: {first}\n  (`promptbatch validate` lists them all; a run \
                 stops at the first malformed one unless --skip-invalid)\n"
            );
        }
        s
    }

    fn rows_line(&self) -> Line {
        let mut note = format!("{} invalid: not sent, no tokens", group(self.invalid_rows));
        if self.models_per_row > 1 {
            note.push_str(&format!(
                "; each row goes to {} models: one request per (row, model), counted here",
                self.models_per_row
            ));
        }
        line("rows", group(self.rows), note)
    }

    /// Rows answered without a request, and what they would cost sent; none when every row
    /// is sent (`--no-dedup` and no `--reuse`, or an input read once).
    fn not_sent_line(&self) -> Option<Line> {
        let n = self.not_sent.as_ref()?;
        let rows = n.duplicate_rows + n.reused_rows;
        let cost = match (n.expected_cost_usd, n.worst_cost_usd) {
            (Some(expected), _) => format!(
                "; sending them would cost {} (expected)",
                format_usd(expected)
            ),
            (None, Some(worst)) => format!("; sending them would cost up to {}", format_usd(worst)),
            (None, None) => String::new(),
        };
        let note = format!(
            "{} repeat another row's request (sent once), {} answered by --reuse outputs; the figures below leave them out{cost}",
            group(n.duplicate_rows),
            group(n.reused_rows)
        );
        Some(line("not sent", group(rows), note))
    }

    fn prompt_line(&self) -> Line {
        let exactness = if self.prompt_tokens_exact {
            "exact, o200k_base".to_string()
        } else if self.approximate_prompt_tokens == self.prompt_tokens {
            "APPROXIMATE: o200k_base count for non-GPT models".to_string()
        } else {
            format!(
                "{} of them APPROXIMATE: o200k_base count for non-GPT models",
                group(self.approximate_prompt_tokens)
            )
        };
        let mean = self
            .prompt_tokens_mean
            .map_or("-".to_string(), |m| format!("{m:.1}"));
        let note = format!("mean {mean} per row; {exactness}");
        line("prompt tokens", group(self.prompt_tokens), note)
    }

    fn expected_output_line(&self) -> Line {
        let Some(e) = &self.expected_output else {
            let note = "unknown: measure it with `promptbatch run INPUT --limit 200 -o \
                        sample.jsonl`, then pass --from-output sample.jsonl; or guess with \
                        --expect-output N";
            return line("expected output", "-".into(), note.into());
        };
        let total = self.expected_output_tokens.unwrap_or(0.0).round() as u64;
        let note = format!("{:.1} per row: {}", e.tokens_per_row, expected_source(e));
        line("expected output", group(total), note)
    }

    fn worst_output_line(&self) -> Line {
        match self.worst_output_tokens {
            Some(w) => line(
                "worst-case output",
                group(w),
                "every row uses its max_tokens".into(),
            ),
            None => line(
                "worst-case output",
                "-".into(),
                format!(
                    "unbounded: {} rows have no max_tokens; pass --max-tokens N",
                    group(self.rows_without_max_tokens)
                ),
            ),
        }
    }

    fn expected_cost_line(&self) -> Line {
        let range = match (self.expected_cost_low_usd, self.expected_cost_high_usd) {
            (Some(low), Some(high)) if high > low => Some(format!(
                "95 % range {} – {}",
                format_usd(low),
                format_usd(high)
            )),
            _ => None,
        };
        let why = if self.no_price() {
            "no row's model has a price"
        } else {
            "no expected output given"
        };
        self.cost_line("expected cost", self.expected_cost_usd, range, why)
    }

    fn worst_cost_line(&self) -> Line {
        let why = if self.no_price() {
            "no row's model has a price"
        } else {
            "worst case unbounded without max_tokens"
        };
        self.cost_line("worst-case cost", self.worst_cost_usd, None, why)
    }

    /// The expected cost through the Batch API, beside the live one above.
    fn batch_expected_line(&self) -> Line {
        let why = if self.no_price() {
            "no row's model has a price"
        } else {
            "no expected output given"
        };
        let mut line = self.cost_line(
            "batch expected cost",
            self.batch_expected_cost_usd,
            None,
            why,
        );
        if self.batch_expected_cost_usd.is_some() {
            line[2] = join_note("`run --via batch`: answers within 24 h", &line[2]);
        }
        line
    }

    /// The worst-case cost through the Batch API (what `--max-cost` checks before submitting).
    fn batch_worst_line(&self) -> Line {
        let why = if self.no_price() {
            "no row's model has a price"
        } else {
            "worst case unbounded without max_tokens"
        };
        self.cost_line(
            "batch worst-case cost",
            self.batch_worst_cost_usd,
            None,
            why,
        )
    }

    /// A cost, its range if any and the unpriced rows it leaves out; or why there is none.
    fn cost_line(&self, what: &str, cost: Option<f64>, range: Option<String>, why: &str) -> Line {
        let Some(cost) = cost else {
            return line(what, "-".into(), why.into());
        };
        let mut notes: Vec<String> = range.into_iter().collect();
        if self.unpriced_rows > 0 {
            notes.push(format!(
                "+ {} unpriced rows ({}: add prices with --prices FILE)",
                group(self.unpriced_rows),
                self.unpriced_models.join(", ")
            ));
        }
        line(what, format_usd(cost), notes.join("; "))
    }

    /// Whether no row's model has a price.
    fn no_price(&self) -> bool {
        !self.models.is_empty() && self.models.iter().all(|m| !m.priced)
    }

    fn time_line(&self) -> Line {
        match &self.time {
            None => line(
                "time",
                "-".into(),
                "not limited: pass --rpm and/or --tpm for an estimate".into(),
            ),
            Some(t) => line("time", format_minutes(t.minutes), self.time_note(t)),
        }
    }

    /// The limits assumed, and which of them sets the duration.
    fn time_note(&self, t: &TimeEstimate) -> String {
        let mut limits = Vec::new();
        if let Some(rpm) = t.rpm {
            limits.push(format!("--rpm {rpm}"));
        }
        if let Some(tpm) = t.tpm {
            limits.push(format!("--tpm {tpm}"));
        }
        limits.push(format!("-c {}", self.concurrency));
        let basis = match t.output_basis {
            "worst" => "worst-case output",
            "expected" => "expected output",
            _ => "prompt tokens only",
        };
        let detail = match t.limited_by {
            "tpm" => format!("tokens are the limit, counting {basis}"),
            "latency" => {
                let ms = self
                    .expected_output
                    .as_ref()
                    .and_then(|e| e.latency_ms_mean)
                    .unwrap_or(0.0);
                format!("the sample's mean latency of {ms:.0} ms is the limit")
            }
            _ => "requests are the limit".to_string(),
        };
        format!("at {}; {detail}", limits.join(" "))
    }

    fn models_table(&self) -> String {
        let header = [
            "model",
            "rows",
            "prompt tokens",
            "tokens",
            "expected cost",
            "worst cost",
            "batch expected",
            "batch worst",
        ];
        let mut t = table(&header);
        for m in &self.models {
            let cost = |c: Option<f64>| match (m.priced, c) {
                (false, _) => "unpriced".to_string(),
                (true, c) => c.map_or("-".to_string(), format_usd),
            };
            t.add_row(vec![
                m.model.clone(),
                group(m.rows),
                group(m.prompt_tokens),
                if m.exact { "exact" } else { "approximate" }.to_string(),
                cost(m.expected_cost_usd),
                cost(m.worst_cost_usd),
                cost(m.batch_expected_cost_usd),
                cost(m.batch_worst_cost_usd),
            ]);
        }
        render(t, &[1, 2, 4, 5, 6, 7])
    }
}

/// `first; second`, or `first` alone when `second` is empty.
fn join_note(first: &str, second: &str) -> String {
    if second.is_empty() {
        first.to_string()
    } else {
        format!("{first}; {second}")
    }
}

/// Where the expected output per row comes from.
fn expected_source(e: &ExpectedOutput) -> String {
    if e.source != "from-output" {
        return "--expect-output".to_string();
    }
    format!(
        "mean of {} ok rows of --from-output, 95 % range {:.1}–{:.1}; reasoning {:.1}; {:.0} % \
         of prompt tokens cached",
        group(e.from_output_ok_rows.unwrap_or(0)),
        e.tokens_per_row_low,
        e.tokens_per_row_high,
        e.reasoning_tokens_per_row.unwrap_or(0.0),
        e.cached_share.unwrap_or(0.0) * 100.0
    )
}

/// `12.5` minutes → `12.5 min`; long ones as hours.
fn format_minutes(minutes: f64) -> String {
    if minutes < 1.0 {
        format!("{:.0} s", (minutes * 60.0).ceil())
    } else if minutes < 120.0 {
        format!("{minutes:.1} min")
    } else {
        format!("{:.1} h", minutes / 60.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::estimate::ModelEstimate;
    use crate::report::text::tests::{display_width, flat};

    fn model(name: &str, rows: u64, exact: bool, cost: Option<(f64, f64)>) -> ModelEstimate {
        ModelEstimate {
            model: name.into(),
            rows,
            prompt_tokens: rows * 1000,
            exact,
            priced: cost.is_some(),
            expected_cost_usd: cost.map(|c| c.0),
            worst_cost_usd: cost.map(|c| c.1),
            batch_expected_cost_usd: cost.map(|c| c.0 / 2.0),
            batch_worst_cost_usd: cost.map(|c| c.1 / 2.0),
        }
    }

    fn estimate() -> Estimate {
        Estimate {
            input: "in.jsonl".into(),
            tokenizer: "o200k_base",
            rows: 1203,
            models_per_row: 1,
            request_rows: 1200,
            invalid_rows: 3,
            first_invalid: Some("in.jsonl:7: the prompt is empty".into()),
            prompt_tokens: 1_200_000,
            prompt_tokens_mean: Some(1000.0),
            prompt_tokens_exact: false,
            approximate_prompt_tokens: 200_000,
            schema_tokens_per_row: 0,
            expected_output: Some(ExpectedOutput {
                source: "from-output",
                tokens_per_row: 50.0,
                tokens_per_row_low: 45.0,
                tokens_per_row_high: 55.0,
                reasoning_tokens_per_row: Some(16.0),
                cached_share: Some(0.25),
                latency_ms_mean: Some(900.0),
                from_output_ok_rows: Some(200),
            }),
            expected_output_tokens: Some(60_000.0),
            worst_output_tokens: Some(120_000),
            rows_without_max_tokens: 0,
            expected_cost_usd: Some(2.5),
            expected_cost_low_usd: Some(2.25),
            expected_cost_high_usd: Some(2.75),
            worst_cost_usd: Some(4.0),
            batch_expected_cost_usd: Some(1.25),
            batch_worst_cost_usd: Some(2.0),
            unpriced_rows: 100,
            unpriced_models: vec!["模型中文".into()],
            models: vec![
                model("gpt-5.2", 1000, true, Some((2.0, 3.0))),
                model("modèle-é", 100, false, Some((0.5, 1.0))),
                model("模型中文", 100, false, None),
            ],
            time: Some(TimeEstimate {
                rpm: Some(500),
                tpm: Some(100_000),
                minutes: 13.2,
                limited_by: "tpm",
                output_basis: "worst",
            }),
            concurrency: 4,
            not_sent: Some(crate::estimate::NotSent {
                duplicate_rows: 30,
                reused_rows: 12,
                prompt_tokens: 420,
                expected_cost_usd: Some(0.25),
                worst_cost_usd: None,
            }),
        }
    }

    #[test]
    fn every_figure_and_note_is_printed() {
        let text = estimate().to_table();
        let flat = flat(&text);
        for expected in [
            "Estimate for in.jsonl",
            "rows 1,203 3 invalid: not sent, no tokens",
            "prompt tokens 1,200,000 mean 1000.0 per row; 200,000 of them APPROXIMATE",
            "expected output 60,000 50.0 per row: mean of 200 ok rows of --from-output, 95 % \
             range 45.0–55.0; reasoning 16.0; 25 % of prompt tokens cached",
            "worst-case output 120,000 every row uses its max_tokens",
            "expected cost $2.50 95 % range $2.25 – $2.75; + 100 unpriced rows (模型中文: add \
             prices with --prices FILE)",
            "worst-case cost $4.00 + 100 unpriced rows",
            "time 13.2 min at --rpm 500 --tpm 100000 -c 4; tokens are the limit, counting \
             worst-case output",
            "model rows prompt tokens tokens expected cost worst cost",
            "gpt-5.2 1,000 1,000,000 exact $2.00 $3.00",
            "模型中文 100 100,000 approximate unpriced unpriced",
            "first invalid row: in.jsonl:7: the prompt is empty (`promptbatch validate` lists \
             them all; a run stops at the first malformed one unless --skip-invalid)",
        ] {
            assert!(flat.contains(expected), "{expected:?} missing from\n{text}");
        }
        assert!(!text.contains('\x1b'), "no colours: {text}");
        assert!(text.lines().all(|l| l == l.trim_end()), "{text}");
    }

    #[test]
    fn what_is_unknown_says_why() {
        let mut e = estimate();
        e.expected_output = None;
        e.expected_output_tokens = None;
        e.expected_cost_usd = None;
        e.expected_cost_low_usd = None;
        e.expected_cost_high_usd = None;
        e.worst_output_tokens = None;
        e.worst_cost_usd = None;
        e.rows_without_max_tokens = 1200;
        e.time = None;
        let flat = flat(&e.to_table());
        for expected in [
            "expected output - unknown: measure it with `promptbatch run INPUT --limit 200 -o \
             sample.jsonl`, then pass --from-output sample.jsonl; or guess with --expect-output N",
            "worst-case output - unbounded: 1,200 rows have no max_tokens; pass --max-tokens N",
            "expected cost - no expected output given",
            "worst-case cost - worst case unbounded without max_tokens",
            "time - not limited: pass --rpm and/or --tpm for an estimate",
        ] {
            assert!(flat.contains(expected), "{expected:?} missing from {flat}");
        }
    }

    #[test]
    fn model_names_in_any_script_align_and_numbers_are_right_aligned() {
        let text = estimate().models_table();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        let edge = |line: &str, figure: &str| {
            let end = line.find(figure).unwrap() + figure.len();
            display_width(&line[..end])
        };
        let rows = edge(lines[0], "rows");
        let worst = edge(lines[0], "worst cost");
        let batch_worst = edge(lines[0], "batch worst");
        for (line, count, cost, batch_cost) in [
            (lines[1], "1,000", "$3.00", "$1.50"),
            (lines[2], " 100", "$1.00", "$0.5000"),
            (lines[3], " 100", "unpriced", "unpriced"),
        ] {
            assert_eq!(edge(line, count), rows, "{text}");
            if cost != "unpriced" {
                assert_eq!(edge(line, cost), worst, "{text}");
            }
            assert_eq!(display_width(line), batch_worst, "{text}");
            assert!(line.ends_with(batch_cost), "{text}");
        }
    }

    #[test]
    fn minutes_read_as_seconds_minutes_or_hours() {
        assert_eq!(format_minutes(0.25), "15 s");
        assert_eq!(format_minutes(12.5), "12.5 min");
        assert_eq!(format_minutes(180.0), "3.0 h");
    }
}
