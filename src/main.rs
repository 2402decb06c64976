//! The `promptbatch` binary: parse the command line, run the library, report the outcome and map
//! it to an exit code (documented in `--help` and the README).

use std::process::ExitCode;

use clap::Parser;
use promptbatch::internals::exit_code;
use promptbatch::{Error, Job, StopReason, Summary};

/// `eprintln!` that never panics: a message to stderr, dropped if stderr is closed (e.g. the
/// run's stderr piped into `head`), so a closed terminal never fails a run.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod cli;
use cli::{Cli, Command, MockServerArgs, ReportArgs};
use tracing_subscriber::EnvFilter;

/// mimalloc: the runner allocates a few small buffers per row on several threads at once, where
/// it is measurably faster than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    report_panics_briefly();
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit_code::FAILURE as u8);
        }
    };
    let code = match cli.command {
        // On a worker thread, not the main thread: the dispatcher then shares the runtime's
        // threads instead of bouncing rows between threads.
        Command::Run(args) => {
            let job = args.into_job();
            runtime
                .block_on(async move { tokio::spawn(run(job)).await.unwrap_or(exit_code::FAILURE) })
        }
        Command::Estimate(args) => {
            let json = args.json;
            finish(estimate(args.into_options(), json))
        }
        Command::Report(args) => finish(report(&args)),
        Command::Validate(args) => finish(validate(
            args.input.into_options(),
            args.request.into_options(),
        )),
        Command::Merge(args) => finish(promptbatch::merge(&args.into_options())),
        Command::Export(args) => finish(export(args.into_options())),
        Command::MockServer(args) => runtime.block_on(mock_server(args)),
        Command::Cancel(args) => finish(runtime.block_on(cancel(args))),
    };
    ExitCode::from(code as u8)
}

/// `promptbatch cancel OUTPUT`: cancels the batches of a `--via batch` run still running.
async fn cancel(args: cli::CancelArgs) -> Result<i32, Error> {
    let cancelled = promptbatch::batch::cancel(&args.output, &args.endpoint()).await?;
    say!(
        "cancelled {} running batches of {}; re-running the same `run` command collects what they finished and submits their other rows again",
        cancelled,
        args.output.display()
    );
    Ok(exit_code::OK)
}

/// `promptbatch estimate`: the estimate as a table, or JSON.
fn estimate(opts: promptbatch::EstimateOptions, json: bool) -> Result<i32, Error> {
    let estimate = promptbatch::estimate(&opts)?;
    if json {
        print_out(&to_json(&estimate, "estimate")?)?;
    } else {
        print_out(&estimate.to_table())?;
    }
    Ok(exit_code::OK)
}

/// `promptbatch report`: the report as a table, or JSON, and a note on a torn last record.
fn report(args: &ReportArgs) -> Result<i32, Error> {
    let report = promptbatch::report(&args.output, args.prices.as_deref())?;
    if let Some(html) = &args.html {
        promptbatch::write_html_report(&report, html)?;
        say!("wrote the HTML report to {}", html.display());
    }
    if args.json {
        print_out(&to_json(&report, "report")?)?;
    } else {
        print_out(&report.to_table())?;
    }
    if let Some(torn) = &report.torn_last_line {
        say!(
            "note: the last record of {} (line {}) is incomplete and was skipped ({}); the run \
             that wrote it was probably interrupted: re-run it to finish that row",
            report.output,
            torn.line,
            torn.reason
        );
    }
    Ok(exit_code::OK)
}

/// `promptbatch export`: what was written, and a note on a torn last record.
fn export(opts: promptbatch::ExportOptions) -> Result<i32, Error> {
    let exported = promptbatch::export(&opts)?;
    if let Some(torn) = &exported.torn {
        say!(
            "note: the last record of {} (line {}) is incomplete and was skipped ({})",
            opts.source.display(),
            torn.line,
            torn.reason
        );
    }
    say!(
        "wrote {} records, {} columns, to {}",
        promptbatch::internals::human::group(exported.records),
        exported.columns.len(),
        opts.dest.display()
    );
    Ok(exit_code::OK)
}

