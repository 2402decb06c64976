#!/usr/bin/env python3
"""Writes a synthetic promptbatch output (JSONL records, the schema `run` writes) and its
event log OUTPUT.events.jsonl, without calling any API.

usage: gen.py N OUTPUT

- ids r0..r{N-1}, models alternating gpt-5.2 / gemini-3.1-pro-preview
- ~2 % status "error" (1 % baseline, ~11 % during a 1-hour outage 03:00-04:00), 6 messages
  with digits
- latency_ms lognormal-ish clamped to 200..20000, varied token counts, cost_usd set
- finished_at spread evenly over 8 h with +-1.5 s jitter (so slightly out of order),
  started_at = finished_at - latency
- event log: start, an interval every 10 s over 8 h (outage: many 5xx, retries and a
  15-min pause; sporadic 429s elsewhere), stop
"""
import json
import math
import random
import sys

N = int(sys.argv[1])
OUT = sys.argv[2]
rng = random.Random(42)

DAY = "2026-03-02T"
BASE_MS = 0  # 00:00:00.000 UTC of DAY; 8 h fit in one day
SPAN_MS = 8 * 3600 * 1000
OUTAGE = (3 * 3600 * 1000, 4 * 3600 * 1000)
PAUSE = (3 * 3600 * 1000 + 20 * 60 * 1000, 3 * 3600 * 1000 + 35 * 60 * 1000)
INTERVAL_MS = 10_000
BUCKETS = SPAN_MS // INTERVAL_MS

MODELS = ["gpt-5.2", "gemini-3.1-pro-preview"]
# $ per token (prompt, completion) -- any fixed numbers will do for a benchmark
PRICE = {"gpt-5.2": (1.75e-6, 14e-6), "gemini-3.1-pro-preview": (2e-6, 12e-6)}
ERRORS = [
    "HTTP 500: internal server error (request {a}, attempt 5 of 5)",
    "HTTP 503: upstream overloaded, retry after {b}ms",
    "HTTP 429: rate limit exceeded: {b} tokens per minute (limit 2000000)",
    "timeout after 120000 ms (row {a})",
    "HTTP 400: prompt is {b} tokens, over the 128000 limit",
    "connection reset by peer (os error 104) after {b} ms",
]
WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron "
         "pi rho sigma tau upsilon phi chi psi omega summarize translate classify").split()


def ts(ms):
    s, milli = divmod(ms, 1000)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    return f"{DAY}{h:02d}:{m:02d}:{s:02d}.{milli:03d}Z"


# pools of random values, cycled with coprime strides (fast enough in pure Python)
P = 100_003
lat_pool = [min(20000, max(200, int(rng.lognormvariate(math.log(1800), 0.8)))) for _ in range(P)]
pt_pool = [rng.randint(20, 900) for _ in range(P)]
ct_pool = [int(rng.lognormvariate(math.log(250), 0.7)) + 1 for _ in range(P)]
jit_pool = [rng.randint(-1500, 1500) for _ in range(P)]
uni_pool = [rng.random() for _ in range(P)]
prompts = []
for _ in range(997):
    words = []
    while len(" ".join(words)) < 95:
        words.append(rng.choice(WORDS))
    prompts.append(json.dumps(" ".join(words))[1:-1][:100])
completions = []
for _ in range(991):
    words = []
    while len(" ".join(words)) < 140:
        words.append(rng.choice(WORDS))
    completions.append(json.dumps(" ".join(words)))

ok_b = [0] * BUCKETS
err_b = [0] * BUCKETS
cost_b = [0.0] * BUCKETS

