"""Measuring op latency (and energy) on a real phone over adb. The one module that talks to adb.

Each op is exported to ONNX, pushed to the phone and run by an on-device benchmark binary through
a command template (default: onnxruntime's `onnxruntime_perf_test`, which the user pushes to the
phone once). The template's output is parsed with a regular expression. Energy, when asked for,
comes from the battery fuel gauge (`current_now` in uA, `voltage_now` in uV) sampled while the
op runs in a long loop, less an idle baseline sampled the same way: (P_busy - P_idle) x time / runs.
The gauge is averaged and slow (1-10 Hz), so loops should last seconds, and readings while the
phone charges are meaningless: a charging phone is refused.

No phone is attached to lglsearch's own machines: the tests run this module against a fake `adb`
executable that answers as a device would (it runs the pushed model with onnxruntime on the host).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lglsearch.errors import LglsearchError

__all__ = ["DEFAULT_COMMAND", "DEFAULT_PARSE", "AdbPhone", "BenchmarkCommand"]

DEFAULT_COMMAND = "{taskset}{binary} -e cpu -m times -r {runs} -x {threads} -I {model}"
DEFAULT_PARSE = r"Average inference time cost:\s*([0-9.]+)\s*ms"
_GAUGE = "/sys/class/power_supply/battery"


@dataclass(frozen=True)
class BenchmarkCommand:
    """How to run one model on the phone and read its latency (ms) from the output."""

    template: str = DEFAULT_COMMAND
    parse: str = DEFAULT_PARSE
    binary: str = "/data/local/tmp/onnxruntime_perf_test"
    threads: int = 1
    runs: int = 50
    cpu_mask: str | None = None  # e.g. "70": taskset core pinning

    def render(self, model: str, runs: int | None = None) -> str:
        taskset = f"taskset {self.cpu_mask} " if self.cpu_mask else ""
        try:
            return self.template.format(
                taskset=taskset, binary=self.binary, runs=runs or self.runs, threads=self.threads, model=model
            )
        except (KeyError, IndexError) as err:
            raise LglsearchError(
                f"benchmark template {self.template!r} uses an unknown field {err}; use {{taskset}}, {{binary}}, "
                "{runs}, {threads}, {model}"
            ) from None

    def latency_ms(self, output: str, command: str) -> float:
        match = re.search(self.parse, output)
        if not match:
            tail = " | ".join(output.strip().splitlines()[-3:]) or "nothing"
            raise LglsearchError(
                f"could not read a latency from `{command}` (printed: {tail}); check --bench-command and --bench-parse"
            )
        return float(match.group(1))


@dataclass
class AdbPhone:
    """One phone reached through `adb -s SERIAL`."""

    serial: str
    adb: str = "adb"
    remote_dir: str = "/data/local/tmp/lglsearch"
    timeout_s: float = 600.0
    _checked: bool = field(default=False, repr=False)

    def _run(self, *args: str, timeout: float | None = None) -> str:
        cmd = [self.adb, "-s", self.serial, *args]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout or self.timeout_s)
        except FileNotFoundError:
            raise LglsearchError(
                f"adb executable {self.adb!r} not found; install Android platform-tools or pass --adb-path"
            ) from None
        except subprocess.TimeoutExpired:
            raise LglsearchError(f"`{shlex.join(cmd)}` did not answer in {timeout or self.timeout_s:.0f} s") from None
        if proc.returncode != 0:
            message = (proc.stderr or proc.stdout).strip().splitlines()
            raise LglsearchError(f"`{shlex.join(cmd)}` failed: {message[-1] if message else proc.returncode}")
        return proc.stdout

    def check(self) -> None:
        """The phone answers and is authorised; raises naming the state and the fix otherwise."""
        if self._checked:
            return
        try:
            state = self._run("get-state", timeout=30).strip()
        except LglsearchError as err:
            raise LglsearchError(f"adb device {self.serial!r} is not reachable ({err}); check `adb devices`") from None
        if state != "device":
            raise LglsearchError(
                f"adb device {self.serial!r} is {state!r}, not ready; unlock it and accept the debugging prompt"
            )
        self._run("shell", f"mkdir -p {self.remote_dir}")
        self._checked = True

    def shell(self, command: str, timeout: float | None = None) -> str:
        self.check()
        return self._run("shell", command, timeout=timeout)

    def push(self, local: Path) -> str:
        self.check()
        remote = f"{self.remote_dir}/{local.name}"
        self._run("push", str(local), remote)
        return remote

    def describe(self) -> dict[str, str]:
        props = {
            k: self.shell(f"getprop {p}").strip()
            for k, p in (
                ("model", "ro.product.model"),
                ("soc", "ro.board.platform"),
                ("android", "ro.build.version.release"),
            )
        }
        return props

    def latency_ms(self, remote_model: str, bench: BenchmarkCommand) -> float:
        command = bench.render(remote_model)
        return bench.latency_ms(self.shell(command), command)

    # -- energy ---------------------------------------------------------------------------------

    def _power_w(self) -> float:
        out = self.shell(f"cat {_GAUGE}/status {_GAUGE}/current_now {_GAUGE}/voltage_now").split()
        if len(out) != 3:
            raise LglsearchError(f"the fuel gauge at {_GAUGE} answered {out!r}; this phone exposes no usable gauge")
        status, current_ua, voltage_uv = out[0], float(out[1]), float(out[2])
        if status.lower() in ("charging", "full"):
            raise LglsearchError(
                f"the phone is {status.lower()}: gauge readings are meaningless while USB powers it; "
                "use wireless adb or cut charging"
            )
        if current_ua == 0 or voltage_uv == 0:
            raise LglsearchError("the fuel gauge reads zero current or voltage; this phone exposes no usable gauge")
        return abs(current_ua) * voltage_uv * 1e-12

    def _sample_power(self, seconds: float, interval: float, busy: subprocess.Popen | None = None) -> list[float]:
        samples, end = [], time.monotonic() + seconds
        while time.monotonic() < end if busy is None else busy.poll() is None:
            samples.append(self._power_w())
            time.sleep(interval)
        return samples

    def energy_mj(self, remote_model: str, bench: BenchmarkCommand, *, runs: int, interval: float = 0.2) -> float:
        """Energy per inference (mJ): gauge sampled during `runs` inferences, less idle."""
        command = bench.render(remote_model, runs=runs)
        cmd = [self.adb, "-s", self.serial, "shell", command]
        start = time.monotonic()
        result: dict[str, str] = {}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        reader = threading.Thread(target=lambda: result.setdefault("out", proc.stdout.read()))
        reader.start()
        busy = self._sample_power(0, interval, busy=proc)
        reader.join()
        seconds = time.monotonic() - start
        bench.latency_ms(result.get("out", ""), command)  # the loop must have run and printed its latency
        idle = self._sample_power(seconds, interval)
        if len(busy) < 3 or len(idle) < 3:
            raise LglsearchError(
                f"only {len(busy)} gauge readings during the loop; raise --energy-runs so that it lasts seconds"
            )
        extra_w = float(np.mean(busy) - np.mean(idle))
        noise_w = float(np.sqrt(np.var(busy, ddof=1) / len(busy) + np.var(idle, ddof=1) / len(idle)))
        # storing 0 (or noise) would price the op as free; the reading is what is wrong. The floor
        # keeps equal readings (a mean's rounding) from passing as a positive difference.
        if extra_w <= max(2 * noise_w, 1e-6 * float(np.mean(idle))):
            raise LglsearchError(
                f"the phone drew no more power running the loop ({np.mean(busy):.3f} W) than idle "
                f"({np.mean(idle):.3f} W), beyond twice the readings' standard error ({noise_w:.3f} W): it is "
                "likely powered over USB although its gauge does not say charging, or its gauge does not "
                "follow the current; use wireless adb with the cable out, or raise --energy-runs so that "
                "the loop outlasts the gauge's averaging"
            )
        return extra_w * seconds / runs * 1e3
