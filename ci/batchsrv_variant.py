#!/usr/bin/env python3
"""batchsrv with misbehaviours: `../shared/servers/batchsrv.py` (not ours), changed by flags.

It imports batchsrv and subclasses its request handler, so everything not named here (files,
batches, their life, answers, `/stats`, the `--log` of created batches) is batchsrv's own. Same
command line as batchsrv (`--port 0 --port-file F --key K --process-s S --max-requests N
--log F`), plus:

  --bad-downloads N --bad-kind html|empty|half
      the first N downloads of each *output* file's content answer 200 with a wrong body: an
      HTML page (Content-Type text/html), an empty body, or only the first half of its lines
      (Content-Type application/jsonl, as the right body); later downloads get the right body.
      Error files are always served right.
  --dup-ids N
      each output file also repeats N of its custom_ids (its first N lines), each on a line
      appended at the end holding ANOTHER row's answer (the body of a line from the other end of
      the file) under a new batch request id. request_counts are batchsrv's (unchanged).
  --both-files N
      N rows of each batch that are answered in the output file (its first N lines) also appear
      in the error file, each with a 500 error line (an error file is made when there is none).
      request_counts are batchsrv's (unchanged: the contradiction is in the files only).
  --create-delay S
      `POST /v1/batches` creates the batch at once (it is counted in /stats, logged and starts
      running) but the answer is sent only after S seconds, so a client killed meanwhile leaves
      a batch it never learnt of.

The file changes are made when a batch's output file id is first shown (in the `GET
/v1/batches/{id}` answer that first holds it), under batchsrv's lock, so no client can see a file
before it is changed. `--log` also gets `{"t", "event": "download"|"create-answered", ...}` lines
beside batchsrv's `{"t", "batch", "custom_ids"}` ones. `GET /variant-stats` (no key) counts
downloads: `{"downloads", "bad_downloads"}`.
"""
import argparse
import json
import os
import re
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SERVERS = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "servers"))
sys.path.insert(0, SERVERS)
import batchsrv  # noqa: E402  (../shared/servers: independent of promptbatch)

VAR = argparse.Namespace(bad_downloads=0, bad_kind="html", dup_ids=0, both_files=0, create_delay=0.0)
DOWNLOADS = {}  # output file id -> downloads served so far
DONE = set()  # batch ids whose files were changed
VSTATS = {"downloads": 0, "bad_downloads": 0}
LOG_LOCK = threading.Lock()

HTML = (b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
        b"<body><h1>Bad Gateway</h1><p>The upstream server returned an invalid response.</p>"
        b"</body></html>\n")


def log(cfg, obj):
    if cfg.log:
        with LOG_LOCK, open(cfg.log, "a") as f:
            f.write(json.dumps(dict(t=time.time(), **obj)) + "\n")


def output_file_ids():
    """Ids of files that are some batch's output file (not error files, not inputs)."""
    return {b.get("output_file_id") for b in batchsrv.BATCHES.values() if b.get("output_file_id")}


def lines_of(fid):
    return [json.loads(l) for l in batchsrv.FILES[fid]["data"].decode().splitlines() if l.strip()]


def encode(lines):
    return ("\n".join(json.dumps(x) for x in lines) + "\n").encode()