/// `promptbatch validate`: what one pass found; exit 1 unless every row can be sent.
fn validate(
    input: promptbatch::InputOptions,
    request: promptbatch::RequestOptions,
) -> Result<i32, Error> {
    let validation = promptbatch::validate(&input, &request)?;
    print_out(&promptbatch::internals::render_validation(
        &validation,
        &input,
    ))?;
    Ok(if validation.is_clean() {
        exit_code::OK
    } else {
        exit_code::FAILURE
    })
}

/// Pretty JSON and a newline.
fn to_json(value: &impl serde::Serialize, what: &str) -> Result<String, Error> {
    serde_json::to_string_pretty(value)
        .map(|text| text + "\n")
        .map_err(|e| Error::Config(format!("cannot encode the {what} as JSON: {e}")))
}

/// Writes to standard output; a closed pipe (`| head`) is not an error.
fn print_out(text: &str) -> Result<(), Error> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::io("cannot write to standard output", e))
        }
        _ => Ok(()),
    }
}

/// The exit code of a command that reports its own output, printing its error if it failed.
fn finish(result: Result<i32, promptbatch::Error>) -> i32 {
    result.unwrap_or_else(|e| {
        say!("error: {e}");
        exit_code::FAILURE
    })
}

/// A panic is a bug: say so in one line (where, and what) instead of a backtrace per worker,
/// unless RUST_BACKTRACE asks for one. The run itself notices the failed worker, names its rows
/// and never reports success.
fn report_panics_briefly() {
    if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v == "full") {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        say!("internal error (a bug in promptbatch){location}: {message}");
    }));
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "promptbatch=info,warn",
        _ => "promptbatch=debug,info",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

async fn run(job: Job) -> i32 {
    match job.run().await {
        Err(e) => {
            say!("error: {e}");
            exit_code::FAILURE
        }
        Ok(summary) => report_run(&job, &summary),
    }
}

/// Prints the summary and what to do next; returns the exit code.
fn report_run(opts: &Job, summary: &Summary) -> i32 {
    say!("{summary}");
    let code = match &summary.stop {
        StopReason::Completed => report_completed(opts, summary),
        stop => report_stopped(opts, stop),
    };
    let output = opts.output.path.display();
    if summary.warnings_suppressed > 0 {
        say!(
            "{} more row failures with the same messages were not shown (`promptbatch report {output}` groups them)",
            promptbatch::internals::human::group(summary.warnings_suppressed)
        );
    }
    if summary.unrecorded > 0 && !matches!(summary.stop, StopReason::Crashed(_)) {
        say!(
            "{} rows were started but have no record; the next run sends them",
            promptbatch::internals::human::group(summary.unrecorded)
        );
    }
    code
}

/// A run that went through every row: all ok, none at all, or some error records.
fn report_completed(opts: &Job, summary: &Summary) -> i32 {
    let output = opts.output.path.display();
    if summary.ok + summary.errors + summary.done_before == 0 {
        say!("warning: the input has no data rows: nothing was sent and {output} holds no records");
        return exit_code::OK;
    }
    if summary.errors + summary.kept_errors > 0 {
        report_errors(summary, &output.to_string());
        return exit_code::ROW_ERRORS;
    }
    match opts.input.limit {
        Some(n) => say!(
            "done: each of the first {} rows (--limit) has an ok record in {output}; run without --limit to send the rest",
            promptbatch::internals::human::group(n)
        ),
        None => say!("done: every row has an ok record in {output}"),
    }
    exit_code::OK
}

