"""Exceptions for mistakes a user can fix. Entry points print their message on one line and exit non-zero,
without a traceback; anything else is a bug and keeps its traceback."""

import sys
from collections.abc import Callable

#: Exit statuses of ``train.py``, ``export.py`` and ``nst-stylize``, one meaning each (README, "Exit status").
#: 0: done. 128 + N: stopped by signal N (130 Ctrl-C, 143 SIGTERM).
EXIT_FAILED = 1  # the work ran and failed: an export that did not verify, inputs not stylised, a crash (traceback)
EXIT_USAGE = 2  # nothing was done: a mistake in the command line or config, or a named input that is unusable
EXIT_NONFINITE = 3  # training stopped because the loss was NaN/inf too many steps in a row (checkpoints kept)


def run_hydra_entry_point(main: Callable[[], None]) -> None:
    """Call a ``@hydra.main`` function. Hydra exits with status 1 when it cannot parse the overrides or compose
    the config (unknown key, wrong type, missing option): that is a usage error, so the status becomes 2."""
    try:
        main()
    except SystemExit as done:
        from hydra.errors import ConfigCompositionException, OverrideParseException

        if done.code == 1 and isinstance(done.__context__, (ConfigCompositionException, OverrideParseException)):
            sys.exit(EXIT_USAGE)
        raise


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line reports."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class NstFastError(Exception):
    """A mistake the user can fix: the message says what was wrong, with the value, and what to do."""


class ConfigError(NstFastError, ValueError):
    """A configuration value out of range or inconsistent; the message names the key."""


class MissingFileError(NstFastError, FileNotFoundError):
    """A file the user named does not exist."""


class OfflineError(NstFastError, RuntimeError):
    """Something had to be downloaded and could not be."""


class NonFiniteLossError(NstFastError, FloatingPointError):
    """Training produced NaN/inf losses too many steps in a row."""


class StylizeError(NstFastError):
    """An expected inference failure (bad model, input, style choice or output): its message is printed on one
    line by ``nst-stylize`` and answered as a 4xx error by ``nst-serve``."""
