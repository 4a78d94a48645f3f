"""The planner's rules as data (``rules.json``): what each decides, what the study found, and what autosam adds.

``study`` states what the study (Gu et al., MELBA 2025: its abstract's four findings, its README, or the
finetune-SAM code) found or did, or that it gives no number; ``autosam`` states the threshold or engineering
choice autosam adds on top. A rule's ``source`` is its weakest part: "autosam" as soon as autosam adds
anything, else "study", or "maintainer" where the evidence is the study's authors on its issue tracker, or
"user" for a field a flag fixed (R27). Every reason the planner writes names at least one rule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class Rule:
    id: str
    condition: str
    choice: str
    study: str
    autosam: str = ""
    study_source: str = "study"  # "maintainer": an author's comment on finetune-SAM's issue tracker; "user": a flag

    @property
    def source(self) -> str:
        return "autosam" if self.autosam else self.study_source

    @property
    def label(self) -> str:
        return f"{self.id} ({self.source})"

    @property
    def evidence(self) -> str:
        return f"{self.study}; autosam's own: {self.autosam}" if self.autosam else self.study


# The rows themselves live in rules.json beside this file: data, read once.
RULES: dict[str, Rule] = {
    row["id"]: Rule(**row) for row in json.loads((resources.files("autosam.planners") / "rules.json").read_text())
}


def cite(*ids: str) -> str:
    return "; ".join(f"{RULES[i].label}: {RULES[i].evidence}" for i in ids)


def set_by_user(flag: str) -> str:
    """The reason of a field a flag fixed (R27)."""
    return f"set by the user: {flag} ({RULES['R27'].label})"