/// Why a run stopped before the end, and what to do about it.
fn report_stopped(opts: &Job, stop: &StopReason) -> i32 {
    let output = opts.output.path.display();
    match stop {
        StopReason::Completed => exit_code::OK,
        StopReason::Interrupted => {
            say!("interrupted: {output} holds whole records for the rows finished so far");
            say!("{}", resume_instruction(opts));
            exit_code::INTERRUPTED
        }
        StopReason::Fatal(message) => {
            say!("error: the API refused the run: {message}");
            say!(
                "nothing more was sent; rows without a record were not processed. Check the key \
                 (EVOLINK_API_KEY / --api-key-env), --model, --base-url and your account's quota."
            );
            exit_code::FAILURE
        }
        StopReason::Unreachable(message) => {
            say!("error: {message}");
            say!(
                "rows without a record were not processed (no error records were written); once \
                 this is fixed, the same command sends them:\n  {}",
                rerun_command(opts)
            );
            exit_code::FAILURE
        }
        StopReason::Failed(e) => {
            say!("error: {e}");
            exit_code::FAILURE
        }
        StopReason::Refused(refusals) => report_refused(opts, refusals),
        StopReason::Crashed(what) => {
            say!("error: the run did not finish every row: {what}");
            say!(
                "rows without a record are sent again by the same command:\n  {}",
                rerun_command(opts)
            );
            exit_code::FAILURE
        }
        StopReason::Detached {
            batches,
            rows,
            state,
        } => report_detached(*batches, *rows, state),
        StopReason::Budget { cap } => report_budget(opts, *cap),
    }
}

/// The circuit breaker stopped the run: each refusal, what it points to (the key, the model or
/// the account when the model never answered ok; the rows' requests when it did), then how to
/// go on.
fn report_refused(opts: &Job, refusals: &[promptbatch::Refusal]) -> i32 {
    for refusal in refusals {
        say!("error: {}", refusal.describe());
    }
    let (worked, never): (Vec<_>, Vec<_>) = refusals.iter().partition(|r| r.had_worked());
    if !never.is_empty() {
        say!(
            "the API gave the same answer to every request of {} (the circuit breaker stops after {} such answers in a row before any success): check the key, --model, --base-url and the account",
            names(&never),
            promptbatch::REFUSALS_BEFORE_STOP,
        );
    }
    for refusal in worked {
        say!(
            "`{}` answered {} ok, then refused {} rows in a row with the same error: the key and the model work, so look at those rows' requests (or whether the account's access to the model changed)",
            refusal.model,
            answered_before(refusal),
            promptbatch::REFUSALS_AFTER_SUCCESS,
        );
    }
    say!(
        "then re-run the same command (rows without a record are sent):\n  {}",
        rerun_command(opts)
    );
    exit_code::FAILURE
}

/// Which rows a refused model had answered ok: of this run, of earlier runs, or both.
fn answered_before(refusal: &promptbatch::Refusal) -> String {
    match (refusal.successes, refusal.worked_before) {
        (0, _) => "rows of earlier runs".to_string(),
        (n, false) => format!(
            "{} rows of this run",
            promptbatch::internals::human::group(n)
        ),
        (n, true) => format!(
            "{} rows of this run and rows of earlier runs",
            promptbatch::internals::human::group(n)
        ),
    }
}

/// `--detach`: the batches run on at the provider; where their ids are and how to collect them.
fn report_detached(batches: u64, rows: u64, state: &std::path::Path) -> i32 {
    say!(
        "detached: {} holding {} rows are running at the provider (their ids are in {}); collect the results later with:\n  {}",
        promptbatch::internals::human::count(batches, "batch"),
        promptbatch::internals::human::group(rows),
        state.display(),
        resume_command()
    );
    exit_code::OK
}

/// The run reached `--max-cost`: the command to go on with a higher cap (twice this one, as an
/// example).
fn report_budget(opts: &Job, cap: f64) -> i32 {
    let raised = format!("{}", promptbatch::internals::human::round_usd(cap * 2.0));
    say!(
        "stopped at the budget cap of {}: rows not sent have no record; to continue, re-run with a higher --max-cost (here twice the cap: choose yours):\n  {}",
        promptbatch::internals::human::format_usd(cap),
        with_max_cost(&rerun_command(opts), &raised)
    );
    exit_code::BUDGET
}

