"""The planner's choices: monotonic in memory, the rules and whose evidence each is, a reason for every field."""

from __future__ import annotations

import pytest
import torch

from autosam.data.image_digests import dataset_digests
from autosam.errors import AutosamError
from autosam.experiments.demo import DEMO_DATA
from autosam.planners.choose import backbone_order, choose, evaluate, family_for
from autosam.planners.explain import RULE_TAG, plan_summary, plan_text
from autosam.planners.fingerprint import DatasetFacts, modality_of, pretrained_present
from autosam.planners.hardware import Hardware
from autosam.planners.rules import RULES, set_by_user
from autosam.planners.sam_planner import SamOptions, sam_sized
from autosam.planners.step_cost import forward_gflops
from autosam.plans import SamPlan
from autosam.sam.costs import meta_network
from autosam.sam.frozen import store_frozen_weights
from autosam.sam.memory import estimate_training_memory, measured_training_peak, saved_activation_bytes
from autosam.sam.model import build_network
from autosam.sam.setups import Setup, all_setups
from autosam.sam.weights.catalogue import RANDOM_START, CatalogueEntry, register_user_checkpoint
from autosam.sam.weights.lineage import ancestry, check_lineage
from tests.conftest import case_ids, copy_subset
from tests.test_data_image_digests import renamed_nifti_copy

SIZE_ORDER = ["vit_t", "vit_b", "vit_h"]


def _facts(slices: int = 2000, shape=(512, 512), modality: str = "CT", checkpoints=(),
           pretrained: dict | None = None, cases: int | None = None) -> DatasetFacts:
    return DatasetFacts(
        dataset="Dataset999_Test", num_cases=cases or slices, num_slices=slices, num_foreground_slices=slices,
        is_3d=False, median_slice_shape=list(shape), median_spacing=[999.0, 1.0, 1.0], channels={"0": modality},
        modalities=[modality_of(modality)], labels={"background": 0, "organ": 1},
        median_foreground_fraction={"organ": 0.1}, tiny_targets=[], unlabelled_images=0,
        checkpoints_present=list(checkpoints), pretrained_checkpoints=pretrained or {})


def _gpu(gb: float) -> Hardware:
    return Hardware("cuda", gb, f"a GPU with {gb} GB")


def _choose(facts: DatasetFacts, hardware: Hardware, **options):
    return choose(facts, hardware, 2, 1, (512, 512), SamOptions(**options))


def test_more_memory_never_gives_a_smaller_backbone_or_image() -> None:
    previous = None
    for gb in (2, 3, 4, 6, 8, 12, 16, 24, 40, 80):
        choice = _choose(_facts(), _gpu(gb))
        current = (SIZE_ORDER.index(choice.setup.backbone), choice.image_size)
        if previous is not None:
            assert current[0] >= previous[0] and current[1] >= previous[1], (gb, choice.setup.name)
        previous = current
    assert choice.setup.name == "vit_h_encdec_lora"  # large data, 80 GB: autosam's R2 and R4


def test_plan_text_shows_whose_evidence_each_reason_is() -> None:
    facts = _facts()
    choice = _choose(facts, _gpu(80))
    plan = SamPlan(choice.setup, choice.image_size, "imagenet", None, choice.learning_rate,
                   num_epochs=choice.num_epochs, predicted_memory_gb=choice.predicted_memory_gb,
                   reasons=choice.reasons, candidates=[c.to_dict() for c in choice.candidates])
    text = plan_text(plan_summary(plan, choice.batch_size, facts.to_dict()), explain=True)
    assert "R2 (autosam): adapter or LoRA on encoder and decoder beats vanilla tuning (finding 2)" in text
    assert "autosam's own: LoRA before Adapter" in text
    assert "R4 (autosam): the architecture has a small impact on performance (finding 3)" in text
    assert "R13 (autosam): finetune-SAM's defaults are AdamW, learning rate 1e-3" in text
    assert "R1 (study): parameter-efficient tuning" in text
    assert "R2 (autosam): lora is preferred to adapter" in text  # --explain's candidate table
    assert not any("R3" in c.why_not for c in choice.candidates)  # ViT-H won by R4, not by R3's ViT-B default
    # without --explain: each reason on one line, its own words and its rules' tags
    why = plan_text(plan_summary(plan, choice.batch_size, facts.to_dict()), explain=False).split("why:\n")[1]
    reasons = [line for line in why.splitlines() if line.startswith("  ")]
    assert all(len(line) <= 200 for line in reasons) and any(len(line) > 300 for line in text.splitlines())
    assert not any(line.split(": ", 1)[1].startswith("[") for line in reasons), reasons
    assert "[R11 autosam]" in why
    chosen = next(line for line in text.splitlines() if line.rstrip().endswith("chosen"))
    assert f"{choice.predicted_memory_gb:.2f} GB" in chosen and f"its batch {choice.batch_size}" in text


