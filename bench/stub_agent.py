"""A stand-in node agent for `bench/g3_tasks.py --stub-agent`: it speaks the agent protocol
(docs/agent-protocol.md) but runs nothing. A spawn is answered at once with its start and
an exit event (exit code 0, empty stdout and stderr, the exit record inline), so a run
measures the controller's own cost and ceiling (SSH, JSON, the store) without the node
side's fork and exec. Never used outside benchmarks; stdlib only, like the real agent.

Usage (as the controller starts an agent): python3 -S stub_agent.py ROOT
"""

import base64
import json
import os
import pwd
import sys
import time

PROTOCOL = 5


def utc_now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def boot_id() -> str:
    path = os.environ.get("FLEET_BOOT_ID_FILE") or "/proc/sys/kernel/random/boot_id"
    with open(path) as f:
        return f.read().strip()


def write(messages: list) -> None:
    encoded = [json.dumps(m, separators=(",", ":")) for m in messages]
    if len(encoded) > 1:
        encoded = ['{"type":"batch","messages":[' + ",".join(encoded) + "]}"]
    if encoded:
        sys.stdout.write(encoded[0] + "\n")
        sys.stdout.flush()


def exited(args: dict, start: str) -> dict:
    """The exit event of a spawn that ran nothing, its files inline as the agent sends them."""
    record = {
        "protocol": PROTOCOL,
        "key": args["key"],
        "attempt": args["attempt"],
        "pid": os.getpid(),
        "exitCode": 0,
        "signal": None,
        "timedOut": False,
        "startTime": start,
        "endTime": start,
        "error": None,
        "stats": {
            "userCPUSeconds": 0.0,
            "kernelCPUSeconds": 0.0,
            "wallClockSeconds": 0.0,
            "readBlocks": 0,
            "writeBlocks": 0,
            "maxRSSBytes": 0,
        },
    }
    exit_json = base64.b64encode(json.dumps(record).encode()).decode()
    event = {"type": "event", "event": "exited", "key": args["key"], "exit": record}
    event.update(taskDir=args["taskDir"], attempt=args["attempt"])
    event["files"] = {"exit.json": exit_json, "stdout.txt": "", "stderr.txt": ""}
    return event


def answer(request: dict, boot: str, events: list) -> dict:
    op, args = request.get("op"), request.get("args") or {}
    result: dict = {}
    if op == "spawn":
        start = utc_now()
        result = {"startTime": start}
        events.append(exited(args, start))
    elif op == "status":  # nothing ever runs here
        result = {"tasks": [{"key": t["key"], "state": "missing"} for t in args.get("tasks", [])]}
    elif op in ("ping", "setup"):
        result = {"bootId": boot, "time": utc_now()}
    return {"type": "reply", "id": request.get("id"), "ok": True, "result": result}


def main() -> None:
    root, boot = os.path.realpath(sys.argv[1]), boot_id()
    user = pwd.getpwuid(os.getuid()).pw_name
    hello = {"type": "hello", "protocol": PROTOCOL, "pid": os.getpid(), "bootId": boot}
    write([hello | {"root": root, "user": user, "uid": os.getuid(), "python": "stub"}])
    for line in sys.stdin:
        message = json.loads(line)
        batch = message["messages"] if message.get("type") == "batch" else [message]
        replies: list = []
        events: list = []
        for request in batch:
            replies.append(answer(request, boot, events))
        write(replies + events)
        if any(request.get("op") == "shutdown" for request in batch):
            return


if __name__ == "__main__":
    main()
