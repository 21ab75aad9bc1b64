"""What ``polytask init`` proposes: tasks, data sources and the proposal holding them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: source formats read by a non-text encoder
_NOT_TEXT = ("tabular", "molecules")


@dataclass
class Task:
    name: str
    kind: str
    labels: list[str] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass
class Source:
    name: str
    format: str
    files: dict[str, Path]
    tasks: dict[str, Any]  # task -> field / column
    options: dict[str, Any] = field(default_factory=dict)
    chars: bool = False
    notes: list[str] = field(default_factory=list)
    option_notes: dict[str, str] = field(default_factory=dict)  # option -> its comment
    messages: list[str] = field(default_factory=list)  # said on stderr by `polytask init`


@dataclass
class Proposal:
    """What :func:`propose` read off the files."""

    sources: list[Source]
    tasks: dict[str, Task]

    @property
    def messages(self) -> list[str]:
        return [m for s in self.sources for m in s.messages]

    @property
    def input_kind(self) -> str:
        """What the encoder reads: ``text``, ``tabular`` or ``molecules``."""
        return self.sources[0].format if self.sources[0].format in _NOT_TEXT else "text"

    @property
    def token_level(self) -> bool:
        return any(t.kind in ("tagging", "token_classification") for t in self.tasks.values())