def change_files(b):
    """--dup-ids and --both-files on batch B's files, once (caller holds batchsrv.LOCK)."""
    if b["id"] in DONE or not b.get("output_file_id"):
        return
    DONE.add(b["id"])
    out = lines_of(b["output_file_id"])
    if VAR.dup_ids and len(out) >= 2:
        extra = []
        for i in range(min(VAR.dup_ids, len(out))):
            other = out[len(out) - 1 - i] if len(out) - 1 - i != i else out[(i + 1) % len(out)]
            extra.append({"id": batchsrv.new_id("batch_req_"), "custom_id": out[i]["custom_id"],
                          "response": json.loads(json.dumps(other["response"])), "error": None})
        batchsrv.FILES[b["output_file_id"]]["data"] = encode(out + extra)
    if VAR.both_files:
        err = lines_of(b["error_file_id"]) if b.get("error_file_id") else []
        for q in out[:VAR.both_files]:
            err.append({"id": batchsrv.new_id("batch_req_"), "custom_id": q["custom_id"],
                        "response": {"status_code": 500, "request_id": batchsrv.new_id("req_"),
                                     "body": {"error": {"message": "The server had an error while "
                                                        "processing your request.",
                                                        "type": "server_error"}}},
                        "error": None})
        if err:
            if b.get("error_file_id"):
                batchsrv.FILES[b["error_file_id"]]["data"] = encode(err)
            else:
                fid = batchsrv.new_id("file-")
                batchsrv.FILES[fid] = {"data": encode(err), "purpose": "batch_output"}
                b["error_file_id"] = fid


class Variant(batchsrv.H):
    def do_GET(self):
        if self.path == "/variant-stats":
            with batchsrv.LOCK:
                return self.send(200, dict(VSTATS))
        m = re.fullmatch(r"/v1/batches/([\w-]+)", self.path)
        if m and m.group(1) in batchsrv.BATCHES and (VAR.dup_ids or VAR.both_files):
            with batchsrv.LOCK:
                change_files(batchsrv.BATCHES[m.group(1)])
        m = re.fullmatch(r"/v1/files/([\w-]+)/content", self.path)
        if m and m.group(1) in batchsrv.FILES and VAR.bad_downloads and \
                self.headers.get("Authorization") == "Bearer " + self.cfg.key:
            fid = m.group(1)
            with batchsrv.LOCK:
                is_output = fid in output_file_ids()
                data = batchsrv.FILES[fid]["data"]
                n = DOWNLOADS.get(fid, 0)
                bad = is_output and n < VAR.bad_downloads
                if is_output:
                    DOWNLOADS[fid] = n + 1
                VSTATS["downloads"] += 1
                VSTATS["bad_downloads"] += int(bad)
            log(self.cfg, {"event": "download", "file": fid, "output": is_output, "bad": bad})
            if not bad:
                return self.send(200, None, raw=data, ctype="application/jsonl")
            if VAR.bad_kind == "html":
                return self.send(200, None, raw=HTML, ctype="text/html; charset=utf-8")
            if VAR.bad_kind == "empty":
                return self.send(200, None, raw=b"", ctype="application/jsonl")
            lines = data.decode().splitlines(keepends=True)
            return self.send(200, None, raw="".join(lines[:len(lines) // 2]).encode(),
                             ctype="application/jsonl")
        return super().do_GET()

    def send(self, status, obj, raw=None, ctype="application/json"):
        if VAR.create_delay and self.command == "POST" and self.path == "/v1/batches" and status == 200:
            log(self.cfg, {"event": "create-delayed", "batch": (obj or {}).get("id")})
            time.sleep(VAR.create_delay)
            log(self.cfg, {"event": "create-answered", "batch": (obj or {}).get("id")})
        return super().send(status, obj, raw=raw, ctype=ctype)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 add_help=False)
    ap.add_argument("--bad-downloads", type=int, default=0)
    ap.add_argument("--bad-kind", choices=["html", "empty", "half"], default="html")
    ap.add_argument("--dup-ids", type=int, default=0)
    ap.add_argument("--both-files", type=int, default=0)
    ap.add_argument("--create-delay", type=float, default=0.0)
    known, rest = ap.parse_known_args()
    if "-h" in rest or "--help" in rest:
        print(__doc__)
    vars(VAR).update(vars(known))
    # batchsrv's own main parses the rest and serves with batchsrv.H (looked up when it runs).
    sys.argv = [sys.argv[0], *rest]
    batchsrv.H = Variant
    batchsrv.main()


if __name__ == "__main__":
    main()
