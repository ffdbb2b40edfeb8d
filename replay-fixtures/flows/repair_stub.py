"""A local OpenAI-compatible chat-completions server for recording the schema-repair fixture:
the first answer of each conversation breaks the node's output schema (`txt` instead of
`text`), the answer to the repair request (a conversation with more than two messages) is
valid. Prints its port on stdout, then serves until killed. Standard library only."""
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

KEY = sys.argv[1] if len(sys.argv) > 1 else "fixture-key"


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path != "/v1/chat/completions":
            return self.answer(404, {"error": {"message": "not found"}})
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            return self.answer(401, {"error": {"message": "bad key"}})
        repairing = len(body.get("messages", [])) > 2
        content = json.dumps({"text": "repaired answer"} if repairing else {"txt": "wrong key"})
        self.answer(200, {
            "id": "chatcmpl-fixture", "object": "chat.completion", "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
        })

    def answer(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
