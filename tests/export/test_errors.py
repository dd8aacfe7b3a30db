"""What export refuses, and how it says so: wrong graphs, crashing checks, bad checkpoints and options, one-line errors
and the exit statuses of ``export.py``."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import onnx
import pytest
import torch
from export_support import (
    STYLE,
    run_cli,
    save_checkpoint,
)
from helpers import small_network

from nst_fast.checkpoint import checkpoint_metadata
from nst_fast.config import compose
from nst_fast.export import ExportError, export_checkpoint
from nst_fast.export import run as run_export
from nst_fast.export.triton import TritonOptions
from nst_fast.models import TransformerNet


def test_wrong_graph_is_refused_by_the_parity_check(tmp_path, monkeypatch) -> None:
    """A graph that runs but computes something else (another network's weights) is refused at the default tolerance."""
    import nst_fast.export.pipeline as export_module

    real_export = export_module.export_onnx
    monkeypatch.setattr(export_module, "export_onnx", lambda network, *a, **k: real_export(small_network(1), *a, **k))
    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", small_network(0))
    out_dir = tmp_path / "new" / "export"
    refused = r"starry.onnx: verification failed: max \|diff\| to the eager network .* > tolerance 0.001"
    with pytest.raises(ExportError, match=refused):
        export_checkpoint(ckpt, out_dir, torchscript=False, log=lambda _: None)
    assert not (tmp_path / "new").exists()  # neither the out_dir nor the parent it had to create
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoints"]


@pytest.fixture(scope="module")
def written_onnx(tmp_path_factory) -> Path:
    """The float32 ONNX file of ``small_network()``'s checkpoint, exported once for the tests that make a later step
    crash (the export itself is what the other tests check)."""
    folder = tmp_path_factory.mktemp("written")
    ckpt = save_checkpoint(folder / "checkpoints" / "last.ckpt", small_network())
    return export_checkpoint(ckpt, torchscript=False, tiles=False, log=lambda _: None).file("onnx")


@pytest.fixture
def copied_export(monkeypatch, written_onnx) -> None:
    """The export step writes ``small_network()``'s float32 ONNX file by copying ``written_onnx`` (the same file it
    would write for that checkpoint), for tests about what happens after it."""
    import nst_fast.export.pipeline as export_module

    monkeypatch.setattr(
        export_module, "export_onnx", lambda network, path, *a, **k: shutil.copyfile(written_onnx, path)
    )


def _raise(error: BaseException):
    def raiser(*args, **kwargs):
        raise error

    return raiser


@pytest.mark.parametrize(
    "target, error, message",
    [
        (
            "onnx.checker.check_model",
            onnx.checker.ValidationError("Nodes in a graph must be topologically sorted"),
            "starry.onnx: verification crashed (ValidationError: Nodes in a graph must be topologically sorted)",
        ),
        (
            "nst_fast.export.verify.ort_session",
            RuntimeError("[ONNXRuntimeError] : 10 : INVALID_GRAPH : bad\nmore"),
            "starry.onnx: verification crashed (RuntimeError: [ONNXRuntimeError] : 10 : INVALID_GRAPH : bad)",
        ),
        (
            "nst_fast.export.verify.ort_session",
            OSError(24, "Too many open files"),
            "starry.onnx: verification crashed (OSError: [Errno 24] Too many open files)",
        ),
        (
            "torch.jit.load",
            RuntimeError("PytorchStreamReader failed reading zip archive"),
            "starry.torchscript.pt: verification crashed (RuntimeError: PytorchStreamReader failed reading zip archive)",
        ),
    ],
    ids=["onnx-checker", "onnxruntime", "oserror-in-check", "jit-load"],
)
def test_crashing_verification_is_a_one_line_error(
    tmp_path, monkeypatch, copied_export, target, error, message
) -> None:
    monkeypatch.setattr(target, _raise(error))  # after the (copied) ONNX file is written
    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", small_network())
    with pytest.raises(ExportError) as info:  # TorchScript only where its check is the one that crashes
        export_checkpoint(ckpt, tmp_path / "out", torchscript=target == "torch.jit.load", log=lambda _: None)
    assert str(info.value) == message
    assert "cannot write" not in str(info.value)
    assert not (tmp_path / "out").exists()


def _corrupt(path: Path) -> Path:
    path.write_bytes(b"PK\x03\x04 this is not really a zip file" * 10)
    return path


def _not_ours(path: Path) -> Path:
    torch.save({"state_dict": TransformerNet(8, 1).state_dict(), "global_step": 3}, path)
    return path


def _wrong_architecture(path: Path) -> Path:
    network = TransformerNet(8, 1)
    checkpoint = {
        "state_dict": {f"transformer.{k}": v for k, v in network.state_dict().items()},
        "global_step": 1,
        "nst_fast": checkpoint_metadata(TransformerNet(16, 2), STYLE),
    }
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p, "does not exist"),
        (_corrupt, "corrupt or not a PyTorch file"),
        (_not_ours, "not an nst-fast checkpoint"),
        (_wrong_architecture, "weights do not fit"),
    ],
    ids=["missing", "corrupt", "not-ours", "wrong-architecture"],
)
def test_bad_checkpoints_are_one_line_errors(tmp_path, make, message) -> None:
    ckpt = make(tmp_path / "model.ckpt")
    with pytest.raises(ExportError) as info:
        export_checkpoint(ckpt, tmp_path / "out", log=lambda _: None)
    assert message in str(info.value)
    assert not (tmp_path / "out").exists()