/// What to do about the error records of a finished run: only rows that failed on transient
/// errors are worth a plain re-run.
fn report_errors(summary: &Summary, output: &str) {
    let errors = summary.errors + summary.kept_errors;
    let transient = summary.transient_errors;
    let unaccepted = summary.unaccepted;
    let others = summary.errors.saturating_sub(transient + unaccepted);
    let group = promptbatch::internals::human::group;
    say!(
        "done with errors: {} rows are error records in {output} (see their `error` field; `promptbatch report {output}` groups them)",
        group(errors)
    );
    if transient > 0 {
        say!(
            "  {} failed on transient errors (rate limits, 5xx, timeouts) after every retry: re-run the same command to retry them",
            group(transient)
        );
    }
    if unaccepted > 0 {
        say!(
            "  {} got answers that failed --json-schema after every retry: each answer was paid for (its record holds the cost), and a plain re-run pays again; change the prompt or the schema first",
            group(unaccepted)
        );
    }
    if others > 0 {
        say!(
            "  {} were refused by the API or are invalid input: a plain re-run fails the same way; fix the input or the request options first (a re-run sends them again)",
            group(others)
        );
    }
    if summary.kept_errors > 0 {
        say!(
            "  {} are earlier error records kept by --keep-errors (drop the flag to send them again)",
            group(summary.kept_errors)
        );
    }
}

/// How to continue an interrupted run: the same command line, or — standard input cannot be read
/// twice, and a run reading it refuses an existing output — the same command on a saved copy.
fn resume_instruction(opts: &Job) -> String {
    if opts.input.reads_once() {
        format!(
            "standard input cannot be read again, so this command cannot resume: save the same \
             input to a file, then run (with FILE that file; rows already in {} are skipped):\n  {}",
            opts.output.path.display(),
            command_line(Some("FILE"))
        )
    } else {
        format!("to resume, run:\n  {}", resume_command())
    }
}

/// The command that continues this run: the same command line, or for a run that read standard
/// input (which cannot be read again) the same command on a saved copy of it.
fn rerun_command(opts: &Job) -> String {
    if opts.input.reads_once() {
        format!(
            "{}\n  (standard input cannot be read again: save the same input to FILE first)",
            command_line(Some("FILE"))
        )
    } else {
        resume_command()
    }
}

/// A printed command line with its `--max-cost` value (`--max-cost V` or `--max-cost=V`)
/// replaced by `cap`.
fn with_max_cost(command: &str, cap: &str) -> String {
    let mut words: Vec<String> = command.split(' ').map(str::to_string).collect();
    for i in 0..words.len() {
        if words[i] == "--max-cost" && i + 1 < words.len() {
            words[i + 1] = cap.to_string();
        } else if words[i].starts_with("--max-cost=") {
            words[i] = format!("--max-cost={cap}");
        }
    }
    words.join(" ")
}

/// The command line of this run, minus `--fresh` and `--detach`, quoted for a POSIX shell.
fn resume_command() -> String {
    command_line(None)
}

/// The command line of this run, minus `--fresh`, with the input `-` (standard input) replaced by
/// `stdin_as` if given, quoted for a POSIX shell (bash for arguments that are not UTF-8).
fn command_line(stdin_as: Option<&str>) -> String {
    let mut stdin_as = stdin_as.map(std::ffi::OsString::from);
    let args: Vec<_> = std::env::args_os()
        .filter(|a| a != "--fresh" && a != "--detach")
        .map(|a| match stdin_as.take_if(|_| a == "-") {
            Some(file) => file,
            None => a,
        })
        .collect();
    let (args, notify_left_out) = without_notify_url(args);
    let mut shown: Vec<_> = args.iter().map(without_user_info).collect();
    let url_redacted = shown != args;
    let before = shown.clone();
    hide_keys_given_as_names(&mut shown);
    let mut line = shown
        .iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    if shown != before {
        line.push_str(
            "\n  (--api-key-env takes the NAME of the variable holding the key: the key given there is shown as [redacted])",
        );
    }
    if notify_left_out {
        line.push_str(
            "\n  (--notify-url is left out, as its URL may hold a token: add it back to be notified)",
        );
    }
    if url_redacted {
        line.push_str(
            "\n  (a URL's user name and password are shown as [redacted]: put them back, or pass \
             the URL in PROMPTBATCH_BASE_URL)",
        );
    }
    line
}

