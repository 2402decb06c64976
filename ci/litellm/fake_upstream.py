"""A fake OpenAI upstream for the LiteLLM proxy in ci/litellm-check.sh, on a free loopback port.

Every chat completion is refused the way OpenAI refuses an account without credit: HTTP 429 with
`{"error": {"code": "insufficient_quota", ...}}`. LiteLLM passes it on as a 429 `throttling_error`
whose message keeps only the text. Writes its port to the file named by argv[1], then serves
until killed.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

QUOTA = {
    "error": {
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }
}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        data = json.dumps(QUOTA).encode()
        self.send_response(429)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(sys.argv[1], "w", encoding="utf-8") as port_file:
    port_file.write(str(server.server_address[1]))
server.serve_forever()
