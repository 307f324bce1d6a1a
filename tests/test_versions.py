"""The declared minimum versions are the ones a test run proves: pyproject.toml's floors are at most what is
installed, and under .ci/run's second environment (FASTREGNET_EXPECT_VERSIONS, the GPU machine's torch 2.11 /
triton 3.6 / numpy >= 2.4) the installed versions are exactly those, so that job really tested them."""

import os
import pathlib
import re
from importlib.metadata import version

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _release(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.match(r"\d+(\.\d+)*", text).group(0).split("."))


def _floors() -> dict[str, str]:
    text = (ROOT / "pyproject.toml").read_text()
    return dict(re.findall(r'"(torch|triton|numpy|torchvision)>=([\d.]+)"', text))


def test_pyproject_declares_the_tested_floors():
    assert _floors() == {"torch": "2.11", "triton": "3.6", "numpy": "2.4", "torchvision": "0.26"}


@pytest.mark.parametrize("package", ["torch", "triton", "numpy", "torchvision"])
def test_installed_versions_meet_the_floors(package):
    assert _release(version(package)) >= _release(_floors()[package])


def test_the_second_environment_runs_the_gpu_machines_versions():
    expected = os.environ.get("FASTREGNET_EXPECT_VERSIONS")
    if not expected:
        pytest.skip("set by .ci/run's second environment only (the GPU machine's versions)")
    for spec in expected.split(","):
        package, _, wanted = spec.partition("==")
        assert version(package).split("+")[0] == wanted, (package, version(package))