def test_decoder_only_when_no_encoder_update_fits() -> None:
    shape = {"num_classes": 2, "channels": 1, "patch": (512, 512), "native_patches": False}
    smallest = lambda scope: min(evaluate(s, 256, shape, _gpu(0.01)).predicted_memory_gb
                                 for s in all_setups() if s.scope == scope)
    dec, encdec = smallest("dec"), smallest("encdec")  # encoder updates with gradient checkpointing
    assert dec < encdec
    choice = _choose(_facts(shape=(256, 256)), _gpu((dec + encdec) / 2 / 0.9))
    assert choice.setup.scope == "dec" and choice.image_size == 256
    assert any("only the mask decoder trains" in w for w in choice.warnings)


def test_nothing_fits_names_the_smallest_budget() -> None:
    with pytest.raises(AutosamError, match=r"needs about .* GB \(give --gpu-memory \d+ or more\)"):
        _choose(_facts(), _gpu(0.5))


def test_a_fixed_setup_below_its_encoders_smallest_input_is_refused_in_one_line() -> None:
    with pytest.raises(AutosamError, match=r"--setup vit_t_encdec_lora needs --image-size 256 or more .* not 128"):
        _choose(_facts(), Hardware("cpu", 24, "CPU"), setup="vit_t_encdec_lora", image_size=128)


def test_small_dataset_never_gets_vanilla_encoder_updates() -> None:
    for gb in (8, 80):
        choice = _choose(_facts(slices=20), _gpu(gb))
        assert not (choice.setup.method == "vanilla" and choice.setup.trains_encoder)
        vanilla = [c for c in choice.candidates if c.setup.name.endswith("encdec_vanilla")]
        assert all("R7" in c.why_not for c in vanilla if c.fits)


def test_mr_with_ssl_weights_starts_from_them_and_cpu_picks_vit_t() -> None:
    mr = _choose(_facts(modality="FLAIR", checkpoints=["ssl_mri_vit_b"]), _gpu(24))  # large data, yet ViT-B
    assert (mr.setup.backbone, mr.base_checkpoint) == ("vit_b", "ssl_mri_vit_b")
    assert _choose(_facts(slices=200, modality="T2"), _gpu(24)).base_checkpoint == "sam_vit_b"
    assert _choose(_facts(slices=200, modality="CT", checkpoints=["ssl_mri_vit_b"]), _gpu(24)).base_checkpoint == "sam_vit_b"
    cpu = _choose(_facts(), Hardware("cpu", 24, "CPU"))
    assert cpu.setup.backbone == "vit_t" and cpu.image_size == 256


def test_from_scratch_trains_every_weight() -> None:
    choice = _choose(_facts(slices=20), Hardware("cpu", 24, "CPU"), from_scratch=True)
    assert choice.setup.name == "vit_t_encdec_vanilla" and choice.base_checkpoint is None
    assert "R18" in choice.reasons["setup"]


def test_user_overrides_are_recorded() -> None:
    choice = _choose(_facts(), _gpu(24), setup="vit_t_encdec_adapter", image_size=384, batch_size=3)
    assert (choice.setup.name, choice.image_size, choice.batch_size) == ("vit_t_encdec_adapter", 384, 3)
    assert {"setup", "image_size", "batch_size"} <= set(choice.overridden)
    assert "set by the user" in choice.reasons["setup"]


def test_activations_are_affine_in_batch() -> None:
    for name in ("test_vit_encdec_lora", "test_tiny_vit_encdec_vanilla", "vit_t_dec_adapter", "test_hiera_encdec_lora"):
        size = 256 if name.startswith("vit_t") else 64
        network = meta_network(Setup.parse(name), size, 3)
        two, three, five = (saved_activation_bytes(network, b, size, 1, with_loss=True) for b in (2, 3, 5))
        assert five == two + 3 * (three - two)  # from batch 2 on (memory.py probes at 2 and 3)


@pytest.mark.parametrize("setup", all_setups(("test_vit", "test_tiny_vit", "test_hiera")), ids=lambda s: s.name)
def test_estimate_matches_a_real_cpu_training_step(setup: Setup) -> None:
    network = build_network(setup, 128, 3, 1)
    measured = measured_training_peak(network, 2, (128, 128))
    predicted = estimate_training_memory(setup, 128, 2, 3, 1, device="cpu").peak
    assert 0.85 <= predicted / measured <= 1.15, (predicted, measured)


