"""User-facing errors and how the command line turns any exception into one readable line.

:class:`SegattnError` is raised for bad input that is nobody's bug: a file that cannot be read or
written, an unavailable device, a checkpoint that does not fit. Its message names the file, key or
value at fault and what was expected. The CLI prints every failure as one line,
``segattn <cmd>: error: <message>`` (exit code 2); :func:`error_message` builds that line from any
exception, so errors raised by libraries (``OSError`` with a file name, a bare ``KeyError``, a
multi-line message, an error re-raised from a DataLoader worker) read as one sentence too.
"""

from __future__ import annotations

import re
from typing import Optional

MAX_MESSAGE = 600

# exception types whose message is written for the user; anything else gets its type name as prefix
_USER_TYPES = (ValueError, TypeError, KeyError, OSError, ImportError, NotImplementedError)


class SegattnError(Exception):
    """Bad input or an unusable environment, with a message that names what is wrong and what was expected."""


class ArgumentError(SegattnError, ValueError, TypeError):
    """A wrong argument of a public function or constructor: its message names the argument, the value
    and what is accepted. It is also a ``ValueError`` and a ``TypeError``, so code that catches either
    keeps working."""


class NonFiniteInputWarning(UserWarning):
    """An input holds NaN or inf values: the output is computed but not meaningful (see
    :func:`segattn.checks.warn_non_finite`)."""


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` with every run of whitespace (newlines included) turned into one space, at most ``limit`` chars."""
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _worker_message(text: str) -> str:
    """The original error of a message re-raised from a DataLoader worker (its traceback dropped)."""
    if "Original Traceback" not in text:
        return text
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    last = lines[-1] if lines else text
    return re.sub(r"^[\w.]*(Error|Exception)\w*: ", "", last)


# torch's zip writer reports a failed write (a full disk) in its own words, hiding the OSError if any
_TORCH_WRITE_FAILED = re.compile(r"PytorchStreamWriter failed writing|inline_container\.cc.*unexpected pos")


def os_error_in(exc: Optional[BaseException]) -> Optional[OSError]:
    """The first ``OSError`` in ``exc`` and the exceptions it was raised from or during (``torch.save``
    into a file object reports a failed write as a ``RuntimeError`` raised while handling it)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def error_message(exc: BaseException) -> str:
    """One line describing ``exc`` for the user (see the module docstring)."""
    if isinstance(exc, RuntimeError) and _TORCH_WRITE_FAILED.search(str(exc)):
        cause = os_error_in(exc)
        reason = (cause.strerror or str(cause)) if cause is not None else "is the disk full?"
        return one_line(f"a PyTorch file could not be written ({reason}): {exc}")
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        text = exc.args[0]
        if not re.search(r"\s", text):  # a bare key name is not a message
            text = f"missing key {text!r}"
    elif isinstance(exc, KeyError) and exc.args:
        text = f"missing key {exc.args[0]!r}"
    elif isinstance(exc, OSError) and exc.filename is not None:
        reason = exc.strerror or type(exc).__name__
        text = f"{exc.filename}: {reason}"
        if exc.filename2 is not None:
            text += f" (-> {exc.filename2})"
    else:
        text = _worker_message(str(exc))
    text = one_line(text) or type(exc).__name__
    if not isinstance(exc, (SegattnError,) + _USER_TYPES):
        text = f"{type(exc).__name__}: {text} (SEGATTN_DEBUG=1 shows the traceback)"
    return text


__all__ = ["ArgumentError", "NonFiniteInputWarning", "SegattnError", "error_message", "one_line", "os_error_in"]
