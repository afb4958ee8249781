"""The detector registry: built-in families register themselves, specs are checked, imports stay light."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import pytest

from dfsearch import config, models
from dfsearch.errors import ConfigError
from dfsearch.models.registry import TEST_VIEWS, Clip, DetectorSpec, register


def test_builtin_families_register_with_their_facts():
    assert {"resnet3d", "timesformer", "xception", "meso4", "mesoinception4"} <= set(models.names())
    r3d, ts, xc = models.get("resnet3d"), models.get("timesformer"), models.get("xception")
    assert (r3d.test_view, ts.test_view, xc.test_view) == ("trunks", "middle_clip_3crops", "frames")
    assert (r3d.clip.clip_len, r3d.clip.crop_size) == (16, 112) and (ts.clip.clip_len, ts.clip.frame_stride) == (8, 32)
    assert set(r3d.weights) == {"kinetics400", "kinetics700"} and "kinetics400" in ts.weights
    arch = config.from_flat({"model.depth": 18}).model.arch
    assert r3d.weights["kinetics400"].filename(arch) == "resnet-18-kinetics.pth"
    assert all(spec.test_view in TEST_VIEWS for spec in models.registry.specs())


@dataclass
class _Cfg:
    depth: str = "x"  # resnet3d's model.depth is an int: one key, one type


def test_bad_specs_are_refused():
    build = lambda cfg, sd=None: None  # noqa: E731
    with pytest.raises(ConfigError, match="test_view 'clips' is not one of"):
        register(DetectorSpec("bad_view", _Cfg, build, Clip(1, 1, 8), "clips"))
    with pytest.raises(ConfigError, match="model.depth is .*str.* but .*int.* in 'resnet3d'"):
        register(DetectorSpec("bad_type", _Cfg, build, Clip(1, 1, 8), "frames"))
    with pytest.raises(ConfigError, match="already registered by dfsearch.models.resnet3d"):
        register(DetectorSpec("resnet3d", _Cfg, build, Clip(1, 1, 8), "frames"))
    assert "bad_view" not in models.names() and "bad_type" not in models.names()


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, **env})


def test_parsing_a_config_imports_no_heavy_library():
    # Family modules import only torch at top level; timm comes in when a model is built.
    out = run_python(
        "import sys, json; from dfsearch import config; config.from_flat({'model.name': 'timesformer'});"
        "print(json.dumps([m for m in ('timm', 'torchvision', 'cv2', 'av', 'mlflow') if m in sys.modules]))"
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_detector_module_from_the_environment_must_import():
    out = run_python("from dfsearch import config; config.from_flat({})", DFSEARCH_DETECTORS="no_such_detector_module")
    assert out.returncode != 0 and "$DFSEARCH_DETECTORS: cannot import detector module 'no_such_detector_module'" in out.stderr


MY_DETECTOR = '''
"""A detector of one file: what a user writes (README: a detector of your own)."""
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dfsearch.models.registry import AttentionMaps, Clip, Cost, DetectorSpec, register


@dataclass
class TinyConfig:
    tiny_width: int = 4


class Tiny(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.conv = nn.Conv3d(3, width, 3, padding=1)
        self.head = nn.Linear(width, 2)

    def forward(self, x):
        return self.head(self.conv(x).mean(dim=(2, 3, 4)))


def maps(model, x):
    with torch.no_grad():
        prob = float(torch.softmax(model(x), 1)[0, 1])
        act = model.conv(x)[0].abs().mean(0)  # (T, H, W)
    return [("activation", act.numpy())], prob


register(DetectorSpec(name="tiny_plain", config=TinyConfig, build=lambda cfg, sd=None: Tiny(cfg.model.arch.tiny_width),
                      clip=Clip(2, 1, 32), test_view="frames"))
register(DetectorSpec(
    name="tiny_full", config=TinyConfig, build=lambda cfg, sd=None: Tiny(cfg.model.arch.tiny_width),
    clip=Clip(4, 1, 32), test_view="middle_clip_3crops",
    display_name=lambda flat: f"tiny-w{flat.get('model.tiny_width', 4)}",
    cost=Cost(gflops=lambda flat: 0.5 * flat.get("model.tiny_width", 4), frames=4, side=32, tflops=10.0),
    smoke={"model.tiny_width": 2, "data.clip_len": 2, "data.crop_size": 16, "train.epochs": 1},
    attention_maps=AttentionMaps(maps, title="mean activation", suffix="act"),
))
'''


def test_a_detector_from_a_file_of_its_own_gets_every_family_fact(tmp_path):
    """Registered from $DFSEARCH_DETECTORS, a family with no facts gets the defaults (its name as run name, the
    default frame-model estimate, the per-frame smoke budget, no maps) and one with facts gets its own."""
    (tmp_path / "my_detector.py").write_text(MY_DETECTOR)
    code = f"""
import json, sys, torch
from dfsearch import config, estimate, sweeps
from dfsearch.inference import attention as explain
from dfsearch.models import registry
from dfsearch.inference import Detector
from dfsearch.tracking.run_view import run_name
out = {{}}
for name in ("tiny_plain", "tiny_full"):
    flat = config.to_flat(config.from_flat({{"model.name": name, "protocol.name": "single:FaceSwap"}}))
    smoke = sweeps.smoke_flat({{"model.name": name, "model.pretrained": "imagenet"}})
    cfg = config.from_flat({{**smoke, "data.clip_len": 4, "data.crop_size": 32}})
    model = registry.get(name).build(cfg, None).eval()
    det = Detector(cfg, model, {{}}, "test", torch.device("cpu"))
    clip = torch.randint(0, 256, (1, 3, 4, 32, 32), dtype=torch.uint8)
    pngs = explain.explain_clip(det, clip, {str(tmp_path)!r}, name)
    out[name] = dict(run_name=run_name(flat), gpu_h=estimate.gpu_hours(flat), clip_gflops=estimate.clip_gflops(flat),
                     eval_gflops=estimate.eval_gflops(flat), smoke=smoke, pngs=[p.name for p in pngs])
print(json.dumps(out))
"""
    import os

    env = {"DFSEARCH_DETECTORS": "my_detector", "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    res = run_python(code, **env)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    from dfsearch.models import registry

    plain, full = got["tiny_plain"], got["tiny_full"]
    assert plain["run_name"] == "tiny_plain · single:FaceSwap · seed 0"
    assert plain["clip_gflops"] == pytest.approx(10.0 * 2 * 32**2 / 224**2)  # Cost(): 10 GFLOPs a 224² frame; its clip 2 x 32²
    assert plain["eval_gflops"] == pytest.approx(plain["clip_gflops"] * 500 / 2)  # test_view frames: every frame
    assert plain["gpu_h"] > 0
    assert all(plain["smoke"][k] == v for k, v in registry.SMOKE_FRAME.items()) and plain["smoke"]["model.pretrained"] == "none"
    assert plain["pngs"] == []
    assert full["run_name"] == "tiny-w4 · single:FaceSwap · seed 0"
    assert full["clip_gflops"] == pytest.approx(2.0)  # 0.5 x width 4 at its own 4 x 32²
    assert full["eval_gflops"] == pytest.approx(6.0)  # middle clip, 3 crops
    assert full["gpu_h"] == pytest.approx((10 * 2 * 720 * 3 * 2.0 + (10 * 2 * 140 + 2 * 140) * 6.0) * 1e9 / 10e12 / 3600)
    assert full["smoke"]["model.tiny_width"] == 2 and full["smoke"]["train.epochs"] == 1 and full["smoke"]["data.crop_size"] == 16
    assert full["pngs"] == ["tiny_full.act.png"]