@pytest.mark.parametrize("name", [f"{b}_{s}_lora" for b in ("test_vit", "test_tiny_vit", "test_hiera")
                                  for s in ("dec", "encdec")])
def test_estimate_matches_a_real_cpu_training_step_under_bf16_autocast(name: str) -> None:
    """As the trainer runs on a CPU with native bf16: autocast, frozen weights stored in bf16."""
    setup = Setup.parse(name)
    network = build_network(setup, 128, 3, 1)
    network.compute_dtype = torch.bfloat16
    store_frozen_weights(network, torch.bfloat16)
    measured = measured_training_peak(network, 2, (128, 128))
    predicted = estimate_training_memory(setup, 128, 2, 3, 1, device="cpu", precision="bf16").peak
    assert 0.85 <= predicted / measured <= 1.15, (predicted, measured)


@pytest.mark.parametrize("patch, size, spacing, expected_patch", [
    ([448, 512], 256, [1.75, 2.0], [256, 256]),  # both axes larger: each coarsened by its own factor
    ([192, 512], 256, [1.0, 2.0], [192, 256]),  # an axis already smaller keeps its spacing (SAM enlarges it)
])
def test_sam_sized_patches_move_the_resize_into_preprocessing(patch, size, spacing, expected_patch) -> None:
    two_d = {"patch_size": patch, "spacing": [1.0, 1.0], "median_image_size_in_voxels": [460, 560]}
    layout, reason = sam_sized(two_d, size)
    assert layout["spacing"] == pytest.approx(spacing) and layout["patch_size"] == expected_patch
    assert layout["data_identifier"] == f"autosamPlans_2d_sam_{size}px" and "field of view" in reason
    # the field of view is the 2d patch's: patch x spacing, axis by axis
    assert [p * s for p, s in zip(layout["patch_size"], layout["spacing"])] == pytest.approx(patch)
    fits, reason = sam_sized({**two_d, "patch_size": [200, 240]}, 256)
    assert fits == {} and "used as they are" in reason  # 2d's data and patch


def test_the_planner_counts_no_encoder_per_iteration_for_cached_decoder_only_setups() -> None:
    def planned(**options):
        choice = choose(_facts(), Hardware("cuda", 80, "a GPU with 80 GB"), 2, 1, (512, 512),
                        SamOptions(setup="vit_b_dec_lora", image_size=256, **options))
        return choice, choice.candidates[0].step_gflops

    cached, with_cache = planned()
    normal, without = planned(embedding_cache=False)
    encoder, decoder = forward_gflops("vit_b", cached.image_size, 2)
    assert with_cache == pytest.approx(2 * decoder, abs=1e-3)  # forward + input gradients, no encoder
    assert without == pytest.approx(encoder + 2 * decoder, abs=1e-3) and encoder > 50 * decoder
    assert "GFLOPs once per slice" in cached.reasons["embedding_cache"] and "embedding_cache" not in cached.overridden
    assert "--no-embedding-cache" in normal.reasons["embedding_cache"] and "embedding_cache" in normal.overridden


def test_planner_names_the_few_shot_regime_by_case_count() -> None:
    # the memory probes test_planner makes too (cached): the shapes of its 2000-slice CT set on an 80 GB GPU
    gpu = Hardware("cuda", 80, "a GPU with 80 GB")
    few = choose(_facts(3000, cases=30), gpu, 2, 1, (512, 512), SamOptions())
    assert "R20 (autosam)" in few.reasons["few_shot"] and "--train-cases 1 2 5 10 20" in few.reasons["few_shot"]
    vanilla = [c for c in few.candidates if c.setup.trains_whole_encoder]
    assert vanilla and all(c.why_not.startswith("R20 (autosam): 30 labelled cases < 50") for c in vanilla)
    many = choose(_facts(3000, cases=60), gpu, 2, 1, (512, 512), SamOptions())
    assert "few_shot" not in many.reasons
    assert not any(c.excluded for c in many.candidates if c.setup.trains_whole_encoder)


