//! The pacing controller's tests, under tokio's paused clock.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;

use super::aimd::{DECREASE_FACTOR, HOLD, HOLD_SHARE, MAX_CUT, MIN_PACE, RESUME_SHARE};
use super::burst::at_least;
use super::state::HEADER_MARGIN;
use super::*;

fn limited(secs: f64) -> Answer {
    Answer::RateLimited(Some(Duration::from_secs_f64(secs)))
}

/// Passes the pacer, returning when.
async fn send(p: &Pacer) -> Instant {
    p.acquire(1).await;
    Instant::now()
}

#[tokio::test(start_paused = true)]
async fn unpaced_until_told_otherwise() {
    let p = Pacer::new(None);
    let start = Instant::now();
    for _ in 0..1000 {
        let sent = send(&p).await;
        p.on_answer(sent, Answer::Ok, None);
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(p.note(), PaceNote::default());
}

#[tokio::test(start_paused = true)]
async fn sporadic_429s_neither_pause_nor_slow_the_pool() {
    let p = Pacer::new(None);
    // 64 in flight, 100 ms answers, every 50th attempt a 429 (2 %), for 20 s.
    let mut in_flight: VecDeque<Instant> = VecDeque::new();
    for i in 0..12_800u32 {
        if in_flight.len() == 64 {
            let sent = in_flight.pop_front().unwrap();
            tokio::time::sleep_until(sent + Duration::from_millis(100)).await;
            let answer = if i % 50 == 0 {
                limited(1.0)
            } else {
                Answer::Ok
            };
            p.on_answer(sent, answer, None);
        }
        in_flight.push_back(send(&p).await);
    }
    assert_eq!(p.paused_until(), None);
    let pace = p.lock().pace();
    assert_eq!(pace, None, "{:?}", p.note());
    let answered_429s = (64..12_800).filter(|i| i % 50 == 0).count() as u64;
    assert_eq!(p.totals(), (answered_429s, Duration::ZERO));
}

/// Issue 21: a gateway that refuses a share of requests whatever the rate (load shedding,
/// a shared key). Simulated: 64 in flight, 100-ms answers, a 429 for each attempt with
/// chance `share` (a fixed-seed generator), advising 1 s and answered at once, as gateways
/// do. Returns the requests sent in the last 10 s of 60 (sends per second) and the pool's
/// pause time.
async fn random_429s(share: f64, headers: Option<RateLimitHeaders>) -> (f64, Duration) {
    let p = Arc::new(Pacer::new(None));
    let slots = Arc::new(tokio::sync::Semaphore::new(64));
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut chance = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    let start = Instant::now();
    let mut late_sends = 0u32;
    while Instant::now() < start + Duration::from_secs(60) {
        let slot = slots.clone().acquire_owned().await.unwrap();
        let sent = send(&p).await;
        if sent >= start + Duration::from_secs(50) {
            late_sends += 1;
        }
        let p = p.clone();
        if chance() < share {
            // A 429 comes back at once (a success after the answer time), and its row
            // lends its slot while it waits.
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_micros(500)).await;
                p.on_answer(sent, limited(1.0), headers.as_ref());
                drop(slot);
            });
        } else {
            tokio::spawn(async move {
                tokio::time::sleep_until(sent + Duration::from_millis(100)).await;
                p.on_answer(sent, Answer::Ok, None);
                drop(slot);
            });
        }
    }
    (f64::from(late_sends) / 10.0, p.totals().1)
}

