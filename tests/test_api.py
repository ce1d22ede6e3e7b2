"""The Python API (``import mote``): the commands as functions, a loaded run, a store reader.

Real runs, stores and videos; the settings checks use the real config dataclasses.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import json
import pydoc
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest
from helpers import random_store

import mote
from mote.pipeline.config import option_fields
from mote.pipeline.errors import ConfigError
from mote.settings import config_for
from mote.stages import evaluate, predict
from mote.stages.demo import tiny_clip_on
from mote.stages.extract import ExtractConfig
from mote.stages.fewshot import FewShotConfig
from mote.stages.predict import PredictConfig

HAS_XARRAY = importlib.util.find_spec("xarray") is not None


def test_import_mote_loads_no_torch_and_the_packages_stay_where_they_were():
    code = (
        "import sys, json, mote\n"
        "light = not {'torch', 'zarr'} & set(sys.modules)\n"
        "import mote.stages.cli, mote.pipeline.config, mote.cache_schema.v1\n"
        "print(json.dumps([light, mote.__version__, sorted(mote.__all__)]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    light, version, names = json.loads(done.stdout)
    assert light and version == mote.__version__
    assert {"extract", "train_temporal", "load_run", "open_store", "predict", "evaluate"} <= set(
        names
    )


def test_an_unknown_setting_is_an_error_listing_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError) as error:
        mote.extract(dataset="list", out=tmp_path / "s.zarr", list=tmp_path / "l.txt")
    message = str(error.value)
    assert message.startswith("mote.extract(): unknown setting(s) list. Valid: ")
    assert "list_file" in message and "decode_workers" in message and "\n" not in message
    with pytest.raises(ConfigError, match=r"missing required setting\(s\): out"):
        mote.train_temporal(train=tmp_path / "t.zarr")
    with pytest.raises(ConfigError, match="option 'lr' must be float, got 'fast'"):
        mote.train_temporal(train=tmp_path / "t.zarr", out=tmp_path / "run", lr="fast")


def test_every_function_shows_its_options_as_keyword_only_parameters_and_in_its_help():
    """``help(mote.extract)`` lists each option with its --help text, and the signature holds
    each as a keyword-only parameter with its default and type: both from the config class."""
    from mote.settings import setting_owners
    from mote.stages.options import nested_configs

    for name in mote.commands.STAGES:
        function = getattr(mote, name)
        config = mote.commands.STAGES[name]().config
        params = inspect.signature(function).parameters
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values()), name
        fields = {f.name: f for f in option_fields(config)}
        one_line = " ".join(line.strip() for line in function.__doc__.splitlines())
        for _, inner, fixed in nested_configs(config):
            fields.update((f.name, f) for f in option_fields(inner) if f.name not in fixed)
        aliases = set(setting_owners(config)) - set(fields)  # old names: accepted, not listed
        assert set(params) - {"progress"} == set(fields) and not aliases & set(params), name
        hints = {**typing.get_type_hints(config)}
        for _, inner, _ in nested_configs(config):
            hints = {**typing.get_type_hints(inner), **hints}
        for key, f in fields.items():
            assert params[key].annotation == hints[key], (name, key)
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if not required and f.default_factory is dataclasses.MISSING:
                assert params[key].default == f.default, (name, key)
            assert (params[key].default is inspect.Parameter.empty) == required, (name, key)
            assert f" {key}: {f.metadata['help']}" in one_line, (name, key)
    shown = pydoc.render_doc(mote.extract, renderer=pydoc.plaintext)
    assert "extract(*, dataset: str, out: pathlib.Path, root:" in shown
    assert "decode_workers: Decode processes; 0 decodes in this process. [default: one" in shown
    assert "progress: Show progress while it runs" in shown
    assert "dataset: k400, k600, ucf101, hmdb51, ssv2, list, or folder (a class per" in shown
    # a run's methods too: their own parameters, then the command's other options
    search = inspect.signature(mote.TrainedRun.search).parameters
    assert list(search)[:4] == ["self", "queries", "embeddings", "k"]
    assert "like" in search and search["like"].kind is inspect.Parameter.KEYWORD_ONLY
    assert not {"run", "top_k", "device"} & set(search)
    assert "top_k:" in mote.predict.__doc__ and "    top_k:" in mote.TrainedRun.predict.__doc__


def test_progress_true_shows_plain_lines_off_a_terminal(motion_data, tmp_path, capsys):
    tiny = tiny_clip_on(motion_data, motion_data.list_file)
    store = tmp_path / "s.zarr"
    settings = dict(out=store, limit=3, devices="cpu", decode_workers=0, frames=2)
    mote.extract(**tiny, **settings, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("extract list/custom: 0/3 videos (0%)"), lines
    assert lines[-1].startswith("extract list/custom: 3/3 videos (100%)"), lines
    mote.extract(**tiny, **settings, overwrite=True)  # the default: nothing shown
    assert capsys.readouterr().err == ""
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) progres\. Valid: .*progress"):
        mote.extract(**tiny, **settings, progres=True)
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) progress\. Valid: "):
        mote.evaluate(run=tmp_path, store=store, progress=True)  # it reports none


def test_settings_are_the_cli_options_with_python_values():
    cfg = config_for(
        PredictConfig, "p", {"run": "runs/a", "videos": ["a.mp4", Path("b")], "top_k": 3}
    )
    assert cfg.run == Path("runs/a") and cfg.videos == (Path("a.mp4"), Path("b"))
    assert cfg.top_k == 3 and cfg.tfm is True
    assert config_for(PredictConfig, "p", {"run": "r", "videos": Path("one.mp4")}).videos == (
        Path("one.mp4"),
    )
    extract = config_for(ExtractConfig, "e", {"dataset": "list", "out": "s", "device": "cpu"})
    assert extract.devices == "cpu"  # the old name of --devices
    few = config_for(
        FewShotConfig, "f", {"train": "t", "test": "s", "out": "o", "shots": "2,4", "lr": 0.01}
    )
    assert few.shots == (2, 4) and few.training.lr == 0.01  # a train-temporal setting, nested
    with pytest.raises(ConfigError, match="unknown setting"):
        config_for(FewShotConfig, "f", {"train": "t", "test": "s", "out": "o", "val": "v"})


def test_load_run_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(ConfigError, match=f"{tmp_path}: not a run folder"):
        mote.load_run(tmp_path)


def test_a_loaded_run_predicts_and_evaluates_as_the_commands_do(
    imported_run, motion_data, tmp_path
):
    path = imported_run[0]
    store = tmp_path / "run.zarr"
    tiny = tiny_clip_on(motion_data, motion_data.list_file)
    mote.extract(**tiny, out=store, run=path, limit=3, devices="cpu", decode_workers=0)
    run = mote.load_run(path, device="cpu")
    assert run.path == path and run.config.source == "import-reference"
    expected = evaluate.run(evaluate.EvaluateConfig(run=path, store=store, device="cpu"))
    assert run.evaluate(store) == expected
    # the listed videos, not a glob: other tests' session fixtures add broken files beside them
    listed = motion_data.list_file.read_text().splitlines()
    videos = sorted(motion_data.root / line.rsplit(" ", 1)[0] for line in listed)[:2]
    names = ["circle moving left", "square moving up", "something else"]
    got = run.predict(videos, classes=names, decode_workers=0, top_k=2)
    cfg = predict.PredictConfig(
        run=path, videos=tuple(videos), classes=",".join(names), device="cpu", decode_workers=0,
        top_k=2,
    )  # fmt: skip
    assert got == predict.run(cfg)["videos"]
    assert [v["video"] for v in got] == [str(v) for v in videos] and len(got[0]["top"]) == 2
    with pytest.raises(ConfigError, match="drop run="):
        run.evaluate(store, run=path)


@pytest.fixture
def store(tmp_path):
    ids = [f"v{i}.mp4" for i in range(20)]
    return random_store(tmp_path / "r.zarr", ids, [i % 3 for i in range(20)], ("a", "b", "c"))


def test_to_xarray_names_the_package_to_install(store, monkeypatch):
    monkeypatch.setitem(sys.modules, "xarray", None)  # as if not installed: import fails
    with pytest.raises(ModuleNotFoundError, match="needs the xarray package: pip install xarray"):
        mote.open_store(store.path).to_xarray()


@pytest.mark.skipif(not HAS_XARRAY, reason="xarray is not installed (pip install 'mote[xarray]')")
def test_to_xarray_labels_every_dimension(store):  # mote[test] brings mote[xarray]
    opened = mote.open_store(store.path)
    data = opened.to_xarray()
    assert dict(data.sizes) == {"video": 20, "view": 1, "frame": 8, "dim": 64, "class": 3}
    assert list(data.video.values[:2]) == ["v0.mp4", "v1.mp4"]
    assert list(data["class"].values) == ["a", "b", "c"] and data.attrs["model"] == "mote-tiny"
    assert set(data.status.values) == {"done"}
    _, embeddings, labels = opened.read_done()
    np.testing.assert_array_equal(data.embeddings.sel(video="v17.mp4").values, embeddings[17])
    np.testing.assert_array_equal(data.labels.values, labels)
