"""An experiment's arm: a JSON object of what it changes from the search as asked.

``alpha``: a number in [0, 1] (the fused score's weight); ``understanding``: true or false
(query understanding on or off). services.api.experiments runs them.
"""

from __future__ import annotations

import json
from typing import Any

ARM_KEYS = ("alpha", "understanding")


def check_arm(arm: Any) -> dict[str, Any]:
    """``arm`` (a dict or its JSON text) as stored; ValueError says what is wrong."""
    if isinstance(arm, str):
        try:
            arm = json.loads(arm)
        except json.JSONDecodeError as exc:
            raise ValueError(f"an arm is a JSON object, e.g. '{{\"alpha\": 0.5}}': {exc}") from None
    if not isinstance(arm, dict) or not arm or set(arm) - set(ARM_KEYS):
        raise ValueError(f"an arm sets {' and/or '.join(ARM_KEYS)}; got {arm!r}")
    if "alpha" in arm:
        a = arm["alpha"]
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 <= a <= 1:
            raise ValueError(f"an arm's alpha is a number in [0, 1], got {a!r}")
    if "understanding" in arm and not isinstance(arm["understanding"], bool):
        raise ValueError("an arm's understanding is true or false")
    return arm
