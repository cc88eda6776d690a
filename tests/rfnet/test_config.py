import json

import pytest

from rfnet.config import ModelConfig, get_preset, light_config, paper_config


def test_paper_preset_matches_paper_defaults() -> None:
    cfg = paper_config()
    assert cfg.input.size == 512
    assert cfg.mask_head.pooling == "fusion" and cfg.mask_head.mask_size == 56
    assert (cfg.loss.focal_lambda, cfg.loss.focal_alpha, cfg.loss.focal_gamma) == (0.3, 1.0, 3.0)
    assert cfg.roi_heads.batch_size_per_image == 200 and cfg.roi_heads.positive_fraction == 0.25
    assert cfg.rpn.post_nms_top_n_test == 1000 and cfg.roi_heads.detections_per_img == 10
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.lr_step_epochs) == (100, 4, 0.01, 30)


@pytest.mark.parametrize("name", ["paper", "mid", "light"])
def test_config_json_round_trip(name: str) -> None:
    cfg = get_preset(name)
    again = ModelConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg


def test_light_is_lighter() -> None:
    p, l = paper_config(), light_config()
    assert l.backbone.width_mult < p.backbone.width_mult and l.fpn.out_channels < p.fpn.out_channels


def test_unknown_preset_and_keys_are_named() -> None:
    with pytest.raises(ValueError, match="known presets"):
        get_preset("nope")
    with pytest.raises(ValueError, match=r"config\.fpn: unknown keys \['bogus'\]"):
        ModelConfig.from_dict({"fpn": {"bogus": 1}})


def test_mid_preset_carries_its_calibrated_disc_score_into_the_model_metadata() -> None:
    """The mid preset's min disc score (cross-validated, docs/lab/results-log.md) reaches rfnet.min_disc_score
    through a checkpoint's config JSON, unlike the provisional default of the other presets."""
    from rfnet.metadata import metadata_from_config
    from rfnet.config import DEFAULT_MIN_DISC_SCORE, MID_MIN_DISC_SCORE, ModelConfig

    cfg = ModelConfig.from_dict(json.loads(get_preset("mid").to_json()))  # as a checkpoint stores and restores it
    assert metadata_from_config(cfg, precision="fp32").min_disc_score == MID_MIN_DISC_SCORE != DEFAULT_MIN_DISC_SCORE
    assert get_preset("light").grading.min_disc_score == DEFAULT_MIN_DISC_SCORE


def test_screen_preset_carries_its_verdict_and_referral_into_the_model_metadata() -> None:
    """The screen preset's calibrated limits, referral and crop margin (docs/results.md) survive a
    checkpoint's config JSON and reach the model's rfnet.* metadata as values the verdict accepts."""
    from rfnet.metadata import metadata_from_config
    from rfnet.common.gradability import GradingLimits
    from rfnet.config import (SCREEN_CROP_MARGIN, SCREEN_GRADING_LIMITS, SCREEN_MIN_DISC_SCORE,
                              SCREEN_REFERRAL_VCDR, ModelConfig)

    meta = metadata_from_config(ModelConfig.from_dict(json.loads(get_preset("screen").to_json())), precision="fp32")
    assert (meta.min_disc_score, meta.referral_vcdr) == (SCREEN_MIN_DISC_SCORE, SCREEN_REFERRAL_VCDR)
    assert meta.crop_margin == SCREEN_CROP_MARGIN > 1.0 and get_preset("mid").input.crop_margin == 1.0
    assert GradingLimits.from_mapping(meta.grading_limits) == GradingLimits.from_mapping(SCREEN_GRADING_LIMITS)
    assert GradingLimits.from_mapping(SCREEN_GRADING_LIMITS).max_disc_field_ratio < 0.5


def test_mid_preset_is_the_cross_validated_recipe() -> None:
    """The mid preset is the recipe whose 5-fold cross-validation docs/lab/results-log.md reports: the
    image-only polar U-Net branch at 128 x 128 trained on jittered ground-truth disc boxes, a
    64-channel FPN, float32 training (the folds trained in float32), 1500 AdamW iterations on
    512 px crops of 768 px."""
    from rfnet.config import mid_config

    cfg = mid_config()
    m, t = cfg.mask_head, cfg.train
    assert (m.branch, m.mask_size, m.unet_pyramid, m.train_rois, m.box_scale) == ("unet", 128, False, "jittered_gt", 1.2)
    assert (m.unet_polar, cfg.fpn.out_channels) == (True, 64)
    assert (t.iterations, t.optimizer, t.lr, t.bf16, t.crop_size) == (1500, "adamw", 1e-3, False, 512)
    assert cfg.input.size == 768


def test_a_removed_option_loads_when_off_and_is_refused_when_used() -> None:
    """Options cross-validation rejected are gone from the config; a stored config that has one at
    its "off" value (every preset's checkpoints) loads, one that used it is refused with the option
    and the last commit that had it."""
    from rfnet.errors import UsageError

    stored = get_preset("mid").to_dict()
    stored["mask_head"]["unet_polar_wrap"] = 0
    stored["train"]["soft_targets"] = False
    assert ModelConfig.from_dict(stored).to_dict() == get_preset("mid").to_dict()
    stored["mask_head"]["unet_polar_wrap"] = 16
    with pytest.raises(UsageError, match=r"config\.mask_head\.unet_polar_wrap = 16: this option was removed.*cd70f7e"):
        ModelConfig.from_dict(stored)