/// The arguments without `--notify-url URL` (or `--notify-url=URL`), and whether it was there: a
/// webhook's URL keeps its token in the path or the query, which is never printed.
fn without_notify_url(args: Vec<std::ffi::OsString>) -> (Vec<std::ffi::OsString>, bool) {
    let mut kept = Vec::with_capacity(args.len());
    let mut args = args.into_iter();
    let mut left_out = false;
    while let Some(arg) = args.next() {
        if arg == "--notify-url" {
            args.next();
            left_out = true;
        } else if arg.as_encoded_bytes().starts_with(b"--notify-url=") {
            left_out = true;
        } else {
            kept.push(arg);
        }
    }
    (kept, left_out)
}

/// A key passed where `--api-key-env` wants a variable's name is shown as `[redacted]`.
fn hide_keys_given_as_names(args: &mut [std::ffi::OsString]) {
    let key_like = |value: &std::ffi::OsStr| {
        value
            .to_str()
            .is_none_or(promptbatch::internals::redact::looks_like_a_key)
    };
    for i in 0..args.len() {
        if args[i] == "--api-key-env" && args.get(i + 1).is_some_and(|v| key_like(v)) {
            args[i + 1] = "[redacted]".into();
        }
        let inline = args[i]
            .to_str()
            .and_then(|a| a.strip_prefix("--api-key-env="))
            .is_some_and(promptbatch::internals::redact::looks_like_a_key);
        if inline {
            args[i] = "--api-key-env=[redacted]".into();
        }
    }
}

/// An argument as it may be printed: the user-info of a URL in it redacted.
fn without_user_info(arg: &std::ffi::OsString) -> std::ffi::OsString {
    match arg.to_str() {
        Some(text) if text.contains("://") => {
            promptbatch::internals::redact::url_userinfo(text).into()
        }
        _ => arg.clone(),
    }
}

/// One argument for a shell: as is when plain, in '...' when text, in bash's $'...' otherwise.
fn shell_quote(arg: &std::ffi::OsStr) -> String {
    let bytes = arg.as_encoded_bytes();
    let plain = |b: &u8| b.is_ascii_alphanumeric() || b"_-./:=@%+,".contains(b);
    match std::str::from_utf8(bytes) {
        Ok(text) if !bytes.is_empty() && bytes.iter().all(plain) => text.to_string(),
        Ok(text) if !text.chars().any(char::is_control) => {
            format!("'{}'", text.replace('\'', "'\\''"))
        }
        // Bytes that are not text (or control characters): bash's $'...' with \xNN escapes.
        _ => {
            let mut quoted = String::from("$'");
            for &b in bytes {
                match b {
                    b'\\' | b'\'' => quoted.extend(['\\', b as char]),
                    b' '..=b'~' => quoted.push(b as char),
                    _ => quoted.push_str(&format!("\\x{b:02x}")),
                }
            }
            quoted.push('\'');
            quoted
        }
    }
}

async fn mock_server(opts: MockServerArgs) -> i32 {
    let listener = match promptbatch::sim::bind(&opts.listen).await {
        Ok(l) => l,
        Err(e) => {
            say!("error: cannot listen on {}: {e}", opts.listen);
            return exit_code::FAILURE;
        }
    };
    let addr = listener
        .local_addr()
        .map_or(opts.listen.clone(), |a| a.to_string());
    say!("simulator listening on http://{addr}/v1 (Ctrl-C to stop)");
    let stop = tokio_util::sync::CancellationToken::new();
    let serve = promptbatch::sim::serve(listener, opts.sim.into_options(), stop.clone());
    tokio::select! {
        _ = serve => {}
        _ = tokio::signal::ctrl_c() => stop.cancel(),
    }
    exit_code::OK
}

/// The refused models' names, for one message: "`a`" or "`a`, `b`".
fn names(refusals: &[&promptbatch::Refusal]) -> String {
    refusals
        .iter()
        .map(|r| format!("`{}`", r.model))
        .collect::<Vec<_>>()
        .join(", ")
}
