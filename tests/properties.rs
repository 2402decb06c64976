//! Property tests: arbitrary strings (non-ASCII, empty, control characters, huge) fed to every
//! library function that takes a model name, an id, a column name or a server message. None may
//! panic, and what is written must read back unchanged.

use std::path::Path;

use promptbatch::internals::classify::{classify_status, parse_go_duration, retry_after};
use promptbatch::internals::estimate_tokens;
use promptbatch::internals::format;
use promptbatch::internals::normalize_error;
use promptbatch::internals::PriceTable;
use promptbatch::internals::Records;
use promptbatch::internals::Template;
use promptbatch::TokenUsage;
use promptbatch::{Record, Status};
use proptest::prelude::*;

/// Any string, weighted towards multi-byte characters and the characters formats care about.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[é日本🙂\"',\r\n{}\\\\ a-z0-9-]{0,40}",
        Just(String::new()),
        Just("ééééééééé".to_string()),
        Just("ééé-2025-12-11".to_string()),
        Just("-2025-12-11".to_string()),
    ]
}

fn usage() -> TokenUsage {
    TokenUsage {
        prompt: 1_000,
        cached: 10,
        completion: 500,
        reasoning: 100,
        total: 1_500,
    }
}

fn record(id: String, model: String, prompt: String, error: Option<String>) -> Record {
    Record {
        id,
        row: 7,
        prompt,
        completion: error.is_none().then(|| "answer ✓".to_string()),
        finish_reason: Some("stop".into()),
        model,
        prompt_tokens: 1,
        cached_tokens: 0,
        completion_tokens: 2,
        reasoning_tokens: 0,
        total_tokens: 3,
        latency_ms: 4,
        attempts: 1,
        status: if error.is_some() {
            Status::Error
        } else {
            Status::Ok
        },
        error,
        response_id: None,
        cost_usd: None,
        fingerprint: "0123456789abcdef".into(),
        simulated: true,
        kept: None,
        started_at: None,
        finished_at: None,
    }
}

/// Writes `records` as the output format of `path` and reads them back.
fn round_trip(path: &Path, records: &[Record]) -> Vec<Record> {
    let mut encoder = format::for_path(path);
    let mut bytes = encoder.header();
    for r in records {
        encoder.encode(r, &mut bytes);
    }
    std::fs::write(path, bytes).unwrap();
    Records::<Record>::open(path)
        .unwrap()
        .map(|item| item.expect("readable").1)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn prices_accept_any_model_name(model in any_text()) {
        let table = PriceTable::load(None).unwrap();
        let price = table.get(&model).cloned();
        let cost = table.cost(&[&model], &usage());
        prop_assert_eq!(price.is_some(), cost.is_some());
        // A dated snapshot of a priced model has that model's price.
        let dated = format!("{model}-2025-12-11");
        if let Some(price) = price {
            prop_assert_eq!(table.get(&dated), Some(&price));
        }
    }

    #[test]
    fn templates_accept_any_text_and_any_column_name(text in any_text(), name in any_text()) {
        let _ = Template::parse(&text);
        let name = name.replace(['{', '}'], "");
        prop_assume!(!name.is_empty());
        let template = Template::parse(&format!("<{{{name}}}>")).unwrap();
        prop_assert_eq!(template.fields(), vec![name.as_str()]);
        let filled = template
            .fill(|field| (field == name).then_some(std::borrow::Cow::Borrowed("v")))
            .unwrap();
        prop_assert_eq!(filled, "<v>");
    }

    #[test]
    fn server_messages_never_break_classification(body in any_text(), header in any_text()) {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(value) = reqwest::header::HeaderValue::from_str(&header) {
            headers.insert("retry-after", value.clone());
            headers.insert("x-ratelimit-reset-requests", value);
        }
        let _ = retry_after(&headers);
        let _ = parse_go_duration(&header);
        for status in [400u16, 401, 429, 500, 503] {
            let failure = classify_status(status, &headers, body.as_bytes());
            let prefix = format!("HTTP {status}");
            prop_assert!(failure.message.starts_with(&prefix), "{}", failure.message);
        }
        let json = serde_json::json!({"error": {"message": body, "code": header, "type": header}});
        let _ = classify_status(400, &headers, json.to_string().as_bytes());
        let normal = normalize_error(&body);
        prop_assert_eq!(normalize_error(&normal), normal);
        let _ = estimate_tokens(&body);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn records_with_any_strings_read_back_unchanged(
        id in any_text(),
        model in any_text(),
        prompt in any_text(),
        error in proptest::option::of(any_text()),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let written = vec![
            record(id.clone(), model.clone(), prompt.clone(), error.clone()),
            record("next".into(), "gpt-5.2".into(), "p".into(), None),
        ];
        for name in ["out.jsonl", "out.csv"] {
            let read = round_trip(&dir.path().join(name), &written);
            let mut expected = written.clone();
            if name.ends_with(".csv") {
                // CSV has no null: an empty error or completion reads back as none.
                for r in &mut expected {
                    r.error = r.error.take().filter(|e| !e.is_empty());
                }
            }
            prop_assert_eq!(&read, &expected, "{}", name);
        }
    }
}
