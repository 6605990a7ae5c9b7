"""`Choice`: a string enum read from user text, as flags and JSON name precisions and methods.

Parsing is case-insensitive and an unknown value is one line that names every valid choice,
so each enum (precisions, calibration methods) refuses bad input the same way.
"""

from __future__ import annotations

from enum import Enum

from elan_deploy.errors import ElanDeployError


class Choice(str, Enum):
    """Subclasses name what they are (`noun`) for the error line."""

    @classmethod
    def noun(cls) -> str:
        return cls.__name__.lower()

    @classmethod
    def parse(cls, value: str | Choice) -> Choice:
        try:
            return cls(str(value.value if isinstance(value, cls) else value).lower())
        except ValueError:
            names = ", ".join(member.value for member in cls)
            raise ElanDeployError(f"unknown {cls.noun()} '{value}'; choose one of {names}") from None