def test_planner_starts_from_the_checkpoint_pretrained_on_the_dataset_modality() -> None:
    pretrained = {"mr_t": {"backbone": "vit_t", "modality": "MR"}, "ct_b": {"backbone": "vit_b", "modality": "CT"}}
    # on a GPU ViT-B is the default backbone (R3): the MR checkpoint's ViT-T comes first instead
    mr = choose(_facts(300, modality="MR", pretrained=pretrained), Hardware("cuda", 24, "a GPU"), 2, 1, (512, 512),
                SamOptions())
    assert (mr.setup.backbone, mr.base_checkpoint) == ("vit_t", "mr_t") and "R19" in mr.reasons["base_checkpoint"]
    cpu = Hardware("cpu", 24, "CPU")  # ViT-T on a CPU (R5): no checkpoint of this modality for it
    ct = choose(_facts(300, modality="CT", pretrained=pretrained), cpu, 2, 1, (512, 512), SamOptions())
    assert ct.base_checkpoint == "mobile_sam"
    us = {"us_t": {"backbone": "vit_t", "modality": "US"}}
    assert choose(_facts(300, modality="US", pretrained=us), cpu, 2, 1, (512, 512), SamOptions()).base_checkpoint == "us_t"
    # pretrained from random weights: never preferred to SAM's own (--checkpoint still names it)
    scratch = {"us_t": {"backbone": "vit_t", "modality": "US", "started_from": RANDOM_START}}
    scratch_start = choose(_facts(300, modality="US", pretrained=scratch), cpu, 2, 1, (512, 512), SamOptions())
    assert scratch_start.base_checkpoint == "mobile_sam"


def test_a_checkpoint_given_decides_the_backbone() -> None:
    cpu = Hardware("cpu", 24, "CPU")  # where the planner picks vit_t (test_mr_with_ssl_weights_..._cpu_picks_vit_t)
    choice = _choose(_facts(), cpu, checkpoint="medsam_vit_b")
    assert choice.setup.backbone == "vit_b"
    assert "the backbone of --checkpoint medsam_vit_b" in choice.reasons["setup"]
    assert {c.setup.backbone for c in choice.candidates} == {"vit_b"}


def test_planner_never_starts_from_a_checkpoint_whose_lineage_saw_the_dataset(tmp_path) -> None:
    """R19 starts from an ultrasound ViT-T checkpoint on a CPU (above), but not from one whose training images include
    the dataset's (found by pixel content in a renamed, re-encoded copy), nor from one that started from it."""
    source = copy_subset(DEMO_DATA, tmp_path / "raw", case_ids(DEMO_DATA)[:3], "Dataset992_Busi")
    target = renamed_nifti_copy(source, tmp_path / "raw", "Dataset995_Renamed")
    folder = tmp_path / "weights"
    folder.mkdir()
    seen = {"Dataset992_Busi": sorted(d for ds in dataset_digests(source).values() for d in ds)}
    for name, start, images in (("us_seen", "mobile_sam", seen), ("us_child", "us_seen", {"elsewhere": ["0" * 64]}),
                                ("us_clean", "mobile_sam", {"elsewhere": ["0" * 64]})):
        (folder / f"{name}.pth").write_bytes(name.encode())
        ancestors = ancestry(folder / "us_seen.pth", None) if start == "us_seen" else ()  # what pretrain records
        register_user_checkpoint(CatalogueEntry(name, f"{name}.pth", "vit_t", None, None, "test", "imagenet", "US",
                                                start, tuple(images), True, images, ancestors), folder)
    present = pretrained_present(str(folder), lambda: dataset_digests(target))
    assert "3 of the dataset's 3 images" in present["us_seen"]["seen"] and "with labels" in present["us_seen"]["seen"]
    assert "via us_seen" in present["us_child"]["seen"] and present["us_clean"]["seen"] == ""
    cpu = Hardware("cpu", 24, "CPU")
    leaked = {k: v for k, v in present.items() if k != "us_clean"}
    choice = choose(_facts(300, modality="US", pretrained=leaked), cpu, 2, 1, (512, 512), SamOptions())
    assert choice.base_checkpoint == "mobile_sam"
    assert [w.split(" ")[0] for w in choice.warnings if "is not used as the base (R19" in w] == ["us_child", "us_seen"]
    clean = choose(_facts(300, modality="US", pretrained=present), cpu, 2, 1, (512, 512), SamOptions())
    assert clean.base_checkpoint == "us_clean"
    given = choose(_facts(300, modality="US", pretrained=present), cpu, 2, 1, (512, 512), SamOptions(checkpoint="us_seen"))
    assert given.base_checkpoint == "us_seen" and any(w.startswith("--checkpoint us_seen: 3 of") for w in given.warnings)
    # a checkpoint whose images were not recorded (an older catalogue) is never chosen either
    old = CatalogueEntry("old", "old.pth", "vit_t", None, None, "test", "imagenet", "US", "mobile_sam")
    assert check_lineage(old, "old", {}).refused and "not recorded" in check_lineage(old, "old", {}).problem()


