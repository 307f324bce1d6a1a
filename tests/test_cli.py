"""The fastregnet command line."""

import json
import subprocess
import sys

import pytest

from fastregnet.cli import main


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "regnet_y_128gf" in out and "RegNetX-12GF" in out and "regnety_008_tv" in out


def test_info_json_totals(capsys):
    assert main(["info", "RegNetY-400MF", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["params"], info["flops"], info["acts"]) == (4344144, 401849056, 3892496)
    assert [s["width"] for s in info["stages"]] == [48, 104, 208, 440]
    assert [s["se_width_first_block"] for s in info["stages"]] == [8, 12, 26, 52]
    assert sum(r["flops"] for r in info["per_stage_complexity"]) == info["flops"]


def test_info_resolution_and_text(capsys):
    assert main(["info", "regnet_x_400mf", "--resolution", "112"]) == 0
    out = capsys.readouterr().out
    assert "112x112" in out and "group_w" in out


def test_unknown_name_is_a_clean_error(capsys):
    assert main(["info", "resnet50"]) == 2
    assert "unknown RegNet model 'resnet50'" in capsys.readouterr().err


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "fastregnet.cli", "info", "regnety_002", "--json"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["name"] == "RegNetY-200MF"


@pytest.mark.parametrize("argv", [["info"], ["bench", "--dtype", "fp8"]])
def test_bad_arguments_exit_2(argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
