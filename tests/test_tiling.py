"""Exact tiled inference (``nst_fast.export.tiles``, ``nst_fast.stylize.tiling``): tiles of the staged model give the
whole-image output, the norm statistics are the whole image's, memory follows the tile, and the CLI's flags."""

from __future__ import annotations

import gc
import io
import json
import shutil
import tracemalloc
import weakref
import zipfile
from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient
from image_factory import pattern
from PIL import Image

from nst_fast.conventions import TILE_NOISE_OFFSET, TILES_SUFFIX, tiles_name
from nst_fast.errors import StylizeError
from nst_fast.images import to_uint8
from nst_fast.serve.app import create_app
from nst_fast.serve.errors import RequestError
from nst_fast.serve.inference import inference_tiling
from nst_fast.serve.settings import ServeSettings
from nst_fast.stylize import OnnxModel, main, stylize_array
from nst_fast.stylize.tiling import NormStatistics, StagedModel, Tiling, _Run


def whole(model: OnnxModel, rgb: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The whole-image pass, rounded as ``save_image`` rounds."""
    return to_uint8(stylize_array(model, rgb[None], weights=weights)[0])


def level_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.abs(a.astype(int) - b.astype(int)).max())


@pytest.mark.parametrize("kind", ["onnx", "uint8"])
@pytest.mark.parametrize(("height", "width", "tile"), [(37, 51, 12), (64, 64, 16), (101, 77, 24), (23, 130, 12)])
def test_tiled_equals_whole_image(models, kind, height, width, tile) -> None:
    model = OnnxModel(models[kind])
    staged = model.staged()
    assert staged is not None and tile >= staged.halo
    rgb = pattern(height, width, seed=height)
    got = staged(rgb, None, Tiling("on", tile))
    assert got.dtype == np.uint8 and got.shape == (height, width, 3)
    assert level_diff(got, whole(model, rgb)) <= 1  # float rounding of the statistics, then to 8 bits


@pytest.mark.parametrize("kind", ["onnx", "uint8"])
@pytest.mark.parametrize("weights", [[1.0, 0.0, 0.0], [0.6, 0.4, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, 0.0]])
def test_styles_blends_and_strength_tile(multi_models, kind, weights) -> None:
    model = OnnxModel(multi_models[kind])
    rgb = pattern(45, 62, seed=3)
    vector = np.array(weights, dtype=np.float32)
    got = model.staged()(rgb, vector, Tiling("on", 16))
    assert level_diff(got, whole(model, rgb, vector)) <= 1


@pytest.fixture(scope="module")
def residual_models(tmp_path_factory) -> dict:
    """Two styles and the exact identity of ``model.residual_output`` (learnt photo gains), exported."""
    import torch
    from conftest import MULTI_STYLES, _exported
    from helpers import small_network

    from nst_fast.models.transformer import TransformerNet
    from nst_fast.module import pin_exact_identity

    network = TransformerNet(8, 1, num_conditions=3, residual_output=True)
    network.load_state_dict(small_network(4, num_conditions=3).state_dict(), strict=False)
    with torch.no_grad():
        network.photo_gain.copy_(torch.tensor([0.4, -0.3, 0.0]))
    pin_exact_identity(network, 2)
    return _exported(tmp_path_factory.mktemp("residual"), network.eval(), MULTI_STYLES[:2], identity=True)


@pytest.mark.parametrize("weights", [[1.0, 0.0], [0.3, 0.2], [0.0, 0.0]])
def test_residual_output_tiles_and_its_identity_is_the_photo(residual_models, weights) -> None:
    model = OnnxModel(residual_models["onnx"])
    rgb = pattern(45, 62, seed=6)
    vector = np.array(weights, dtype=np.float32)
    want = whole(model, rgb, vector)
    assert level_diff(model.staged()(rgb, vector, Tiling("on", 16)), want) <= 1
    if not any(weights):  # strength 0: the photo itself
        assert level_diff(want, rgb) <= 1


@pytest.fixture(scope="module")
def noise_models(tmp_path_factory) -> dict:
    """A network with ``model.input_noise`` and ``model.feature_noise`` (random weights and noise scales), exported."""
    import torch
    from conftest import STYLE, _exported
    from helpers import small_network

    from nst_fast.models.transformer import TransformerNet

    network = TransformerNet(8, 1, input_noise=0.2, feature_noise=True)
    network.load_state_dict(small_network(5).state_dict(), strict=False)
    with torch.no_grad():
        network.noise_scale_half.uniform_(-1, 1)
        network.noise_scale_full.uniform_(-1, 1)
    return _exported(tmp_path_factory.mktemp("noise"), network.eval(), STYLE)


@pytest.mark.slow  # an export of its own
@pytest.mark.parametrize("kind", ["onnx", "uint8"])
def test_input_noise_tiles_with_the_pattern_where_each_tile_lies(noise_models, kind) -> None:
    """Each tile adds the noise pattern the whole image has at its place (to the input, and to the features at half
    and full resolution), across the pattern's period (512 px)."""
    model = OnnxModel(noise_models[kind])
    rgb = pattern(610, 537, seed=8)
    want = whole(model, rgb)
    assert level_diff(model.staged()(rgb, None, Tiling("on", 200)), want) <= 1
    real_feeds = _Run.feeds

    def pattern_at_each_tiles_corner(run, inputs, region):
        feeds = real_feeds(run, inputs, region)
        if TILE_NOISE_OFFSET in feeds:
            feeds[TILE_NOISE_OFFSET] = np.zeros(2, dtype=np.int64)
        return feeds

    with pytest.MonkeyPatch.context() as patch:  # the control: tiles that all read the pattern from its corner
        patch.setattr(_Run, "feeds", pattern_at_each_tiles_corner)
        assert level_diff(model.staged()(rgb, None, Tiling("on", 200)), want) > 1


@pytest.mark.slow  # the noise network's export
@pytest.mark.parametrize("kind", ["onnx", "uint8"])
def test_the_noise_pattern_is_stored_once_in_the_tiles_file(noise_models, kind) -> None:
    """The pattern (3 MiB in float32) is one ``.npy`` entry of the zip, equal to the exported file's initializer; no
    pass file holds a copy, and exactly the passes that read it take it as an input."""
    exported = onnx.load(str(noise_models[kind]))
    want = next(onnx.numpy_helper.to_array(t) for t in exported.graph.initializer if t.name == "noise_pattern")
    with zipfile.ZipFile(noise_models[kind].with_name(tiles_name(noise_models[kind].name))) as archive:
        plan = json.loads(archive.read("plan.json"))
        assert plan["shared"] == {"noise_pattern": "noise_pattern.npy"}
        stored = np.load(io.BytesIO(archive.read("noise_pattern.npy")), allow_pickle=False)
        passes = [onnx.load_from_string(archive.read(step["file"])) for step in plan["passes"]]
    assert stored.dtype == want.dtype and np.array_equal(stored, want)
    assert not [t.name for model in passes for t in model.graph.initializer if t.name.endswith("noise_pattern")]
    readers = [any(node.input[:1] == ["noise_pattern"] for node in model.graph.node) for model in passes]
    assert any(readers) and not all(readers)
    assert readers == ["noise_pattern" in step["inputs"] for step in plan["passes"]]


@pytest.mark.slow  # the noise network's export
def test_a_noise_network_whose_pattern_is_not_found_is_not_staged(noise_models) -> None:
    from nst_fast.export.results import ExportError
    from nst_fast.export.tiles import stage_model

    model = onnx.load(str(noise_models["onnx"]))
    pattern = next(t for t in model.graph.initializer if t.name == "noise_pattern")
    for node in model.graph.node:
        node.input[:] = ["renamed" if name == "noise_pattern" else name for name in node.input]
    pattern.name = "renamed"
    with pytest.raises(ExportError, match="adds noise .* no initializer is named 'noise_pattern'"):
        stage_model(model)


def test_preserve_color_tiles(models) -> None:
    model = OnnxModel(models["onnx"])
    rgb = pattern(40, 52, seed=5)
    want = to_uint8(stylize_array(model, rgb[None], keep_color=True)[0])
    got = stylize_array(model, rgb[None], keep_color=True, tiling=Tiling("on", 16))[0]
    assert level_diff(got, want) <= 1


def test_statistics_are_the_whole_images(models, tmp_path) -> None:
    """Norm 0's statistics gathered over 16-pixel tiles equal NumPy's mean and variance of its input, computed by the
    exported graph on the whole (aligned) image at once."""
    staged = OnnxModel(models["onnx"]).staged()
    rgb = pattern(48, 60, seed=7)  # a multiple of 4: no alignment padding
    run = _Run(staged, rgb, None, Tiling("on", 16), False, rgb.shape[:2], tmp_path)
    run.run_pass(0)
    norm = staged.plan["norms"][0]
    x = (rgb.transpose(2, 0, 1)[None] / np.float32(255.0)).astype(np.float32)
    graph = onnx.load(str(models["onnx"]))
    graph.graph.output.append(onnx.ValueInfoProto(name=norm["input"]))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    full = session.run([norm["input"]], {"image": x})[0].astype(np.float64)
    np.testing.assert_allclose(run.stats[norm["mean"]], full.mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run.stats[norm["var"]], full.var(axis=(0, 2, 3)), rtol=1e-4)


def test_norm_statistics_by_hand() -> None:
    """Row sums of two tiles add up to the mean and biased variance of all the values."""
    rng = np.random.default_rng(0)
    values = rng.normal(3.0, 0.5, (3, 30, 41))
    statistics = NormStatistics(3)
    for rows in (slice(0, 7), slice(7, 30)):
        block = values[:, rows]
        statistics.add(block.sum(axis=2), np.square(block).sum(axis=2), block.shape[1] * block.shape[2])
    mean, var = statistics.mean_var()
    np.testing.assert_allclose(mean, values.mean(axis=(1, 2)), rtol=1e-12)
    np.testing.assert_allclose(var, values.var(axis=(1, 2)), rtol=1e-9)


@pytest.mark.parametrize("tile", [4, 8, 14])
def test_tiles_smaller_than_the_halo_or_unaligned_are_refused(models, tile) -> None:
    staged = OnnxModel(models["onnx"]).staged()
    assert staged.halo > 8
    with pytest.raises(StylizeError, match=rf"tile size {tile} .* multiple of 4 and at least the network's halo of "):
        staged(pattern(40, 40), None, Tiling("on", tile))


def test_the_plan_cuts_at_every_norm(models) -> None:
    staged = OnnxModel(models["onnx"]).staged()
    plan = staged.plan
    assert len(plan["passes"]) == len(plan["norms"]) + 1 == 8  # TransformerNet(8, 1): 3 + 2 + 2 norms, then output
    assert [step["norm"] for step in plan["passes"]] == [*range(7), None]
    assert all(step["outputs"][:2] == ["tile_sum", "tile_sum_squares"] for step in plan["passes"][:-1])
    stored = {name for step in plan["passes"][:-1] for name in step["outputs"][2:]}
    assert stored and all(plan["tensors"][name]["scale"] < 1 for name in stored)  # full resolution is recomputed
    assert plan["passes"][-1]["outputs"] == ["stylized"]


def test_memory_follows_the_tile_not_the_image(models) -> None:
    """NumPy's peak allocation while tiling grows with the image by the uint8 result (3 bytes per pixel) and the
    halo strips kept of the stored tensors (~9% of them with these 256-pixel tiles, ~2% at the default 1024), where
    the whole-image pass needs float32 copies in and out (24 bytes per pixel); ONNX Runtime's own buffers are the
    tile's (bench/tiling.py measures the process's peak)."""
    model = OnnxModel(models["onnx"])
    staged = model.staged()
    staged(pattern(20, 20), None, Tiling("on", 256))  # the pass sessions are made on first use

    def peak(side: int, tiled: bool) -> int:
        rgb = pattern(side, side)
        tracemalloc.start()
        if tiled:
            staged(rgb, None, Tiling("on", 256))
        else:
            stylize_array(model, rgb[None])
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    added_pixels = 768**2 - 256**2
    tiled, whole = ((peak(768, t) - peak(256, t)) / added_pixels for t in (True, False))
    assert tiled < 12 and whole > 20 and whole > 2 * tiled, (tiled, whole)


def test_auto_tiles_above_the_threshold_only() -> None:
    tiling = Tiling("auto", 64, above_pixels=1000)
    assert tiling.wanted(40, 26) and not tiling.wanted(10, 100)
    assert Tiling("on").wanted(5, 5) and not Tiling("off").wanted(10**5, 10**5)
    with pytest.raises(StylizeError, match="tiling mode 'sometimes' is unknown"):
        Tiling("sometimes")


# --- nst-stylize --------------------------------------------------------------------------------------------------


def run(args: list, capsys) -> tuple[int, str]:
    status = main([str(a) for a in args] + ["--quiet"])
    return status, capsys.readouterr().err


def test_cli_tile_on_matches_off(models, tmp_path, capsys) -> None:
    Image.fromarray(pattern(61, 83)).save(tmp_path / "in.png")
    for mode in ("on", "off"):
        args = ["--model", models["onnx"], tmp_path / "in.png", "-o", tmp_path / f"{mode}.png", "--tile", mode]
        status, err = run([*args, *(["--tile-size", "16"] if mode == "on" else [])], capsys)
        assert status == 0, err
    on, off = (np.asarray(Image.open(tmp_path / f"{mode}.png")) for mode in ("on", "off"))
    assert level_diff(on, off) <= 1


def test_cli_tile_size_below_the_halo_is_a_usage_error(models, tmp_path, capsys) -> None:
    Image.fromarray(pattern(30, 30)).save(tmp_path / "in.png")
    status, err = run(
        ["--model", models["onnx"], tmp_path / "in.png", "-o", tmp_path / "o.png", "--tile-size", "4"], capsys
    )
    assert status == 2 and "tile size 4 is unusable" in err and "--tile-size 12 or more" in err, err
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("kind", ["torchscript", "bare_onnx"])
def test_cli_tile_on_without_tiles_is_a_usage_error(models, tmp_path, capsys, kind) -> None:
    model = models["torchscript"] if kind == "torchscript" else shutil.copy(models["onnx"], tmp_path / "bare.onnx")
    assert not Path(model).with_name(tiles_name(Path(model).name)).exists()
    Image.fromarray(pattern(30, 30)).save(tmp_path / "in.png")
    status, err = run(["--model", model, tmp_path / "in.png", "-o", tmp_path / "o.png", "--tile", "on"], capsys)
    assert status == 2 and "cannot tile" in err, err
    expected = "export the model again" if kind == "bare_onnx" else "only exported ONNX models"
    assert expected in err, err


def test_cli_auto_without_tiles_warns_once_and_runs_whole(models, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("nst_fast.stylize.cli.Tiling", lambda mode, size: Tiling(mode, size, above_pixels=100))
    bare = Path(shutil.copy(models["onnx"], tmp_path / "bare.onnx"))
    for name in ("a", "b"):
        Image.fromarray(pattern(20, 24)).save(tmp_path / f"{name}.png")
    status, err = run(["--model", bare, tmp_path / "a.png", tmp_path / "b.png", "-o", tmp_path / "out"], capsys)
    assert status == 0, err
    assert err.count("goes through whole") == 1 and "cannot tile" in err, err


def test_export_writes_tiles_beside_each_onnx_file(models) -> None:
    for kind in ("onnx", "uint8"):
        assert models[kind].with_name(tiles_name(models[kind].name)).is_file()
    assert tiles_name("a+b.int8.onnx") == "a+b.int8" + TILES_SUFFIX


def test_a_damaged_tiles_file_is_a_clear_error(models, tmp_path) -> None:
    onnx_copy = Path(shutil.copy(models["onnx"], tmp_path / "m.onnx"))
    (tmp_path / tiles_name("m.onnx")).write_bytes(b"not a zip")
    with pytest.raises(StylizeError, match=r"m\.tiles\.zip: not a readable tiles file"):
        OnnxModel(onnx_copy)


@pytest.mark.slow  # the noise network's export
def test_tiles_files_of_the_first_format_still_tile(noise_models, tmp_path) -> None:
    """Format 1 (before shared tensors: each pass that reads the noise pattern holds its own copy) tiles as the
    current format does."""
    source = noise_models["onnx"].with_name(tiles_name(noise_models["onnx"].name))
    first = tmp_path / "first.tiles.zip"
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(first, "w") as copy:
        plan = json.loads(archive.read("plan.json"))
        shared = {name: np.load(io.BytesIO(archive.read(file))) for name, file in plan.pop("shared").items()}
        for step in plan["passes"]:
            model = onnx.load_from_string(archive.read(step["file"]))
            for name in [name for name in shared if name in step["inputs"]]:
                step["inputs"].remove(name)
                inputs = [value for value in model.graph.input if value.name != name]
                del model.graph.input[:]
                model.graph.input.extend(inputs)
                model.graph.initializer.append(onnx.numpy_helper.from_array(shared[name], name))
            copy.writestr(step["file"], model.SerializeToString())
        copy.writestr("plan.json", json.dumps({**plan, "format": "1"}))
    assert shared, "the noise network's tiles file shares its pattern"
    rgb = pattern(90, 130, seed=3)
    want = StagedModel(source, _cpu_session)(rgb, None, Tiling("on", 48))
    assert level_diff(StagedModel(first, _cpu_session)(rgb, None, Tiling("on", 48)), want) == 0


def test_a_tiles_format_this_version_does_not_know_is_refused(models, tmp_path) -> None:
    source = models["onnx"].with_name(tiles_name(models["onnx"].name))
    later = tmp_path / "later.tiles.zip"
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(later, "w") as copy:
        for entry in archive.namelist():
            data = archive.read(entry)
            copy.writestr(entry, json.dumps({**json.loads(data), "format": "9"}) if entry == "plan.json" else data)
    with pytest.raises(StylizeError, match=r"tiles format '9'; this version reads 1, 2: update nst-fast, or export"):
        StagedModel(later, _cpu_session)


def _cpu_session(blob: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(blob, providers=["CPUExecutionProvider"])


def test_pass_sessions_are_made_on_first_use(models) -> None:
    made = []
    staged = StagedModel(
        models["onnx"].with_name(tiles_name(models["onnx"].name)),
        lambda blob: made.append(1) or ort.InferenceSession(blob, providers=["CPUExecutionProvider"]),
    )
    assert made == [] and staged.halo >= 4
    staged(pattern(20, 20), None, Tiling("on", staged.halo))
    assert len(made) == len(staged.plan["passes"])


def test_a_model_and_its_sessions_go_when_it_is_dropped(models) -> None:
    """No reference cycle keeps a model: its ONNX Runtime sessions go with it, not at some later garbage collection
    (one collected in a forked DataLoader worker waited forever on its thread pool: CI, 2026-12-07)."""
    model = OnnxModel(models["onnx"])
    model(pattern(20, 20)[None], None)  # whole image
    model.staged()(pattern(20, 20), None, Tiling("on", model.staged().halo))  # and tiled: the pass sessions exist
    sessions = [weakref.ref(session) for session in [model.session, *model.staged().sessions]]
    gc.disable()
    try:
        del model
        assert [session() for session in sessions] == [None] * len(sessions), "a reference cycle holds the model"
    finally:
        gc.enable()


# --- nst-serve --------------------------------------------------------------------------------------------------


def served(model: Path, settings: ServeSettings, rgb: np.ndarray) -> httpx.Response:
    with TestClient(create_app([model], settings)) as client:
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="PNG")
        files = {"image": ("photo.png", buffer.getvalue(), "image/png")}
        return client.post("/v1/stylize", files=files, data={"format": "png"})


def test_serve_tiles_photos_over_its_memory_budget(models) -> None:
    """4 MiB per inference: a 120x140 photo (6.7 MiB whole at 420 bytes per pixel) goes in 20-pixel tiles (45 with
    their halos at 2000 bytes per pixel), with the whole-image result at full size."""
    rgb = pattern(120, 140, seed=11)
    assert inference_tiling(OnnxModel(models["onnx"]), 120, 140, 4, "p") == Tiling("on", 20)
    assert inference_tiling(OnnxModel(models["onnx"]), 90, 100, 4, "p") is None
    with pytest.raises(RequestError, match="1 MiB per inference is too little to tile this model"):
        inference_tiling(OnnxModel(models["onnx"]), 120, 140, 1, "p")
    response = served(models["onnx"], ServeSettings(max_inference_mb=4), rgb)
    assert response.status_code == 200, response.text
    out = np.asarray(Image.open(io.BytesIO(response.content)))
    assert level_diff(out, whole(OnnxModel(models["onnx"]), rgb)) <= 1


def test_serve_refuses_what_an_untileable_model_cannot_fit(models, tmp_path) -> None:
    bare = Path(shutil.copy(models["onnx"], tmp_path / "bare.onnx"))
    response = served(bare, ServeSettings(max_inference_mb=1), pattern(80, 96))
    assert response.status_code == 413
    detail = response.json()["detail"] if "detail" in response.json() else response.text
    assert "96x80 needs about 3 MiB to stylise whole" in str(detail) and "cannot tile" in str(detail), detail