def test_every_reason_the_planner_writes_names_a_rule_and_its_tag() -> None:
    # the choices of the tests above (their memory probes are cached), and sam_sized's two cases; the reasons the
    # planner adds itself (--prompts, --native-patches) are checked in tests/test_experiments_run_plan.py
    cpu = Hardware("cpu", 24, "CPU")
    choices = [_choose(_facts(), _gpu(80)), _choose(_facts(slices=20), cpu, from_scratch=True),
               _choose(_facts(modality="FLAIR", checkpoints=["ssl_mri_vit_b"]), _gpu(24)),
               _choose(_facts(slices=20), _gpu(8)),
               _choose(_facts(), _gpu(24), setup="vit_t_encdec_adapter", image_size=384, batch_size=3,
                       num_epochs=2, iterations_per_epoch=5, checkpoint="mobile_sam", embedding_cache=False)]
    reasons = [(f, r) for c in choices for f, r in c.reasons.items()]
    reasons += [("patch_size", sam_sized({"patch_size": p, "spacing": [1.0, 1.0],
                                          "median_image_size_in_voxels": p}, 256)[1]) for p in ([128, 128], [512, 512])]
    assert {"few_shot", "embedding_cache", "precision", "lora_rank", "predicted_memory_gb"} <= {f for f, _ in reasons}
    assert_every_reason_tagged({f"{field} ({i})": reason for i, (field, reason) in enumerate(reasons)})


def assert_every_reason_tagged(reasons: dict[str, str]) -> None:
    """Each reason cites at least one rule of rules.json with its tag."""
    for field, reason in reasons.items():
        tags = RULE_TAG.findall(reason)
        assert tags and all(rule in RULES for rule, _ in tags), (field, reason)


def test_an_impossible_memory_budget_is_refused_before_the_candidates_are_probed() -> None:
    from autosam.sam.memory import _probe

    before = _probe.cache_info().misses
    with pytest.raises(AutosamError, match=r"vit_t's weights alone and the CUDA context need .* the lightest set-up, "
                                           r"vit_t_dec_lora at 256 px .* \(give --gpu-memory [1-9] or more\)"):
        choose(_facts(), _gpu(0.5), 5, 1, (512, 512), SamOptions())  # 5 classes: probes no other test made
    assert _probe.cache_info().misses - before <= 2  # one set-up (with and without checkpointing), not 18 per size


def test_sam2_is_planned_where_rule_r28_says_and_explained_where_not() -> None:
    """SAM 2.1 when its weights are the only official ones present (its sizes following SAM's rules), or asked
    for; SAM otherwise, with the reason naming the rule that would choose SAM 2.1."""
    only_sam2 = _facts(slices=300, checkpoints=("sam2.1_hiera_base_plus",))
    assert family_for(only_sam2, SamOptions(), None)[0] == "sam2"
    assert family_for(only_sam2, SamOptions(from_scratch=True), None)[0] == "sam"
    assert family_for(only_sam2, SamOptions(setup="vit_t_dec_lora"), None)[0] == "sam"
    family, reason = family_for(_facts(checkpoints=("sam2.1_hiera_base_plus", "sam_vit_b")), SamOptions(), None)
    assert family == "sam" and "SAM, the study's family" in reason and "no study has compared SAM 2.1 with SAM" in reason
    assert family_for(_facts(), SamOptions(family="sam2"), None) == ("sam2", set_by_user("--family sam2"))
    assert backbone_order(_facts(slices=300), _gpu(40), False, family="sam2")[0] == "sam2_bplus"
    assert backbone_order(_facts(slices=2000), _gpu(80), False, family="sam2")[0] == "sam2_l"
    assert backbone_order(_facts(), Hardware("cpu", 16, "this CPU"), False, family="sam2")[0] == "sam2_t"

    # the whole planner: 18 SAM 2.1 candidates; with only Hiera-T's weights present, Hiera-T first (its weights)
    choice = _choose(_facts(slices=300, checkpoints=("sam2.1_hiera_tiny",)), _gpu(40))
    assert choice.setup.name == "sam2_t_encdec_lora" and "R28" in choice.reasons["family"]
    assert choice.reasons["base_checkpoint"].startswith("the official sam2_t weights")
    assert {c.setup.backbone for c in choice.candidates} == {"sam2_t", "sam2_bplus", "sam2_l"}
