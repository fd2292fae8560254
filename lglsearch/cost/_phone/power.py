"""Active power of the phone cores the shipped tables' latencies ran on: the one home of the
figures their modelled energy stands on, each with its source.

One method for every phone, so that energies compare across phones: Android's `power_profile.xml`
of each phone (its device tree) gives, per cluster and frequency, the extra battery current of one
busy core (`cpu.core_power.clusterN`), plus a per-cluster and a CPU-wide (`cpu.active`) term; the
active power of one busy core at top frequency is their sum times the cell voltage. These are the
vendors' battery-attribution figures, lower than measured power (on the Snapdragon 888, 1.31 W
against 1.88 W under SPECint2006, x0.70), so an energy built on them is a lower estimate.
Figures as collected in the project's power facts (shared/data/power/README.md, not read at run
time); an energy per inference is active power x latency (ms x W = mJ).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lglsearch.errors import LglsearchError

__all__ = ["CorePower", "PhonePower", "phone_power"]

_VOLTAGE_V = 3.85
"""Nominal voltage of a Li-ion cell; the power profiles themselves use 3.7 V for their radio
entries (3.7 V would lower every figure by 4%)."""

_METHOD = (
    "active power of one busy core at top frequency from the phone's own power_profile.xml: "
    f"(cpu.core_power + cpu.cluster_power + cpu.active) mA x {_VOLTAGE_V} V; the vendors' battery-attribution "
    "figures, so a lower estimate (x0.70 of the SPEC-measured power on the Snapdragon 888)"
)


@dataclass(frozen=True)
class CorePower:
    """One core's power-profile currents (mA) at its top frequency, and where they come from."""

    core: str
    core_ma: float
    cluster_ma: float
    active_ma: float
    source: str
    trust: str

    @property
    def watts(self) -> float:
        return round((self.core_ma + self.cluster_ma + self.active_ma) * _VOLTAGE_V / 1000, 3)

    def to_dict(self) -> dict[str, Any]:
        return {
            "core": self.core,
            "ma": {"core": self.core_ma, "cluster": self.cluster_ma, "active": self.active_ma},
            "power_w": self.watts,
            "source": self.source,
            "trust": self.trust,
        }


@dataclass(frozen=True)
class PhonePower:
    """The core a phone's latencies ran on (`used`), why, and the other candidates."""

    used: CorePower
    why: str
    alternatives: tuple[CorePower, ...] = ()
    cross_check: str = ""

    def to_meta(self) -> dict[str, Any]:
        """The table metadata of an energy modelled from these figures."""
        meta = {
            "method": "modelled",
            "formula": "energy_mj = latency_ms x power_w (ms x W = mJ)",
            "power_method": _METHOD,
            "power_w": self.used.watts,
            "power_source": f"{self.used.core}: {self.used.source} (trust {self.used.trust})",
            "core": self.used.to_dict(),
            "why_this_core": self.why,
        }
        if self.alternatives:
            meta["alternatives"] = [
                c.to_dict() | {"energy_factor": round(c.watts / self.used.watts, 3)} for c in self.alternatives
            ]
        if self.cross_check:
            meta["cross_check"] = self.cross_check
        return meta


_PROFILE = "overlay/frameworks/base/core/res/res/xml/power_profile.xml"

_PHONES: dict[str, PhonePower] = {
    "snapdragon888": PhonePower(
        CorePower(
            "Cortex-A78 @ 2419.2 MHz (cpu4-6)",
            333.27,
            0.0,
            7.6,
            f"Xiaomi Mi 11 power profile, PixelExperience-Devices/device_xiaomi_venus, {_PROFILE} (commit 365b1b7)",
            "medium",
        ),
        "taskset 70 selects cpu4-6, the three Cortex-A78 cores (cpu7 is the X1; Linux sm8350.dtsi)",
        cross_check=(
            "SPECint2006 measured 1.88 W for one busy Cortex-A78 @ 2.42 GHz on the Mi 11 (Golden Reviewer, as "
            "reported by tekfiz.com/2021/01/first-snapdragon-888-benchmarks.html; trust medium): x1.43 the "
            "power-profile figure. This table moved from it to the power profile (energies 0.70x the earlier "
            "ones) because only the power profiles exist for all four phones, so only they compare across phones"
        ),
    ),
    "snapdragon855": PhonePower(
        CorePower(
            "Kryo 485 Gold = Cortex-A76 @ 2419.2 MHz (cpu4-6)",
            302.04,
            2.2,
            8.4,
            f"Google Pixel 4 power profile, LineageOS/android_device_google_coral, flame/{_PROFILE} "
            "(values from Google, 2019-07-05)",
            "medium",
        ),
        "taskset 70 selects cpu4-6, the three Kryo 485 Gold cores (cpu7 is the 2.84 GHz prime core)",
    ),
    "tensor-g1": PhonePower(
        CorePower(
            "Cortex-X1 @ 2802 MHz (cpu6)",
            254.25,
            5.94,
            12.37,
            f"Google Pixel 6 power profile, GrapheneOS/device_google_raviole, oriole/{_PROFILE}, after Google's "
            "2022-01-21 change 'Correct CPU topology and power number' (the version before it was 8x higher)",
            "low: Google's own two versions disagree 8x",
        ),
        "taskset 70 allows cpu4-5 (Cortex-A76 @ 2.25 GHz) and cpu6 (Cortex-X1 @ 2.80 GHz). The X1 is chosen: on "
        "the same 12,116 reference blocks the Pixel 4's Cortex-A76 @ 2.42 GHz takes 1.56x the Pixel 6's time "
        "(median; 1.48-1.58 for every block kind but firstconv, 2.02), which a slower-clocked A76 cannot do and an X1 "
        "can; and a busy thread is moved to the biggest allowed core by the scheduler",
        alternatives=(
            CorePower(
                "Cortex-A76 @ 2253 MHz (cpu4-5)",
                79.04,
                3.23,
                12.37,
                f"same file (GrapheneOS/device_google_raviole, oriole/{_PROFILE})",
                "low",
            ),
        ),
    ),
    "snapdragon821": PhonePower(
        CorePower(
            "Kryo gold @ 2150.4 MHz (cpu2-3)",
            297.92,
            21.16,
            18.76,
            f"Google Pixel 1 power profile, LineageOS/android_device_google_marlin, sailfish/{_PROFILE} "
            "(values from Google, 2018-01-22)",
            "medium",
        ),
        "not recorded: the SoC has cpu0-3 only, so taskset 70 cannot have pinned the runs; a busy unpinned "
        "thread most likely ran on a Kryo gold core (cpu2-3). Were it a silver core (1.59 GHz), its power "
        "would be lower, and no figure for it is used here",
    ),
}


def phone_power(device: str) -> PhonePower:
    """The power figures of a derivable phone; an error naming the fix where there are none."""
    try:
        return _PHONES[device]
    except KeyError:
        raise LglsearchError(
            f"no power figure for phone {device!r}, so its energy cannot be modelled; add its core's "
            "power_profile.xml currents and their source to lglsearch/cost/_phone/power.py"
        ) from None
