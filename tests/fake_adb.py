"""A fake `adb` that answers as one Android phone would, for the tests of lglsearch.cost.adb.

No phone is attached to lglsearch's machines. This script stands in for `adb -s SERIAL ...`: the
phone's file system is the folder $FAKE_ADB_ROOT; `push` copies into it; `shell` answers
`mkdir`, `getprop`, the battery fuel gauge files, and the benchmark command, which it runs for
real with onnxruntime on the host on the pushed model, printing what onnxruntime_perf_test prints.
Behaviour switches (environment): FAKE_ADB_STATE (get-state answer), FAKE_ADB_STATUS (battery
status), FAKE_ADB_IDLE_UA / FAKE_ADB_BUSY_UA (current while idle / while a benchmark runs),
FAKE_ADB_BENCH (normal | garbage | fail-after-N), FAKE_ADB_BENCH_SECONDS (extra loop time).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from pathlib import Path

SERIAL = "FAKE0001"


def main(argv: list[str]) -> int:
    root = Path(os.environ["FAKE_ADB_ROOT"])
    if argv[:1] != ["-s"] or argv[1] != SERIAL:
        print(f"adb: device '{argv[1] if len(argv) > 1 else ''}' not found", file=sys.stderr)
        return 1
    cmd, args = argv[2], argv[3:]
    if cmd == "get-state":
        print(os.environ.get("FAKE_ADB_STATE", "device"))
        return 0
    if cmd == "push":
        target = root / args[1].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(args[0], target)
        print(f"{args[0]}: 1 file pushed")
        return 0
    if cmd != "shell":
        print(f"adb: unknown command {cmd}", file=sys.stderr)
        return 1
    line = " ".join(args)
    if line.startswith("mkdir -p "):
        (root / line.split()[-1].lstrip("/")).mkdir(parents=True, exist_ok=True)
        return 0
    if line.startswith("getprop "):
        print(
            {"ro.product.model": "Fake Phone", "ro.board.platform": "fakesoc", "ro.build.version.release": "15"}.get(
                line.split()[1], ""
            )
        )
        return 0
    if line.startswith("cat /sys/class/power_supply/battery/"):
        busy = (root / "busy").exists()
        current = os.environ.get("FAKE_ADB_BUSY_UA" if busy else "FAKE_ADB_IDLE_UA", "-300000")
        print(os.environ.get("FAKE_ADB_STATUS", "Discharging"), current, "3900000", sep="\n")
        return 0
    if "onnxruntime_perf_test" in line:
        return benchmark(root, line)
    print(f"/system/bin/sh: {line.split()[0]}: not found", file=sys.stderr)
    return 127


def benchmark(root: Path, line: str) -> int:
    mode = os.environ.get("FAKE_ADB_BENCH", "normal")
    count_file = root / "bench_count"
    count = int(count_file.read_text()) if count_file.exists() else 0
    count_file.write_text(str(count + 1))
    if mode.startswith("fail-after-") and count >= int(mode.rsplit("-", 1)[1]):
        print("Segmentation fault", file=sys.stderr)
        return 139
    if mode == "garbage":
        print("Session creation time cost: 0.01 s\nsomething else entirely")
        return 0
    import numpy as np
    import onnxruntime as ort

    runs = int(re.search(r"-r (\d+)", line).group(1))
    model = root / line.split()[-1].lstrip("/")
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal([1 if isinstance(d, str) else d for d in inp.shape], dtype=np.float32)
    (root / "busy").touch()
    try:
        start = time.perf_counter()
        for _ in range(runs):
            session.run(None, {inp.name: x})
        elapsed = time.perf_counter() - start
        time.sleep(float(os.environ.get("FAKE_ADB_BENCH_SECONDS", "0")))
    finally:
        (root / "busy").unlink()
    print(f"Session creation time cost: 0.01 s\nTotal inference time cost: {elapsed:.6f} s")
    print(f"Total inference requests: {runs}\nAverage inference time cost: {1e3 * elapsed / runs:.6f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
