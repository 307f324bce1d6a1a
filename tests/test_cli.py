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


@pytest.mark.parametrize("argv,message", [
    (["bench", "--batch", "0"], "argument --batch: must be a positive integer, got 0"),
    (["bench", "--batch", "-8"], "argument --batch: must be a positive integer, got -8"),
    (["bench", "--resolution", "0"], "argument --resolution: must be a positive integer, got 0"),
    (["bench", "--repeats", "-1"], "argument --repeats: must be a positive integer, got -1"),
    (["bench", "--warmup", "-1"], "argument --warmup: must be >= 0, got -1"),
    (["info", "regnety_002", "--resolution", "-224"], "argument --resolution: must be a positive integer"),
    (["explore", "--steps", "0"], "argument --steps: must be a positive integer, got 0"),
    (["sample", "--space", "regnetx", "--n", "abc"], "argument --n: expected an integer, got 'abc'"),
])
def test_argument_errors_are_one_line_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and message in err, err


def _user_error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_bench_unknown_device_is_a_user_error(capsys):
    assert "unknown device 'tpu0'" in _user_error(["bench", "--device", "tpu0"], capsys)
    if not __import__("torch").cuda.is_available():
        assert "no CUDA device is available" in _user_error(["bench", "--device", "cuda"], capsys)


def test_edf_bad_files_are_user_errors(tmp_path, capsys):
    assert "is a directory" in _user_error(["edf", str(tmp_path)], capsys)
    (tmp_path / "empty.json").write_text("")
    assert "is empty" in _user_error(["edf", str(tmp_path / "empty.json")], capsys)
    (tmp_path / "none.json").write_text('{"results": []}')
    assert "holds no records" in _user_error(["edf", str(tmp_path / "none.json")], capsys)
    (tmp_path / "zero.json").write_text("[]")
    assert "holds no records" in _user_error(["edf", str(tmp_path / "zero.json")], capsys)
    (tmp_path / "zero.csv").write_text("space,error\n")
    assert "holds no records" in _user_error(["edf", str(tmp_path / "zero.csv")], capsys)
    (tmp_path / "bad.json").write_text("{not json")
    assert "fastregnet edf: error:" in _user_error(["edf", str(tmp_path / "bad.json")], capsys)
    assert "No such file" in _user_error(["edf", str(tmp_path / "missing.json")], capsys)
