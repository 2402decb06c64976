"""Compares a `--via batch` output made through LiteLLM with one made directly against the
simulator, for ci/litellm-check.sh.

usage: batch_compare.py THROUGH.jsonl DIRECT.jsonl

Prints one line of shell-readable counts:
  records=N ok=N errors=N same=N retried=N first_error='...' first_diff='...'
where `same` counts records of THROUGH whose answer, token counts, cost, error and attempts equal
those of the record with the same id in DIRECT (latency and timestamps differ by nature), and
`retried` counts records with attempts > 1. A missing file counts as empty.
"""

import json
import shlex
import sys

COMPARED = (
    "status",
    "completion",
    "finish_reason",
    "model",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_usd",
    "error",
    "attempts",
)


def load(path: str) -> list[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except (FileNotFoundError, NotADirectoryError):
        return []


def main() -> None:
    through, direct = load(sys.argv[1]), load(sys.argv[2])
    by_id = {r["id"]: r for r in direct}
    ok = errors = same = retried = 0
    first_error = first_diff = ""
    for record in through:
        if record.get("status") == "ok":
            ok += 1
        else:
            errors += 1
            first_error = first_error or " ".join(str(record.get("error")).split())[:200]
        if record.get("attempts", 0) > 1:
            retried += 1
        other = by_id.get(record["id"], {})
        diff = [k for k in COMPARED if record.get(k) != other.get(k)]
        if diff:
            first_diff = first_diff or (
                f"{record['id']}: "
                + ", ".join(f"{k} {record.get(k)!r} vs {other.get(k)!r}" for k in diff)
            )[:300]
        else:
            same += 1
    print(
        f"records={len(through)} ok={ok} errors={errors} same={same} retried={retried} "
        f"first_error={shlex.quote(first_error)} first_diff={shlex.quote(first_diff)}"
    )


if __name__ == "__main__":
    main()
