"""nnU-Net's post-processing choice is read without running code from it."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from nnunetv2.postprocessing.remove_connected_components import remove_all_but_largest_component_from_segmentation

from autosam.errors import CheckpointError
from autosam.sam.weights.safe_load import load_postprocessing
from tests.conftest import PickledPayload


def test_postprocessing_files_may_only_name_nnunets_own_functions(tmp_path: Path) -> None:
    genuine = tmp_path / "postprocessing.pkl"
    genuine.write_bytes(pickle.dumps(([remove_all_but_largest_component_from_segmentation], [{"labels_or_regions": 1}])))
    assert load_postprocessing(genuine)[1] == [{"labels_or_regions": 1}]
    marker = tmp_path / "code_ran"
    planted = tmp_path / "planted.pkl"
    planted.write_bytes(pickle.dumps(([PickledPayload(marker)], [{}])))
    with pytest.raises(CheckpointError, match="not a post-processing file written by nnU-Net"):
        load_postprocessing(planted)
    assert not marker.exists()
    pickle.loads(planted.read_bytes())  # the positive control: an ordinary unpickler runs it
    assert marker.exists()
