"""Config overrides for the entry scripts: plain Python config files, then `--key=value` flags.

    $ python train.py config/train_tinystories.py --lr=3e-4 --device=cpu
    $ python train.py --help                # every key with its default

A script passes its defaults (the config block at its top) and its arguments, left to right:
- `path/to/file.py`: executed into a fresh dict; it may only assign keys that exist (names starting
  with `_` and imported modules are ignored). Paths are relative to where you run the command.
- `--key=value`: value read with ast.literal_eval (`--lr=3e-4`, `--compile=False`), or taken as a
  plain string when that fails (`--device=cpu`); split on the first `=` only.
Types must match the default: an int default takes a float (`--max_steps=1e4` is read as 10000),
a float default takes an int, a str default takes the text as written, a None default takes anything,
and a bool default takes only True/False. An unknown key is an error that names the closest known key:
a silent typo is the worst bug a config system can have. Every error is one line, via SystemExit.
"""
import ast
import difflib
import types


def configure(defaults, argv):
    """Apply config files and --key=value overrides in argv to a copy of defaults; return the new dict."""
    config = dict(defaults)
    for arg in argv:
        if arg in ("-h", "--help"):
            print("\n".join(f"--{k}={v!r}" for k, v in defaults.items()))
            raise SystemExit(0)
        if arg.startswith("--"):
            key, eq, text = arg[2:].partition("=")
            if not eq:
                raise SystemExit(f"error: {arg} has no value: write --{key}=VALUE (e.g. --{key}=True)")
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = text  # bare words and paths: --device=cpu, --out_dir=out/run1
            config[key] = _checked(key, value, text, defaults, where=arg)
        else:
            for key, value in _read_config_file(arg).items():
                config[key] = _checked(key, value, None, defaults, where=f"{arg} sets {key}")
    return config


def _read_config_file(path):
    """Execute a config file into a fresh dict and return its public assignments."""
    try:
        with open(path) as f:
            source = f.read()
    except OSError as e:
        raise SystemExit(f"error: cannot read config file {path!r} ({e.strerror}); paths are relative to "
                         "the directory you run from, e.g. config/train_tinystories.py from the repo root")
    scope = {}
    try:
        exec(compile(source, path, "exec"), scope)
    except Exception as e:
        raise SystemExit(f"error: config file {path} failed: {type(e).__name__}: {e}")
    return {k: v for k, v in scope.items() if not k.startswith("_") and not isinstance(v, types.ModuleType)}


def _checked(key, value, text, defaults, where):
    """Return value converted to the default's type, or exit with a one-line error."""
    if key not in defaults:
        close = difflib.get_close_matches(key, list(defaults), n=1, cutoff=0.0)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise SystemExit(f"error: unknown config key {key!r} ({where}){hint} (--help lists all keys)")
    default = defaults[key]
    # subtle: bool is a subclass of int, so bools are checked first and exactly.
    if default is None:
        return value
    if isinstance(default, bool) or isinstance(value, bool):
        if type(value) is type(default):
            return value
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
        if text is not None:
            return text  # a str default takes the text as written: --wandb_run_name=2024 is the string '2024'
    elif isinstance(default, int) and isinstance(value, (int, float)):
        return int(value) if float(value).is_integer() else value  # 1e4 -> 10000; 0.5 stays a float
    elif isinstance(default, float) and isinstance(value, (int, float)):
        return float(value)
    elif type(value) is type(default):
        return value
    raise SystemExit(f"error: {where}: {key} must be {type(default).__name__} like its default "
                     f"{default!r}, got {type(value).__name__} {value!r}")
