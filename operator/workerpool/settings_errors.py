"""Turning a pydantic-settings ValidationError into one line that names the
environment variable, with its value unless the value may be secret (a Redis
URL may carry a password)."""

from __future__ import annotations

from collections.abc import Collection

from pydantic import ValidationError


def describe(exc: ValidationError, prefix: str = "", secret: Collection[str] = ()) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        names = [str(part) for part in error["loc"] if isinstance(part, str)]
        name = names[0].upper() if names else ""
        variable = name if not name or name.startswith(prefix) else prefix + name  # aliases carry it already
        message = error["msg"].removeprefix("Value error, ")
        if not variable:
            problems.append(message)
        elif names[0] in secret or "input" not in error:
            problems.append(f"{variable}: {message}")
        else:
            problems.append(f"{variable}={error['input']!r}: {message}")
    return "; ".join(problems)
