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