/// Random 429s at 2 % to 20 % of answers, in OpenAI's shape too (`remaining: 0` on the
/// 429 itself): the pace ends where it started (640/s: 64 in flight over 100 ms), and the
/// pool is paused for at most the one burst the first seconds may show before the share
/// of random 429s is known.
#[tokio::test(start_paused = true)]
async fn random_429s_at_any_share_do_not_slow_the_pool() {
    let openai = RateLimitHeaders {
        limit_requests: Some(500),
        remaining_requests: Some(0),
        reset_requests: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    for share in [0.02, 0.05, 0.10, 0.20] {
        for headers in [None, Some(openai)] {
            let (rate, paused) = random_429s(share, headers).await;
            assert!(
                rate >= 640.0 * 0.9,
                "{share}: {rate}/s in the last 10 s (headers: {})",
                headers.is_some()
            );
            assert!(
                paused <= Duration::from_secs(2),
                "{share}: paused {paused:?}"
            );
        }
    }
}

/// Issue 21: a model a proxy refuses every request of (nothing ever succeeds). A burst
/// pauses the pool for its advice, but there is no served rate to resume at: the pace is
/// not cut (a pace of one a minute kept 20 rows busy for hours); the rows end on their
/// retries.
#[tokio::test(start_paused = true)]
async fn a_server_that_refuses_everything_pauses_the_pool_but_does_not_pace_it() {
    let p = Pacer::new(None);
    for _ in 0..20 {
        let s = send(&p).await;
        tokio::time::advance(Duration::from_millis(1)).await;
        p.on_answer(s, limited(1.0), None);
    }
    assert!(
        p.note().why.contains("every request refused"),
        "{:?}",
        p.note()
    );
    assert_eq!(p.lock().pace(), None);
    tokio::time::advance(Duration::from_secs(2)).await;
    let start = Instant::now();
    for _ in 0..100 {
        send(&p).await;
    }
    assert_eq!(start.elapsed(), Duration::ZERO, "unpaced after the pause");
}

/// A 429's own `remaining: 0` pauses nobody; a success's does (the window is spent).
#[tokio::test(start_paused = true)]
async fn only_a_successs_headers_say_the_window_is_spent() {
    let p = Pacer::new(None);
    let spent = RateLimitHeaders {
        limit_requests: Some(500),
        remaining_requests: Some(0),
        reset_requests: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let s = send(&p).await;
    p.on_answer(s, limited(1.0), Some(&spent));
    assert_eq!(p.paused_until(), None);
    assert_eq!(
        p.lock().pace(),
        None,
        "a 429's limit header is not announced"
    );
    p.on_answer(s, Answer::Ok, Some(&spent));
    assert_eq!(
        p.paused_until(),
        Some(Instant::now() + Duration::from_secs(1))
    );
}

/// A pace far above what the pool sends costs no timer per send: 10,000 sends at a pace of
/// 16,000/s (a server announcing 1,000,000 a minute) take 10,000 / 16,000 s, not 10 s.
#[tokio::test(start_paused = true)]
async fn a_fast_pace_keeps_up_with_a_late_timer() {
    let p = Pacer::new(None);
    let announced = RateLimitHeaders {
        limit_requests: Some(1_000_000),
        ..Default::default()
    };
    let s = send(&p).await;
    p.on_answer(s, Answer::Ok, Some(&announced));
    let start = Instant::now();
    for _ in 0..10_000 {
        send(&p).await;
    }
    let ideal = 10_000.0 / (1_000_000.0 / 60.0 * HEADER_MARGIN);
    let took = start.elapsed().as_secs_f64();
    assert!(took <= ideal * 1.1 + 0.01, "{took} s for {ideal} s of pace");
}

#[test]
fn the_chance_of_a_run_of_429s() {
    assert!((at_least(3, 3, 0.02) - 8e-6).abs() < 1e-12);
    assert!((at_least(0, 5, 0.3) - 1.0).abs() < 1e-12);
    let two_of_four =
        6.0 * 0.25 * 0.25 * 0.75 * 0.75 + 4.0 * 0.25f64.powi(3) * 0.75 + 0.25f64.powi(4);
    assert!((at_least(2, 4, 0.25) - two_of_four).abs() < 1e-12);
    assert!(at_least(5, 5, 1.0) > 0.9);
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_429s_pauses_the_pool_until_the_advice_then_paces() {
    let p = Pacer::new(None);
    let mut sent = Vec::new();
    for _ in 0..20 {
        sent.push(send(&p).await);
        tokio::time::advance(Duration::from_millis(10)).await;
    }
    for s in &sent[..10] {
        p.on_answer(*s, Answer::Ok, None);
    }
    // The first 429 starts the watch; requests sent after it get 429s too.
    assert!(
        p.on_answer(sent[10], limited(5.0), None),
        "a lone 429's row lends its slot"
    );
    assert_eq!(p.paused_until(), None, "one 429 pauses nobody");
    let after: Vec<Instant> = {
        tokio::time::advance(Duration::from_millis(1)).await;
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(send(&p).await);
        }
        v
    };
    p.on_answer(after[0], limited(5.0), None);
    p.on_answer(sent[11], Answer::Ok, None); // sent before the first 429: not counted
    assert!(
        !p.on_answer(after[1], limited(5.0), None),
        "a 429 in a burst keeps its slot"
    );
    assert_eq!(p.paused_until(), None);
    p.on_answer(after[2], limited(5.0), None);
    let until = p.paused_until().expect("window exhausted");
    assert_eq!(until, Instant::now() + Duration::from_secs(5));
    assert!(p.note().why.contains("burst"), "{:?}", p.note());
    assert!(
        p.note().why.starts_with("paused"),
        "slowed first: {:?}",
        p.note()
    );
    let pace = p.lock().pace().expect("paced after the burst");
    let start = Instant::now();
    p.acquire(1).await;
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(5),
        "not before the advice"
    );
    p.acquire(1).await;
    let step = Duration::from_secs_f64(1.0 / pace);
    assert!(start.elapsed() >= Duration::from_secs(5) + step.mul_f64(0.99));
    assert_eq!(p.totals(), (4, Duration::from_secs(5)));
}

#[tokio::test(start_paused = true)]
async fn over_a_limit_the_pace_drops_once_per_window_then_grows_back() {
    let p = Pacer::new(None);
    // 100 requests/s for 1 s, answered at once.
    let mut early = Vec::new();
    for _ in 0..100 {
        let s = send(&p).await;
        p.on_answer(s, Answer::Ok, None);
        early.push(s);
        tokio::time::advance(Duration::from_millis(10)).await;
    }
    // 10 % of answers are 429s (requests sent back then, one each: no burst).
    for s in early.iter().take(40) {
        p.on_answer(*s, Answer::Ok, None);
        p.on_answer(*s, limited(0.05), None);
        p.on_answer(*s, Answer::Ok, None);
    }
    let pace = p.lock().pace().expect("slowed");
    assert!(pace < 100.0 * DECREASE_FACTOR + 1.0, "{pace}");
    assert!(pace >= 100.0 * MAX_CUT, "{pace}");
    assert!(p.note().why.starts_with("slowed"), "{:?}", p.note());
    assert_eq!(p.paused_until(), None);
    // More 429s for requests sent before the decrease: no second decrease.
    for s in &early {
        p.on_answer(*s, limited(0.05), None);
    }
    assert_eq!(p.lock().pace(), Some(pace));
    // Successes while the pace holds the sends back: it holds below the limit learned
    // for [`HOLD`], then grows, faster and faster.
    let learned = p.lock().pace.learned.unwrap();
    let start = Instant::now();
    let mut paces = Vec::new();
    let mut at = HOLD - Duration::from_millis(500);
    while paces.len() < 4 {
        let s = send(&p).await;
        p.on_answer(s, Answer::Ok, None);
        if s.duration_since(start) >= at {
            paces.push(p.lock().pace().unwrap());
            at += Duration::from_secs(1);
        }
    }
    assert!(
        paces[0] >= pace && paces[0] <= learned * HOLD_SHARE + 1e-9,
        "{paces:?}"
    );
    assert!(paces.windows(2).all(|w| w[1] > w[0]), "{paces:?}");
    assert!(paces[3] - paces[2] > paces[2] - paces[1], "{paces:?}");
    assert!(p.note().why.starts_with("speeding up"), "{:?}", p.note());
}

#[tokio::test(start_paused = true)]
async fn the_pace_spaces_requests_evenly_and_grows_no_further_than_the_rpm() {
    let p = Pacer::new(Some(600));
    for _ in 0..20 {
        let s = send(&p).await;
        p.on_answer(s, Answer::Ok, None);
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    p.lock().decrease(Instant::now(), "test", 0.0);
    let pace = p.lock().pace().unwrap();
    assert!((pace - 9.7).abs() < 0.1, "97 % of the 10/s served: {pace}");
    let start = Instant::now();
    for _ in 0..10 {
        let s = send(&p).await;
        p.on_answer(s, Answer::Ok, None);
    }
    // Nine steps at most at the hold's pace (98 % of the 10/s learned).
    let step = Duration::from_secs_f64(1.0 / (10.0 * HOLD_SHARE));
    assert!(start.elapsed() >= step * 9, "{:?}", start.elapsed());
    let mut highest = pace;
    loop {
        let Some(pace) = p.lock().pace() else {
            break;
        };
        highest = highest.max(pace);
        let s = send(&p).await;
        p.on_answer(s, Answer::Ok, None);
    }
    assert!(highest <= 10.0, "{highest}");
    assert_eq!(p.note().why, "recovered: back to the limit");
}

#[tokio::test(start_paused = true)]
async fn announced_limits_pace_proactively_and_remaining_zero_pauses() {
    let p = Pacer::new(None);
    let headers = RateLimitHeaders {
        limit_requests: Some(1200),
        remaining_requests: Some(150),
        reset_requests: Some(Duration::from_secs(3)),
        ..Default::default()
    };
    let s = send(&p).await;
    p.on_answer(s, Answer::Ok, Some(&headers));
    let pace = p.lock().pace().unwrap();
    assert!((pace - 20.0 * HEADER_MARGIN).abs() < 1e-9, "{pace}");
    assert!(p.note().why.contains("1200 requests/min"));
    // Tokens: 60,000 per minute at 97 %: a 970-token request holds the next for 1 s.
    let tokens = RateLimitHeaders {
        limit_tokens: Some(60_000),
        ..Default::default()
    };
    p.on_answer(s, Answer::Ok, Some(&tokens));
    p.acquire(970).await;
    let start = Instant::now();
    p.acquire(1).await;
    assert_eq!(start.elapsed().as_millis(), 1000);
    // Nothing left until the reset: the pool waits for it.
    let exhausted = RateLimitHeaders {
        remaining_requests: Some(0),
        reset_requests: Some(Duration::from_millis(2500)),
        ..headers
    };
    p.on_answer(s, Answer::Ok, Some(&exhausted));
    let start = Instant::now();
    p.acquire(1).await;
    assert_eq!(start.elapsed().as_millis(), 2500);
    assert!(p.note().why.contains("no requests left"), "{:?}", p.note());
    assert_eq!(p.totals(), (0, Duration::from_millis(2500)));
}

#[tokio::test(start_paused = true)]
async fn a_pace_change_applies_to_waiters_at_once() {
    let p = Arc::new(Pacer::new(None));
    let slow = RateLimitHeaders {
        limit_requests: Some(6),
        ..Default::default()
    };
    p.on_answer(Instant::now(), Answer::Ok, Some(&slow));
    p.acquire(1).await;
    let waiter = {
        let p = p.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            p.acquire(1).await;
            start.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // 6/min: the waiter would wait 10 s; the server now announces 60/min (one per ~1.03 s).
    let fast = RateLimitHeaders {
        limit_requests: Some(60),
        ..Default::default()
    };
    p.on_answer(Instant::now(), Answer::Ok, Some(&fast));
    let waited = waiter.await.unwrap();
    assert!(waited >= Duration::from_millis(1030), "{waited:?}");
    assert!(waited <= Duration::from_millis(1090), "{waited:?}");
}

/// A server window of `capacity` requests filled by a wave sent over `over`, answered ok
/// after `latency`; then 429s advising `advice` for the requests sent after the first 429
/// came back: the burst that pauses the pool. Returns when the pause began.
async fn exhaust_window(
    p: &Pacer,
    capacity: u32,
    over: Duration,
    latency: Duration,
    advice: Duration,
) -> Instant {
    let step = over / capacity;
    let mut sent = VecDeque::new();
    for _ in 0..capacity {
        sent.push_back(send(p).await);
        tokio::time::advance(step).await;
        while sent.front().is_some_and(|s| *s + latency <= Instant::now()) {
            p.on_answer(sent.pop_front().unwrap(), Answer::Ok, None);
        }
    }
    // The window is full: the next request is answered 429 at once, and so are the three
    // sent after that 429 came back.
    let first = send(p).await;
    p.on_answer(first, Answer::RateLimited(Some(advice)), None);
    tokio::time::advance(Duration::from_millis(1)).await;
    for _ in 0..3 {
        let s = send(p).await;
        p.on_answer(s, Answer::RateLimited(Some(advice)), None);
    }
    let paused = Instant::now();
    assert_eq!(p.paused_until(), Some(paused + advice), "{:?}", p.note());
    // Those still in flight were let in: answered ok during the pause.
    for s in sent {
        p.on_answer(s, Answer::Ok, None);
    }
    paused
}

/// Issue 11: after a pool pause the pace is the rate the server served before it — what its
/// window still holds, divided by its length ([`window_for`]) — within [`RESUME_SHARE`]
/// (3 %), not a cut of the pace that overran it (which left the tail of a run at half the
/// server's rate after a 60-s pause).
#[tokio::test(start_paused = true)]
async fn after_a_pause_the_pace_is_the_rate_the_server_served() {
    // A sliding window of 200 per 10 s, filled in 0.6 s (200-ms answers): 20/s.
    let served = 20.0;
    let p = Pacer::new(None);
    let paused = exhaust_window(
        &p,
        200,
        Duration::from_millis(600),
        Duration::from_millis(200),
        Duration::from_millis(9400),
    )
    .await;
    let pace = p.lock().pace().expect("paced after the pause");
    assert!(
        (pace - served * RESUME_SHARE).abs() < 0.2,
        "{pace}/s, not {served}/s"
    );
    // The sends after the pause go at that pace from its first second: not before the
    // pause ends, then one step apart.
    let first = send(&p).await;
    assert_eq!(first, paused + Duration::from_millis(9400));
    let mut last = first;
    for _ in 0..20 {
        let s = send(&p).await;
        p.on_answer(s, Answer::Ok, None);
        last = s;
    }
    let rate = 20.0 / last.duration_since(first).as_secs_f64();
    assert!(
        (served * 0.95..=served).contains(&rate),
        "{rate}/s right after the pause"
    );

    // LiteLLM's own limit: 30 requests a minute, taken in the first second, then
    // `retry-after: 60`. The pace resumes at 30 a minute (not 15 and creeping up).
    let p = Pacer::new(None);
    exhaust_window(
        &p,
        30,
        Duration::from_millis(900),
        Duration::from_millis(100),
        Duration::from_secs(60),
    )
    .await;
    let per_minute = p.lock().pace().unwrap() * 60.0;
    let served = 30.0;
    assert!(
        (per_minute - served * RESUME_SHARE).abs() < 0.5,
        "{per_minute}/min, served {served}/min"
    );

    // A sliding 10-s window taken at 20/s whose limit halves: it holds 200, 100 must leave
    // before one more passes (advice 5 s). 10/s, not the 20/s the advice alone measured.
    let p = Pacer::new(None);
    exhaust_window(
        &p,
        200,
        Duration::from_secs(10),
        Duration::from_millis(200),
        Duration::from_secs(5),
    )
    .await;
    let pace = p.lock().pace().unwrap();
    assert!(
        (pace - 10.0 * RESUME_SHARE).abs() < 0.3,
        "{pace}/s, not 10/s"
    );
}

/// After a cut the pace holds just below the limit it learned for [`HOLD`], then probes
/// above it; the probe's first 429 ends it: back below the limit, and the pool waits for
/// that 429's advice.
#[tokio::test(start_paused = true)]
async fn the_pace_holds_below_the_learned_limit_then_probes_and_a_429_ends_the_probe() {
    let p = Pacer::new(None);
    exhaust_window(
        &p,
        200,
        Duration::from_millis(600),
        Duration::from_millis(200),
        Duration::from_millis(9400),
    )
    .await;
    let learned = p.lock().pace.learned.expect("learned at the pause");
    assert!((learned - 20.0).abs() < 0.2, "{learned}");
    let resumed = p.paused_until().unwrap();
    // Answers all succeed (latency 0): the pace is what holds the sends back.
    let mut held = Vec::new();
    loop {
        let s = send(&p).await;
        p.on_answer(s, Answer::Ok, None);
        if s >= resumed + HOLD {
            break;
        }
        held.push(p.lock().pace().unwrap());
    }
    let top = held.iter().copied().fold(0.0, f64::max);
    assert!(held[0] >= learned * 0.96, "{held:?}");
    assert!(top <= learned * HOLD_SHARE + 1e-9, "{top} during the hold");
    assert!(
        top >= learned * HOLD_SHARE - 0.05,
        "reached the hold: {top}"
    );
    // Then the probe: above the learned limit within 1 s, 10 % a second.
    let probe_start = Instant::now();
    while Instant::now() < probe_start + Duration::from_secs(1) {
        let s = send(&p).await;
        p.on_answer(s, Answer::Ok, None);
    }
    let probing = p.lock().pace().unwrap();
    assert!(probing > learned, "{probing} after 1 s of probing");
    assert!(probing < learned * 1.15, "{probing}");
    assert!(p.note().why.starts_with("speeding up"), "{:?}", p.note());
    // One 429: the probe found the limit where it was.
    let s = send(&p).await;
    p.on_answer(s, limited(0.3), None);
    let cut = p.lock().pace().unwrap();
    assert!(cut <= learned * DECREASE_FACTOR + 0.1, "{cut}");
    assert!(
        cut >= learned * 0.9,
        "{cut}: a cut to the rate served, no deeper"
    );
    assert_eq!(
        p.paused_until(),
        Some(Instant::now() + Duration::from_millis(300))
    );
    assert!(p.note().why.starts_with("slowed"), "{:?}", p.note());
}

/// LiteLLM's proxy at 30 requests a minute announces `x-ratelimit-limit-requests: 30`, so the
/// 30 of its minute are paced over half a minute and the 429s after them come 2 s apart.
/// The pool pauses for the advised 60 s and resumes at 30 a minute, the rate the server
/// served over the minute its 429 named. Measured over the last 10 s plus the pause, it
/// was 3 per 70 s: a request a minute, and a 40-row run stalled (33 rows by 260 s).
#[tokio::test(start_paused = true)]
async fn a_paced_per_minute_window_resumes_at_its_rate_after_the_pause() {
    let p = Pacer::new(None);
    let headers = RateLimitHeaders {
        limit_requests: Some(30),
        ..RateLimitHeaders::default()
    };
    let latency = Duration::from_millis(200);
    // `--concurrency 16`: the first 16 leave at once, before any answer tells the limit.
    let mut first_wave = Vec::new();
    for _ in 0..16 {
        first_wave.push(send(&p).await);
    }
    tokio::time::advance(latency).await;
    for s in first_wave {
        p.on_answer(s, Answer::Ok, Some(&headers));
    }
    // Then one at a time at the announced pace: 14 more fill the minute, then 429s.
    let mut ok = 16;
    let mut limited_answers = 0;
    while p.paused_until().is_none() {
        let s = send(&p).await;
        tokio::time::advance(latency).await;
        if ok < 30 {
            ok += 1;
            p.on_answer(s, Answer::Ok, Some(&headers));
        } else {
            limited_answers += 1;
            p.on_answer(s, limited(60.0), None);
        }
        assert!(
            limited_answers < 10,
            "no pause after {limited_answers} 429s"
        );
    }
    let per_minute = p.lock().pace().expect("paced") * 60.0;
    assert!(
        (28.0..=30.0).contains(&per_minute),
        "{per_minute}/min after the pause, the server serves 30/min"
    );
    // The next request goes when the advice ends, the one after it 2 s later.
    let until = p.paused_until().unwrap();
    assert_eq!(send(&p).await, until);
    let step = send(&p).await.duration_since(until);
    assert!(step <= Duration::from_millis(2150), "{step:?}");
}

/// A probe grows by the time it has run, not by the answers it got: at a pace of one
/// request a minute each answer may double it (answers clocked at most 1 s of growth each,
/// 10 % a minute).
#[tokio::test(start_paused = true)]
async fn a_slow_pace_probes_up_by_the_time_passed_not_by_the_answers() {
    let p = Pacer::new(None);
    {
        let mut s = p.lock();
        let now = Instant::now();
        s.cut_to(now, MIN_PACE, MIN_PACE, 0.0, "slowed: test".into());
        s.pace.last_decrease = now.checked_sub(HOLD * 2);
    }
    for _ in 0..4 {
        let s = send(&p).await;
        p.on_answer(s, Answer::Ok, None);
    }
    let per_minute = p.lock().pace().unwrap() * 60.0;
    assert!(
        per_minute >= 8.0,
        "{per_minute}/min after 4 answers at 1/min"
    );
}

/// A per-minute limit (LiteLLM: 30 a minute, `retry-after: 60`): when the probe after the
/// pause meets a 429 with the same long advice, the pool waits that advice but keeps the
/// pace it had. A handful of answers over a 60-s advice is no measure of the server's rate
/// (it once cut the pace to a request every half minute and left rows unsent for minutes).
#[tokio::test(start_paused = true)]
async fn a_probe_429_after_a_long_pause_waits_its_advice_without_collapsing_the_pace() {
    let p = Pacer::new(None);
    exhaust_window(
        &p,
        30,
        Duration::from_millis(900),
        Duration::from_millis(100),
        Duration::from_secs(60),
    )
    .await;
    let learned = p.lock().pace.learned.expect("learned at the pause");
    let resumed = p.paused_until().unwrap();
    // The hold, then the start of the probe: every answer ok.
    loop {
        let s = send(&p).await;
        p.on_answer(s, Answer::Ok, None);
        if s >= resumed + HOLD + Duration::from_secs(1) {
            break;
        }
    }
    assert!(p.lock().pace().unwrap() > learned, "probing");
    let s = send(&p).await;
    p.on_answer(s, limited(60.0), None);
    let pace = p.lock().pace().unwrap();
    assert_eq!(
        p.paused_until(),
        Some(Instant::now() + Duration::from_secs(60)),
        "the pool waits the advice"
    );
    assert!(
        pace >= learned * 0.8,
        "{:.1}/min after the probe's 429, learned {:.1}/min",
        pace * 60.0,
        learned * 60.0
    );
}

/// Unpaced sends whose answers take long enough are spread over the answer time, so the
/// requests of a `--concurrency` wave do not all meet a window that just filled.
#[tokio::test(start_paused = true)]
async fn unpaced_sends_are_spread_over_the_answer_time() {
    let p = Pacer::new(None);
    let mut sent = Vec::new();
    for _ in 0..64 {
        sent.push(send(&p).await);
    }
    assert_eq!(sent[63], sent[0], "nothing known yet: one wave");
    tokio::time::advance(Duration::from_millis(200)).await;
    for s in sent {
        p.on_answer(s, Answer::Ok, None);
    }
    let start = Instant::now();
    for _ in 0..64 {
        send(&p).await;
    }
    // 64 in flight over 200 ms, × 1.25: one send every 2.5 ms.
    let spread = start.elapsed();
    assert!(spread >= Duration::from_millis(155), "{spread:?}");
    assert!(spread <= Duration::from_millis(160), "{spread:?}");
    assert_eq!(p.lock().pace(), None, "spreading is no pace");
    assert_eq!(p.note(), PaceNote::default());
}

/// The display is updated under the answer's one lock: the note copied when its reason
/// changes, only its rate when that alone changes.
#[tokio::test(start_paused = true)]
async fn the_display_gets_the_note_when_it_changes() {
    let counters = Arc::new(Counters::default());
    let p = Pacer::new(None).with_progress(counters.clone());
    let headers = RateLimitHeaders {
        limit_requests: Some(600),
        ..Default::default()
    };
    p.on_answer(Instant::now(), Answer::Ok, Some(&headers));
    assert_eq!(*counters.pace.lock().unwrap(), p.note());
    assert!(p.note().why.contains("600 requests/min"));
    assert!(!p.lock().display.why_changed && !p.lock().display.rate_changed);
    p.on_answer(Instant::now(), limited(1.0), None);
    assert_eq!(counters.rate_limited.load(Relaxed), 1);
    assert_eq!(*counters.pace.lock().unwrap(), p.note());
}
