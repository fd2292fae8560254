"""What an `Arch` costs on a device: op keys, per-device tables, measuring and validation."""

from lglsearch.cost.ops import OpKey, arch_ops, op_module, space_ops
from lglsearch.cost.runner import OrtRunner, Timing
from lglsearch.cost.table import CostTable, known_devices

__all__ = ["CostTable", "OpKey", "OrtRunner", "Timing", "arch_ops", "known_devices", "op_module", "space_ops"]
