"""GPU models and families: a requested type, and a model's billing weight."""

from __future__ import annotations

import re

# Billing weight per GPU family: how many billing units one GPU-second costs.
DEFAULT_BILLING_WEIGHTS: dict[str, float] = {
    "B200": 6.0, "H200": 5.0, "H100": 4.0, "A100": 3.0, "L40S": 2.5, "A6000": 2.0,
    "L40": 2.0, "A40": 2.0, "V100": 1.5, "RTX4090": 1.5, "RTX3090": 1.0, "A10": 1.0,
    "L4": 1.0, "T4": 0.5,
}
_FAMILY = re.compile(
    r"(?<![A-Z0-9])(B200|H200|H100|A100|L40S|L40|A6000|A40|A10|V100|L4|T4|RTX\s?\d{4})(?!\d)", re.I
)


def gpu_family(model: str) -> str:
    """`NVIDIA A100-SXM4-80GB` -> `A100`; `GeForce RTX 3090` -> `RTX3090`; else the model."""
    match = _FAMILY.search(model)
    return match.group(1).upper().replace(" ", "") if match else model.upper()


def gpu_type_matches(requested: str, model: str) -> bool:
    """A requested type matches a model by exact name or by family (`a100` fits `A100-80GB`)."""
    req = requested.strip().upper().replace(" ", "")
    return req in (model.upper().replace(" ", ""), gpu_family(model))
