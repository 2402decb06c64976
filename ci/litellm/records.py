"""Counts what a promptbatch output holds, for ci/litellm-check.sh.

usage: records.py OUTPUT.jsonl EXPECTED_COMPLETION PROMPT_TOKENS COMPLETION_TOKENS

Prints one line of shell-readable counts:
  records=N ok=N errors=N ok_as_mocked=N first_error='...'
where ok_as_mocked counts ok records whose completion and token counts are the mocked ones.
A missing output file counts as empty; a line that is not JSON counts as an error.
"""

import json
import shlex
import sys


def main() -> None:
    path, completion, prompt_tokens, completion_tokens = sys.argv[1:5]
    records = ok = errors = mocked = 0
    first_error = ""
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except FileNotFoundError:
        lines = []
    for line in lines:
        if not line.strip():
            continue
        records += 1
        try:
            record = json.loads(line)
        except ValueError:  # a torn last line counts as an error, quoted
            errors += 1
            first_error = first_error or f"unparsable output line: {line[:100]}"
            continue
        if record.get("status") == "ok":
            ok += 1
            if (
                record.get("completion") == completion
                and record.get("prompt_tokens") == int(prompt_tokens)
                and record.get("completion_tokens") == int(completion_tokens)
            ):
                mocked += 1
        else:
            errors += 1
            if not first_error:
                first_error = " ".join(str(record.get("error")).split())[:200]
    print(
        f"records={records} ok={ok} errors={errors} ok_as_mocked={mocked} "
        f"first_error={shlex.quote(first_error)}"
    )


if __name__ == "__main__":
    main()
