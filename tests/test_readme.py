"""The README's "Training" and "Backbones" snippets run as written (on the CPU here)."""

import pathlib
import re

import torch

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _snippet(section: str) -> str:
    text = README.read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", body, re.S)
    assert len(blocks) == 1, f"expected one python block in {section}"
    return blocks[0]


def test_training_snippet_runs():
    scope = {}
    exec(compile(_snippet("Training"), "README:Training", "exec"), scope)
    model, ema = scope["model"], scope["ema"]
    assert torch.isfinite(scope["loss"]).item()
    tracked = {int(m.num_batches_tracked) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert tracked == {2}  # two steps under checkpointing: each batch counted once
    assert int(ema.n_averaged) == 2


def test_backbones_snippet_runs(capsys):
    scope = {}
    exec(compile(_snippet("Backbones"), "README:Backbones", "exec"), scope)
    assert set(scope["detections"][0]) == {"boxes", "labels", "scores"}
    assert [m.shape[1] for m in scope["maps"]] == [48, 104, 208, 440]
    assert "[48, 104, 208, 440] [4, 8, 16, 32]" in capsys.readouterr().out
