"""The planner's rules as data: each says whose evidence it is, and the study's part names its source."""

from __future__ import annotations

import re

from autosam.planners.rules import RULES


def test_rules_tag_autosam_wherever_it_adds_to_the_study() -> None:
    for rule_id in ("R2", "R4", "R13"):
        assert RULES[rule_id].source == "autosam", rule_id
    assert "does not rank LoRA above adapters" in RULES["R2"].study
    assert "small impact" in RULES["R4"].study and "1,000" in RULES["R4"].autosam
    assert "1e-3" in RULES["R13"].study and "1e-4" in RULES["R13"].autosam
    for rule in RULES.values():
        assert rule.study, rule.id  # what the study found, or that it gives no number
        if rule.source == "study":
            assert re.search(r"\(finding [1-4]\)|finetune-SAM|README", rule.study), rule.id
        elif rule.source == "maintainer":
            assert "issue #" in rule.study, rule.id
