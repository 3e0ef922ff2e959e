"""Bare asyncssh baseline for G1: connect to every lab node, run `true`, close (no fleet code)."""

import asyncio
import json
import sys
from pathlib import Path

import asyncssh


async def one(port: int, user: str, key: str, known_hosts: str) -> int:
    async with asyncssh.connect(
        "127.0.0.1", port, username=user, client_keys=[key], known_hosts=known_hosts, config=[]
    ) as conn:
        return (await conn.run("true", check=False)).exit_status


async def main(lab_dir: Path) -> int:
    lab = json.loads((lab_dir / "lab.json").read_text())
    key, known = str(lab_dir / "id_ed25519"), str(lab_dir / "known_hosts")
    codes = await asyncio.gather(*(one(n["port"], lab["user"], key, known) for n in lab["nodes"]))
    print(f"{codes.count(0)}/{len(codes)} exit 0")
    return 0 if codes.count(0) == len(codes) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(Path(sys.argv[1]))))
