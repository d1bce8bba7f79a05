"""configurator.py: every rule of the config system, including its one-line errors."""
import pytest

from configurator import configure

DEFAULTS = dict(lr=1e-3, max_steps=100, compile=False, device="auto", out_dir="out", wandb_run_name="run",
                d_ff=None, batch_size=32)


def _error(argv, defaults=DEFAULTS):
    with pytest.raises(SystemExit) as e:
        configure(defaults, argv)
    msg = str(e.value.code)
    assert msg.startswith("error: ") and "\n" not in msg
    return msg


def test_defaults_untouched_without_args():
    config = configure(DEFAULTS, [])
    assert config == DEFAULTS and config is not DEFAULTS


def test_overrides_are_typed_literals_or_strings():
    config = configure(DEFAULTS, ["--lr=3e-4", "--compile=True", "--device=cpu", "--d_ff=1344",
                                  "--out_dir=out/run=1", "--wandb_run_name=2024", "--max_steps=1e4"])
    assert config["lr"] == 3e-4 and config["compile"] is True and config["device"] == "cpu"
    assert config["d_ff"] == 1344  # None default takes anything
    assert config["out_dir"] == "out/run=1"  # split on the first '=' only
    assert config["wandb_run_name"] == "2024"  # a str default takes the text as written
    assert config["max_steps"] == 10000 and type(config["max_steps"]) is int  # integral float -> int


def test_numeric_widening():
    config = configure(DEFAULTS, ["--lr=1", "--batch_size=0.5"])
    assert config["lr"] == 1.0 and type(config["lr"]) is float  # int for a float default
    assert config["batch_size"] == 0.5  # an int default may become a float


def test_config_file_then_flags_left_to_right(tmp_path, monkeypatch):
    (tmp_path / "a.py").write_text("import math\n_scratch = 3\nlr = math.sqrt(1e-6)\nmax_steps = 7\n")
    monkeypatch.chdir(tmp_path)  # config paths are relative to the current directory
    config = configure(DEFAULTS, ["--max_steps=5", "a.py", "--lr=0.5"])
    assert config["max_steps"] == 7 and config["lr"] == 0.5  # later wins; modules and _names ignored
    assert "math" not in config and "_scratch" not in config


def test_unknown_key_names_closest():
    msg = _error(["--learning_rate=1"])
    assert "'learning_rate'" in msg
    assert "did you mean" in _error(["--max_step=3"]) and "'max_steps'" in _error(["--max_step=3"])


def test_unknown_key_in_config_file(tmp_path):
    path = tmp_path / "typo.py"
    path.write_text("batchsize = 64\n")
    msg = _error([str(path)])
    assert "'batchsize'" in msg and "'batch_size'" in msg and "typo.py" in msg


@pytest.mark.parametrize("arg, words", [
    ("--compile=1", ["compile", "bool", "int"]),  # bool takes only True/False
    ("--max_steps=True", ["max_steps", "int", "bool"]),  # and an int never takes a bool
    ("--lr=fast", ["lr", "float", "str"]),
    ("--batch_size=[1]", ["batch_size", "list"]),
])
def test_type_errors(arg, words):
    msg = _error([arg])
    assert all(w in msg for w in words), msg


def test_flag_without_value():
    assert "--compile=VALUE" in _error(["--compile"])


def test_missing_and_broken_config_files(tmp_path):
    assert "relative to" in _error([str(tmp_path / "nope.py")])
    bad = tmp_path / "bad.py"
    bad.write_text("lr = undefined_name\n")
    msg = _error([str(bad)])
    assert "bad.py" in msg and "NameError" in msg


def test_help_lists_keys(capsys):
    with pytest.raises(SystemExit) as e:
        configure(DEFAULTS, ["--help"])
    assert e.value.code == 0 and "--lr=0.001" in capsys.readouterr().out