def test_unwritable_output_is_an_error(tmp_path) -> None:
    ckpt = save_checkpoint(tmp_path / "last.ckpt", small_network())
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ExportError, match="cannot write to"):
        export_checkpoint(ckpt, blocker / "export", log=lambda _: None)
    assert blocker.read_text() == "not a folder"


def test_web_without_the_runtime_files_is_refused_before_exporting(tmp_path, monkeypatch) -> None:
    from nst_fast.export import pipeline
    from nst_fast.export.results import ExportUsageError
    from nst_fast.serve.webfiles import Runtime

    monkeypatch.setattr(pipeline, "Runtime", type("Absent", (), {"load": lambda: Runtime.load(tmp_path / "none")}))
    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", small_network())
    with pytest.raises(
        ExportUsageError,
        match=r"export.web=true needs the page's runtime: no onnxruntime-web files "
        r"in .*none: in a checkout, run `python web/build.py`",
    ):
        export_checkpoint(ckpt, tmp_path / "out", web=True, log=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_triton_needs_tritonclient_and_says_how_to_install_it(tmp_path, monkeypatch) -> None:
    from nst_fast.export import ExportUsageError

    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", small_network())
    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)  # import fails as if not installed
    with pytest.raises(ExportUsageError, match=r"pip install 'nst-fast\[triton\]'"):
        export_checkpoint(ckpt, triton=TritonOptions(), log=lambda _: None)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoints"]


@pytest.mark.parametrize(
    "options, message",
    [
        (TritonOptions(max_batch_size=0), "export.triton.max_batch_size=0 must be an integer >= 1"),
        (TritonOptions(tensorrt=True, instance_kind="KIND_CPU"), "export.triton.tensorrt=true needs GPU instances"),
        (TritonOptions(trt_opt_side=512, trt_max_side=256), "export.triton.trt_max_side=256 must be an integer >= 512"),
    ],
)
def test_unusable_triton_options_are_refused(options, message) -> None:
    from nst_fast.export.triton import TritonConfigError

    with pytest.raises(TritonConfigError, match=re.escape(message)):
        options.check()


@pytest.mark.slow  # a whole export in a subprocess
def test_cli_writes_only_to_out_dir(tmp_path) -> None:
    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "step=7.ckpt", small_network())
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    # Lightning names checkpoints step=N.ckpt: Hydra needs such a value quoted.
    done = run_cli(
        [
            f"ckpt_path='{os.path.relpath(ckpt, cwd)}'",
            "export.torchscript=false",
            "export.triton.enabled=true",
            "export.triton.instance_kind=KIND_CPU",
            "export.triton.max_batch_size=2",
        ],
        cwd,
    )
    assert done.returncode == 0, done.stderr
    assert "starry.onnx: OK, max |diff|" in done.stdout
    assert list(cwd.iterdir()) == []  # no outputs/, .hydra/ or export.log in the working directory
    export = tmp_path / "run" / "export"
    assert sorted(str(p.relative_to(export)) for p in export.rglob("*") if p.is_file()) == [
        "starry.onnx",
        "starry.tiles.zip",
        "triton/starry/1/model.onnx",
        "triton/starry/config.pbtxt",
    ]
    config = (export / "triton" / "starry" / "config.pbtxt").read_text()
    assert "kind: KIND_CPU" in config and "max_batch_size: 2\n" in config


@pytest.mark.parametrize(
    "args, message, status",
    [
        ([], "ckpt_path is required", 2),
        (["ckpt_path=/nonexistent/last.ckpt"], "does not exist", 2),
        (["ckpt_path=CKPT", "export.tolerance=-1"], "verification failed: max |diff|", 1),
        (
            ["ckpt_path=CKPT", "export.triton.tensorrt=true"],
            "export.triton.tensorrt=true needs export.triton.enabled=true",
            2,
        ),
        (
            ["ckpt_path=CKPT", "export.triton.enabled=true", "export.triton.instance_kind=KIND_TPU"],
            "export.triton.instance_kind='KIND_TPU' is not one of KIND_GPU, KIND_CPU",
            2,
        ),
    ],
)
def test_export_errors_are_one_line(tmp_path, capsys, copied_export, args, message, status) -> None:
    """The export command's config (composed as ``export.py`` composes it) through ``nst_fast.export.run``: the exit
    status, one line on stderr, nothing written."""
    ckpt = save_checkpoint(tmp_path / "ckpt" / "last.ckpt", small_network())
    cfg = compose("export", [arg.replace("CKPT", str(ckpt)) for arg in args])
    assert run_export(cfg) == status
    stderr = capsys.readouterr().err
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in stderr, stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["ckpt", "last.ckpt"]


@pytest.mark.slow  # subprocesses
@pytest.mark.parametrize(
    "args, message, status",
    [([], "ckpt_path is required", 2), (["ckpt_path=CKPT", "export.tolerance=-1"], "verification failed", 1)],
)
def test_cli_error_is_one_line_and_its_status(tmp_path, args, message, status) -> None:
    """The same through ``python export.py``: its status is the process's, Hydra adds nothing to stderr, and nothing
    is written (neither beside the checkpoint nor in the working directory)."""
    ckpt = save_checkpoint(tmp_path / "ckpt" / "last.ckpt", small_network())
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    done = run_cli([arg.replace("CKPT", str(ckpt)) for arg in args], cwd)
    assert done.returncode == status, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["ckpt", "cwd", "last.ckpt"]


@pytest.mark.slow  # a subprocess
def test_cli_config_mistake_is_a_usage_error(tmp_path) -> None:
    done = run_cli(["ckpt_path=/nonexistent/last.ckpt", "export.no_such_key=1"], tmp_path)
    assert done.returncode == 2 and "Could not override 'export.no_such_key'" in done.stderr, done.stderr
