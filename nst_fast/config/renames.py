"""Settings that moved: command lines written for an earlier layout keep working, with a note naming the new key.

``translate_overrides`` rewrites Hydra overrides (``key=value``, ``+key=value``, ``++key=value``, sweeps) before
Hydra parses them; the entry points apply it to ``sys.argv``, so that DDP's re-launched ranks see the new keys too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

#: Old key (or old key prefix before a ``.``) -> new key.
RENAMED_KEYS = {
    "optimizer": "module.optimizer",
    "output_lr_scale": "module.output_lr_scale",
    "channels_last": "module.channels_last",
    "compile": "module.compile",
    "max_consecutive_nonfinite": "module.max_consecutive_nonfinite",
    "export.int8": "export.int8.enabled",
    "export.int8_calibration": "export.int8.calibration",
    "export.int8_calibration_photos": "export.int8.photos",
    "export.int8_calibration_size": "export.int8.size",
    "export.int8_method": "export.int8.method",
    "export.int8_min_psnr": "export.int8.min_psnr",
    "export.triton": "export.triton.enabled",
    **{
        f"export.triton_{key}": f"export.triton.{key}"
        for key in ("max_batch_size", "max_queue_delay_us", "instance_kind", "tensorrt", "trt_opt_side", "trt_max_side")
    },
}
#: Keys whose value was renamed: key -> {old value: new value}.
RENAMED_VALUES = {"loss.weights": {"none": "random"}}
#: Old keys that were switches and are now groups: only their exact form (``export.int8=true``) is renamed;
#: ``export.int8.photos=...`` is already the new layout.
_SWITCHES = {"export.int8", "export.triton"}

_OVERRIDE = re.compile(r"^(?P<prefix>[+~]{0,2})(?P<key>[A-Za-z_][\w.]*)(?P<rest>(=.*)?)$", re.DOTALL)


def _renamed_key(key: str) -> str | None:
    if key in RENAMED_KEYS:
        return RENAMED_KEYS[key]
    head = key.split(".", 1)[0]
    if "." in key and head in RENAMED_KEYS and head not in _SWITCHES:
        return RENAMED_KEYS[head] + key[len(head) :]
    return None


def translate_overrides(arguments: Sequence[str], note: Callable[[str], None]) -> list[str]:
    """``arguments`` with old keys and values rewritten to the new ones; ``note`` is told each rewrite once."""
    translated = []
    for argument in arguments:
        match = _OVERRIDE.match(argument)
        if match is None or argument.startswith("-"):
            translated.append(argument)
            continue
        prefix, key, rest = match["prefix"], match["key"], match["rest"]
        new_key = _renamed_key(key)
        if new_key is not None:
            note(f"note: {key} is now {new_key}; please update your command or config")
            key = new_key
        values = RENAMED_VALUES.get(key, {})
        if rest.startswith("=") and rest[1:] in values:
            note(f"note: {key}={rest[1:]} is now {key}={values[rest[1:]]}")
            rest = "=" + values[rest[1:]]
        translated.append(prefix + key + rest)
    return translated
