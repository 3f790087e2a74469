"""CropSettings (types, validation, defaults said once) and the detector record."""

from __future__ import annotations

import pytest

from stn_face.data.detect import MTCNNDetector
from stn_face.data.prepare import CropSettings, PrepareError, detector_record, register_config


def test_settings_convert_their_types_and_refuse_bad_values():
    settings = CropSettings(size="96", margin=1, fallback_size=80.0, max_pixels=0, downscale_large=1)
    assert (settings.size, settings.margin, settings.fallback_size, settings.max_pixels) == (96, 1.0, 80, None)
    assert type(settings.margin) is float and settings.downscale_large is True
    assert CropSettings(margin=1) == CropSettings(margin=1.0)
    for bad, message in [({"mode": "align"}, "mode=crop or mode=landmarks"), ({"size": "big"}, "must be a number"),
                         ({"mode": "landmarks", "size": 100}, "multiple of 112"), ({"margin": 0}, "positive"),
                         ({"border": "wrap"}, "border=constant"), ({"fallback_fraction": 1.5}, r"\(0, 1\]"),
                         ({"face_selection": "first"}, "largest, central, score"), ({"jpeg_quality": 0}, "1..100")]:
        with pytest.raises(PrepareError, match=message):
            CropSettings(**bad)
    assert "max_pixels" not in CropSettings().recorded() and CropSettings().recorded()["size"] == 128


def test_split_takes_the_crop_settings_out_of_a_data_configs_crop_block():
    settings, rest = CropSettings.split({"mode": "crop", "size": 144, "margin": 1.3, "exclude_identities": "x.txt"})
    assert settings == CropSettings(size=144) and rest == {"exclude_identities": "x.txt"}
    assert CropSettings.split(None) == (CropSettings(), {})


def test_the_prepare_config_takes_its_crop_keys_and_defaults_from_the_dataclass():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from stn_face.config import CONF_DIR

    register_config()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="prepare", overrides=["input=a", "output=b", "mode=landmarks", "size=112"])
    from omegaconf import OmegaConf

    settings, rest = CropSettings.split(OmegaConf.to_container(cfg, resolve=True))
    assert settings == CropSettings(mode="landmarks", size=112)
    assert {"input", "output", "workers", "device", "photos_per_batch", "detector", "files"} <= set(rest)
    with open(f"{CONF_DIR}/prepare.yaml", encoding="utf-8") as handle:  # said once: not repeated there
        assert not any(line.startswith(("mode:", "size:", "margin:")) for line in handle)


class DescribedDetector(MTCNNDetector):
    def describe(self) -> dict:
        return {**super().describe(), "weights": "other weights", "runtime": {"device": "elsewhere"}}


def test_the_detector_record():
    plain = detector_record(None, None)
    # the config's explicit defaults record the same as None; where it runs is not recorded
    assert detector_record({"min_face_size": 20, "thresholds": (0.6, 0.7, 0.7), "device": "cuda"}) == plain
    assert plain["min_face_size"] == 20 and plain["thresholds"] == [0.6, 0.7, 0.7] and "device" not in plain
    described = detector_record(None, DescribedDetector())
    assert described["describe"]["weights"] == "other weights" and "runtime" not in described["describe"]
    assert {k: v for k, v in described.items() if k != "describe"} == plain
    assert described != detector_record(None, MTCNNDetector())  # other weights: another record
    assert detector_record(MTCNNDetector) == {"factory": "MTCNNDetector"}
