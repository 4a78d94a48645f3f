"""The modality a channel name says: keywords with a separator match however the name spells it."""

from __future__ import annotations

import pytest

from autosam.planners.fingerprint import modality_of


@pytest.mark.parametrize(
    ("name", "modality"),
    [
        ("X-ray", "XR"),
        ("x_ray", "XR"),
        ("Chest X-Ray", "XR"),
        ("xray", "XR"),
        ("CT", "CT"),
        ("T1-w", "MR"),
        ("T2w", "MR"),
        ("flair", "MR"),
        ("Computed Tomography", "CT"),
        ("ultrasound", "US"),
        ("rgb_to_0_1", "RGB"),
        ("something", "unknown"),
    ],
)
def test_modality_of_channel_names(name: str, modality: str) -> None:
    assert modality_of(name) == modality
