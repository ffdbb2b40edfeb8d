#!/usr/bin/env python3
"""An OpenAI-compatible chat-completions stub for ops/bench/scale-out.sh.

Counts calls per prompt (the flowchart renders `<run tag>/<node>` as the prompt), answers
`{"ok": true}` after DELAY_MS, and writes the counts as JSON to COUNTS on SIGTERM and on
`GET /counts`. Usage: model-stub.py PORT COUNTS [DELAY_MS]
"""
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, COUNTS = int(sys.argv[1]), sys.argv[2]
DELAY = (int(sys.argv[3]) if len(sys.argv) > 3 else 0) / 1000.0
calls, lock = {}, threading.Lock()


def dump():
    with lock:
        snapshot = dict(calls)
    with open(COUNTS, "w") as f:
        json.dump(snapshot, f)
    return snapshot


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = json.dumps(dump()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        request = json.loads(self.rfile.read(length) or b"{}")
        users = [m for m in request.get("messages", []) if m.get("role") == "user"]
        prompt = users[-1].get("content", "") if users else ""
        with lock:
            calls[prompt] = calls.get(prompt, 0) + 1
        if DELAY:
            time.sleep(DELAY)
        body = json.dumps({
            "id": "chatcmpl-scale", "object": "chat.completion", "model": "stub-model",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "{\"ok\": true}"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
signal.signal(signal.SIGTERM, lambda *_: (dump(), sys.exit(0)))
server.serve_forever()
