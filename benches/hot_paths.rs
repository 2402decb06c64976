//! Per-row hot paths of the runner, through the public library API.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-bench cargo bench --bench hot_paths`
//! (each bench measures for ~2 s; the whole file takes well under two minutes).
//! Filter: `cargo bench --bench hot_paths -- request/` runs only the request benches.
//!
//! What one row costs the runner besides the HTTP round trip: building the request body from a
//! prompt, parsing the answer, encoding the record (JSONL or CSV), and filling a template.

use std::borrow::Cow;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use promptbatch::internals::format::{Csv, Jsonl, RecordFormat};
use promptbatch::internals::openai_chat;
use promptbatch::internals::Template;
use promptbatch::{internals::RequestDefaults, RequestOptions};
use promptbatch::{Record, Status};

/// A ~200-byte prompt, the size used by the end-to-end memory benchmark.
fn prompt_200() -> String {
    "Summarize the following customer note in one sentence, keeping names and numbers: \
     order 1234 arrived late, the box was damaged and the blue mug inside was chipped; \
     please send a replacement."
        .to_string()
}

fn defaults(options: RequestOptions) -> RequestDefaults {
    RequestDefaults::from_options(&options)
}

fn sample_record(prompt: &str) -> Record {
    Record {
        id: "42".into(),
        row: 42,
        prompt: prompt.to_string(),
        completion: Some(format!("echo: {prompt}")),
        finish_reason: Some("stop".into()),
        model: "gpt-5.2".into(),
        prompt_tokens: 13,
        cached_tokens: 0,
        completion_tokens: 1891,
        reasoning_tokens: 1480,
        total_tokens: 1904,
        latency_ms: 5,
        attempts: 1,
        status: Status::Ok,
        error: None,
        response_id: Some("chatcmpl-20251010015944503180122WJNB8Eid".into()),
        cost_usd: Some(0.026_496_75),
        fingerprint: "af63dc4c8601ec8c".into(),
        simulated: false,
        kept: None,
        started_at: None,
        finished_at: None,
    }
}

fn request(c: &mut Criterion) {
    let mut group = c.benchmark_group("request");
    group.throughput(Throughput::Elements(1));
    let prompt = prompt_200();
    let plain = defaults(RequestOptions::default());
    group.bench_function("from_prompt/200B", |b| {
        b.iter(|| plain.from_prompt(black_box(prompt.clone()), None).unwrap())
    });
    let full = defaults(RequestOptions {
        system: Some("You are a terse assistant.".into()),
        max_tokens: Some(64),
        temperature: Some(0.2),
        params: vec![("seed".into(), 7.into())],
        ..RequestOptions::default()
    });
    group.bench_function("from_prompt/200B+system+params", |b| {
        b.iter(|| full.from_prompt(black_box(prompt.clone()), None).unwrap())
    });
    group.finish();
}

fn parse_response(c: &mut Criterion) {
    let mut group = c.benchmark_group("response");
    group.throughput(Throughput::Bytes(openai_chat::SEED_RESPONSE.len() as u64));
    group.bench_function("parse/seed", |b| {
        b.iter(|| openai_chat::parse(black_box(openai_chat::SEED_RESPONSE.as_bytes())).unwrap())
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    let record = sample_record(&prompt_200());
    let mut out = Vec::with_capacity(4096);
    group.bench_function("jsonl", |b| {
        b.iter(|| {
            out.clear();
            Jsonl.encode(black_box(&record), &mut out);
            out.len()
        })
    });
    group.bench_function("csv", |b| {
        b.iter(|| {
            out.clear();
            Csv::default().encode(black_box(&record), &mut out);
            out.len()
        })
    });
    group.finish();
}

fn template(c: &mut Criterion) {
    let mut group = c.benchmark_group("template");
    group.throughput(Throughput::Elements(1));
    let template = Template::parse("Summarize {title} for {audience}: {text} {{json}}").unwrap();
    let fields = [
        ("title", "Late delivery".to_string()),
        ("audience", "support staff".to_string()),
        ("text", prompt_200()),
    ];
    group.bench_function("fill/3-fields", |b| {
        b.iter(|| {
            template
                .fill(|name| {
                    fields
                        .iter()
                        .find(|(k, _)| *k == name)
                        .map(|(_, v)| Cow::Borrowed(v.as_str()))
                })
                .unwrap()
        })
    });
    group.bench_function("parse", |b| {
        b.iter(|| Template::parse(black_box("Summarize {title} for {audience}: {text}")).unwrap())
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = hot_paths;
    config = config();
    targets = request, parse_response, encode, template
}
criterion_main!(hot_paths);
