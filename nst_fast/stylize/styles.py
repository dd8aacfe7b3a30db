"""Style selection: a style name, a blend ``NAME=W,...`` and a strength become the ``style_weights`` vector a
multi-style model takes."""

from __future__ import annotations

import numpy as np

from nst_fast.errors import StylizeError
from nst_fast.stylize.models import StyleModel


def parse_style_weights(model: StyleModel, style: str | None, strength: float | None) -> np.ndarray | None:
    """Style weights ``[S]`` for ``--style`` and ``--strength`` (``None`` for one-condition models).

    ``style``: ``NAME`` (that style alone), ``NAME=W,NAME=W,...`` (a blend; weights >= 0, sum <= 1, the rest to
    the identity), or ``None`` (the only style of a one-style model). ``strength`` in [0, 1] scales the weights,
    the identity taking the rest: 0 the identity alone (the network's reproduction of the photo), 1 the full
    style. Raises ``StylizeError`` naming the model's styles for an unknown name, a negative weight, a sum above
    1, or a strength the model cannot give.
    """
    names = ", ".join(model.styles) + (" (and the identity: --strength)" if model.identity else "")
    if strength is not None and not model.identity:
        raise StylizeError(
            f"--strength needs a model trained with the identity condition; this one has the styles {names} only"
        )
    if strength is not None and not 0.0 <= strength <= 1.0:
        raise StylizeError(f"--strength {strength:g} is out of range: it must be in [0, 1] (styles: {names})")
    weights = np.zeros(len(model.styles), dtype=np.float32)
    if style is None:
        if len(model.styles) != 1:
            raise StylizeError(
                f"this model has {len(model.styles)} styles: choose with --style NAME or a blend "
                f"NAME=W,NAME=W (styles: {names})"
            )
        weights[0] = 1.0
    else:
        parts = [part.strip() for part in style.split(",") if part.strip()]
        if not parts:
            raise StylizeError(f"--style {style!r} names no style (styles: {names})")
        for part in parts:
            name, separator, value = part.partition("=")
            name = name.strip()
            if name not in model.styles:
                raise StylizeError(f"--style: unknown style {name!r}; this model has: {names}")
            try:
                weight = float(value) if separator else 1.0
            except ValueError:
                raise StylizeError(f"--style: weight {value!r} of {name!r} is not a number (styles: {names})") from None
            if not np.isfinite(weight) or weight < 0:
                raise StylizeError(
                    f"--style: weight {value} of {name!r} must be a finite number >= 0 (styles: {names})"
                )
            weights[model.styles.index(name)] += weight
        total = float(weights.sum())
        if total > 1.0 + 1e-6:
            raise StylizeError(
                f"--style: weights sum to {total:g} > 1; give weights that sum to at most 1 (styles: {names})"
            )
        if total < 1.0 - 1e-6 and not model.identity:
            raise StylizeError(
                f"--style: weights sum to {total:g}; without the identity condition they must sum to 1 (styles: {names})"
            )
    if strength is not None:
        weights *= strength
    return weights if model.takes_weights else None