step = SPAN_MS / N
n_err = 0
with open(OUT, "w", buffering=1 << 22) as f:
    w = f.write
    for i in range(N):
        k = i % P
        model = MODELS[i & 1]
        fin = int(i * step) + jit_pool[(i * 7) % P]
        fin = min(SPAN_MS - 1, max(0, fin))
        lat = lat_pool[(i * 13) % P]
        start = max(0, fin - lat)
        b = fin // INTERVAL_MS
        u = uni_pool[(i * 17) % P]
        in_outage = OUTAGE[0] <= fin < OUTAGE[1]
        is_err = u < (0.11 if in_outage else 0.01)
        fp = f"{(i * 2654435761) & 0xFFFFFFFFFFFFFFFF:016x}"
        if is_err:
            n_err += 1
            msg = ERRORS[(i // 3) % len(ERRORS)].format(a=i % 997, b=lat_pool[(i * 3) % P] * 7)
            if in_outage:
                msg = ERRORS[i % 2].format(a=i % 997, b=lat_pool[(i * 3) % P] * 7)
            attempts = 5 if in_outage else 1 + (i % 3)
            w(f'{{"id":"r{i}","row":{i + 1},"prompt":"{prompts[i % 997]}","completion":null,'
              f'"finish_reason":null,"model":"{model}","prompt_tokens":0,"cached_tokens":0,'
              f'"completion_tokens":0,"reasoning_tokens":0,"total_tokens":0,"latency_ms":{lat},'
              f'"attempts":{attempts},"status":"error","error":{json.dumps(msg)},"response_id":null,'
              f'"cost_usd":0.0,"fingerprint":"{fp}","simulated":false,'
              f'"started_at":"{ts(start)}","finished_at":"{ts(fin)}"}}\n')
            err_b[b] += 1
        else:
            pt = pt_pool[(i * 19) % P]
            cached = pt // 2 if u > 0.8 else 0
            ct = ct_pool[(i * 23) % P]
            rt = ct // 3 if model == "gpt-5.2" else ct // 4
            ctot = ct + rt
            pp, cp = PRICE[model]
            cost = round((pt - cached) * pp + cached * pp / 10 + ctot * cp, 8)
            w(f'{{"id":"r{i}","row":{i + 1},"prompt":"{prompts[i % 997]}",'
              f'"completion":{completions[i % 991]},"finish_reason":"stop","model":"{model}",'
              f'"prompt_tokens":{pt},"cached_tokens":{cached},"completion_tokens":{ctot},'
              f'"reasoning_tokens":{rt},"total_tokens":{pt + ctot},"latency_ms":{lat},'
              f'"attempts":{1 if u < 0.97 else 2},"status":"ok","error":null,'
              f'"response_id":"chatcmpl-{fp}","cost_usd":{cost},"fingerprint":"{fp}",'
              f'"simulated":false,"started_at":"{ts(start)}","finished_at":"{ts(fin)}"}}\n')
            ok_b[b] += 1
            cost_b[b] += cost

# event log
RUN = "5eedbe0c5eedbe0c"
total_cost = 0.0
done = 0
with open(OUT + ".events.jsonl", "w") as f:
    def line(ms, event, **fields):
        d = {"at": ts(ms), "event": event, "run": RUN}
        d.update(fields)
        f.write(json.dumps(d, separators=(",", ":")) + "\n")

    line(0, "start", pid=4242, via="live", models=MODELS, concurrency=64, rpm=None, tpm=None,
         max_cost=None)
    per_min = N / (SPAN_MS / 60000)
    for b in range(BUCKETS):
        t0 = b * INTERVAL_MS
        t1 = t0 + INTERVAL_MS
        total_cost += cost_b[b]
        done += ok_b[b] + err_b[b]
        in_outage = OUTAGE[0] <= t0 < OUTAGE[1]
        paused = max(0, min(t1, PAUSE[1]) - max(t0, PAUSE[0])) / 1000.0
        if in_outage:
            server = rng.randint(40, 400) if paused < 10 else rng.randint(0, 5)
            retries = server + rng.randint(0, 20)
            rl = rng.randint(0, 3)
            pace = round(per_min * 0.5, 1)
        else:
            server = 1 if rng.random() < 0.02 else 0
            rl = rng.randint(5, 120) if rng.random() < 0.03 else 0
            retries = server + rl
            pace = None if t0 < 3600_000 else round(per_min * 1.1, 1)
        line(t1, "interval", seconds=10.0 + rng.random() * 0.01, ok=ok_b[b], errors=err_b[b],
             retries=retries, rate_limited=rl, server_errors=server, paused_s=paused, done=done,
             in_flight=rng.randint(30, 64), pace_rpm=pace, cost_usd=round(total_cost, 6))
    line(SPAN_MS, "stop", reason="completed", message="", ok=N - n_err, errors=n_err,
         done_before=0, unrecorded=0, cost_usd=round(total_cost, 6), elapsed_s=SPAN_MS / 1000.0)
print(f"{OUT}: {N} records, {n_err} errors ({100 * n_err / N:.2f} %), cost ${total_cost:.2f}",
      file=sys.stderr)
