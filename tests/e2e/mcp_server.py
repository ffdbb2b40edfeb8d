"""A tiny MCP server on stdio for tests/e2e/agents.rs: newline-delimited JSON-RPC 2.0, the
`initialize` handshake, `tools/list` and `tools/call` of two tools:

- `define` ({"word": string}) answers "<word>: a word the test server knows";
- `fail` answers an error result (isError: true).

Each `tools/call` is appended as one JSON line to the file named by the first argument, so the
test can tell how many times the server was really called.
"""

import json
import sys

TOOLS = [
    {
        "name": "define",
        "description": "Define a word.",
        "inputSchema": {
            "type": "object",
            "required": ["word"],
            "properties": {"word": {"type": "string"}},
            "additionalProperties": False,
        },
        "annotations": {"readOnlyHint": True},
    },
    {
        "name": "fail",
        "description": "Always fails.",
        "inputSchema": {"type": "object", "properties": {}},
    },
]


def answer(request_id, result):
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}) + "\n")
    sys.stdout.flush()


def refuse(request_id, code, message):
    error = {"code": code, "message": message}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}) + "\n")
    sys.stdout.flush()


def call(params, log):
    name = params.get("name")
    arguments = params.get("arguments") or {}
    with open(log, "a", encoding="utf-8") as f:
        f.write(json.dumps({"name": name, "arguments": arguments}) + "\n")
    if name == "define":
        text = f"{arguments.get('word', '')}: a word the test server knows"
        return {"content": [{"type": "text", "text": text}], "isError": False}
    return {"content": [{"type": "text", "text": "fail always fails"}], "isError": True}


def main():
    log = sys.argv[1]
    for line in sys.stdin:
        if not line.strip():
            continue
        message = json.loads(line)
        method = message.get("method")
        request_id = message.get("id")
        if request_id is None:
            continue  # a notification (notifications/initialized, cancellations)
        params = message.get("params") or {}
        if method == "initialize":
            answer(
                request_id,
                {
                    "protocolVersion": params.get("protocolVersion", "2025-06-18"),
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "runledger-e2e", "version": "1.0.0"},
                },
            )
        elif method == "tools/list":
            answer(request_id, {"tools": TOOLS})
        elif method == "tools/call":
            answer(request_id, call(params, log))
        elif method == "ping":
            answer(request_id, {})
        else:
            refuse(request_id, -32601, f"method not found: {method}")


if __name__ == "__main__":
    main()
