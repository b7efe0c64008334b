"""Generated bad input (Hypothesis) thrown at every gate: numeric and path flags of every command,
storage URLs with passwords full of ``@ : / ? # %``, checkpoint dicts, exported configs, image and
array files, and spaces that fail in every way. The properties, for every example: exit 0 or exit 2
with one line, no traceback, no secret in any output, no file outside the output folder, no module
imported by data, no completed trial lost, nothing left RUNNING, no FAIL loop.

Examples are derandomized (CI sees the same cases every run) and bounded in number; the examples
Hypothesis found while this harness was written are pinned with ``@example``. Set
``HYPOTHESIS_PROFILE=deep`` for a longer hunt: ten times the examples, drawn afresh each run.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import sys
import tempfile
import textwrap
import uuid
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from optuna.trial import TrialState

import search.driver
import search.retrain
from search.cli import main
from search.data import TRAIN_IMAGES, Mnist, Tensors
from search.export import load_record
from search.redact import split_user_info
from spaces import get_space
from spaces.errors import UserError
from tests.conftest import DATA_DIR, small_search

settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
settings.register_profile("deep", parent=settings.get_profile("ci"), derandomize=False)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)
SCALE = 10 if PROFILE == "deep" else 1  # a test's own max_examples overrides a profile's: scale it here


def examples(n: int) -> int:
    return n * SCALE


FFN = get_space("ffn").baselines[0]
STOP = "stopped here by the harness"  # raised where a command would start long work


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def assert_clean_ending(code: int, err: str) -> None:
    """Exit 0, or exit 2 with one line; never a traceback."""
    assert "Traceback" not in err, err
    assert code in (0, 2), (code, err)
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def study_storage(tmp_path_factory) -> str:
    """A two-trial ffn study (journal: copies need no log folding) for the read-only commands."""
    folder = tmp_path_factory.mktemp("study")
    storage = str(folder / "s.journal")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    from search import run_search

    run_search(small_search(folder, DATA_DIR, trials=2, storage=storage, study_name="s"))
    return storage


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "ffn.pt"
    torch.manual_seed(0)
    network = get_space("ffn").build(FFN)
    torch.save({"space": "ffn", "config": FFN, "state_dict": network.state_dict()}, path)
    return path


@functools.cache
def blank_mnist() -> Mnist:
    """MNIST's shapes, all zeros: what a retrain reads its split from, without reading the files."""
    return Mnist(
        train=Tensors(
            torch.zeros(TRAIN_IMAGES, 28, 28, dtype=torch.uint8), torch.zeros(TRAIN_IMAGES, dtype=torch.int64)
        ),
        test=Tensors(torch.zeros(10_000, 28, 28, dtype=torch.uint8), torch.zeros(10_000, dtype=torch.int64)),
    )


@pytest.fixture
def no_long_work(monkeypatch):
    """Searches stop where the data would load, retrains where the first model would be built (on
    blank data, its split carved): the gates before that are what is tested."""

    def stop(*args, **kwargs):
        raise UserError(STOP)

    monkeypatch.setattr(search.driver, "_load_data", stop)
    monkeypatch.setattr(search.retrain, "load_mnist", lambda *args, **kwargs: blank_mnist())
    monkeypatch.setattr(search.retrain.Run, "build", stop)


# Values a user might type into any flag: numbers of every size and sign, non-finite floats, text.
NUMBERS = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e309", "0x10", "1_000", " 5", "٣", "", "--", "-0", "1.0"]),
)
PATH_TEXT = (
    st.lists(
        st.sampled_from([*"ab./-_ ?*~$#%:研\n\t", "..", "../", "x.db", "s.journal", "#s", "sqlite:///"]), max_size=8
    )
    .map("".join)
    .filter(lambda p: not p.startswith("/") and p.count("..") <= 1)
)

SEARCH_NUMERIC = ["--trials", "--seed", "--timeout", "--epochs", "--max-params", "--train-subset", "--val-size",
                  "--jobs", "--heartbeat", "--target", "--warm-start-top", "--prune-from-epoch",
                  "--prune-keep"]  # fmt: skip
SEARCH_PATHS = ["--storage", "--study-name", "--data-dir", "--artifacts", "--warm-start"]


@given(flag=st.sampled_from(SEARCH_NUMERIC), value=NUMBERS)
@settings(max_examples=examples(120))
@example(flag="--timeout", value="nan")  # ran 0 trials and exited 0
@example(flag="--trials", value="--")  # found by the harness: argparse handed the option an empty list
@example(flag="--heartbeat", value=str(2**70))
def test_every_numeric_search_flag_is_checked_in_one_line(flag, value, no_long_work, tmp_path):
    code, _, err = run(["--space", "ffn", "--storage", f"sqlite:///{tmp_path}/s.db", f"{flag}={value}"])
    assert_clean_ending(code, err)
    assert code == 2  # either refused by the gate, or stopped where the data would load
    assert STOP in err or "error:" in err


@given(flag=st.sampled_from(SEARCH_PATHS), value=PATH_TEXT)
@settings(max_examples=examples(80))
@example(flag="--storage", value="..")
@example(flag="--warm-start", value="#")
def test_every_path_flag_of_the_search_is_checked_in_one_line(flag, value, no_long_work, tmp_path):
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    work = root / "w"
    work.mkdir()
    cwd = os.getcwd()
    os.chdir(work)
    try:
        code, _, err = run(["--space", "ffn", "--data-dir", str(DATA_DIR), f"{flag}={value}"])
    finally:
        os.chdir(cwd)
    assert_clean_ending(code, err)
    # Checked and refused, or stopped where the data loads: before that, nothing is written anywhere.
    assert not files_under(root) and not [p for p in root.rglob("*") if p.is_dir() and p != work]


READ_COMMANDS = {
    "export": (["--top"], ["--out"]),
    "report": (["--top"], ["--out"]),
    "retrain": (["--top", "--seeds"], ["--out", "--artifacts"]),
    "dashboard": (["--port"], []),
}


@st.composite
def read_command(draw):
    command = draw(st.sampled_from(sorted(READ_COMMANDS)))
    numeric, paths = READ_COMMANDS[command]
    flag = draw(st.sampled_from(numeric + paths))
    value = draw(NUMBERS if flag in numeric else PATH_TEXT)
    return command, flag, value


@given(case=read_command())
@settings(max_examples=examples(60))
@example(case=("dashboard", "--port", "70000"))  # OverflowError
@example(case=("export", "--out", "研"))
def test_every_flag_of_the_read_commands_is_checked_in_one_line(
    case, study_storage, no_long_work, tmp_path, monkeypatch
):
    import optuna_dashboard

    monkeypatch.setattr(optuna_dashboard, "run_server", lambda *a, **k: None)
    command, flag, value = case
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    work = root / "w"
    work.mkdir()
    storage = root / "s.journal"
    storage.write_bytes(Path(study_storage).read_bytes())
    before = storage.read_bytes()
    cwd = os.getcwd()
    os.chdir(work)
    try:
        extra = ["--port", "1"] if command == "dashboard" and flag != "--port" else []
        code, _, err = run([command, "--storage", str(storage), *extra, f"{flag}={value}"])
    finally:
        os.chdir(cwd)
    assert_clean_ending(code, err)
    assert storage.read_bytes() == before  # retrain stops before its uploads; the others only read
    out = (work / value).resolve() if flag in ("--out", "--artifacts") else None

    def allowed(path: Path) -> bool:
        if work / "studies" in path.parents or path == storage:
            return True
        return out is not None and (path == out or out in path.parents or path == out.with_suffix(".csv"))

    assert all(allowed(p) for p in files_under(root)), files_under(root)


# Storage URLs: passwords of every shape, never shown in any form or piece.

PASSWORD = st.text(alphabet=st.sampled_from(list("abcXYZ019@:/?#%")), min_size=6, max_size=24).filter(
    lambda p: any(c.isalnum() for c in p)
)


@given(
    password=PASSWORD, where=st.sampled_from(["user info", "query"]), command=st.sampled_from(["export", "dashboard"])
)
@settings(max_examples=examples(80))
@example(password="p@ss:w0rd", where="user info", command="export")  # printed 'w0rd@127.0.0.1:55432'
@example(password="s3c%40ret", where="user info", command="export")
def test_no_secret_of_a_storage_url_is_ever_printed(password, where, command):
    marker = f"Q{uuid.uuid4().hex[:8]}"  # a piece no message could hold by chance
    secret = password + marker
    if where == "user info":
        url = f"postgresql+psycopg2://user:{secret}@127.0.0.1:1/db"
    else:
        url = f"postgresql+psycopg2://user@127.0.0.1:1/db?sslpassword={secret.replace('#', '').replace('?', '')}"
    code, out, err = run([command, "--storage", url])
    assert_clean_ending(code, err)
    assert code == 2
    shown = out + err
    assert marker not in shown
    pieces = [p for p in re.split(r"[@:/?#%]", password) if len(p) >= 4]
    assert not any(p in shown.replace(_public_part(url), "") for p in pieces), shown


def _public_part(url: str) -> str:
    """What may be shown of the URL: the part after its user info, without the query."""
    return split_user_info(url)[3].split("?", 1)[0]


# Checkpoints: any dict, any space name; nothing is imported and every refusal is one line.

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
SPACE_NAMES = st.sampled_from(["ffn", "this:s", "os:path", "json:loads", "harness_evil:SPACE", "", "ffn:x", "gap_cnn"])


@st.composite
def checkpoint_dict(draw):
    config = dict(FFN)
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.sampled_from([*FFN, "extra"]))
        config[key] = draw(JSON)
    state = get_space("ffn").build(FFN).state_dict()
    if draw(st.booleans()):
        key = draw(st.sampled_from(sorted(state)))
        state[key] = draw(st.sampled_from([torch.zeros(3), torch.zeros(0), "text", None]))
    content = {"space": draw(SPACE_NAMES | st.text(max_size=12)), "config": config, "state_dict": state}
    for key in draw(st.sets(st.sampled_from(["space", "config", "state_dict"]), max_size=1)):
        content[key] = draw(JSON)
    return content


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("digit") / "one.png"
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[4:24, 12:16] = 255
    Image.fromarray(pixels, mode="L").save(path)
    return path


@given(content=checkpoint_dict(), command=st.sampled_from(["predict", "export-model"]))
@settings(max_examples=examples(60))
@example(content={"space": "this:s", "config": FFN, "state_dict": {}}, command="predict")  # printed the Zen
def test_no_checkpoint_dict_imports_code_or_ends_in_a_traceback(content, command, digit_png, tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "harness_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.chdir(tmp_path)
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "c.pt"
    torch.save(content, path)
    rest = [str(digit_png)] if command == "predict" else ["--format", "torchscript", "--out", str(path.parent)]
    code, _, err = run([command, str(path), *rest])
    assert_clean_ending(code, err)
    assert not marker.exists() and "this" not in sys.modules and "harness_evil" not in sys.modules


# Exported configs: a mutated record is refused in one line, and one the gate accepts can be built.


@st.composite
def exported_record(draw):
    space = draw(st.sampled_from(["ffn", "fcn", "cnn", "gap_cnn"]))
    config = dict(get_space(space).baselines[0])
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        key = draw(st.sampled_from(sorted(config)))
        if action == "replace":
            config[key] = draw(JSON | st.integers(-5, 5000) | st.floats(-1, 2))
        elif action == "drop" and len(config) > 1:
            del config[key]
        else:
            config[draw(st.text(max_size=6))] = draw(JSON)
    record = {"space": space, "config": config, "train_seed": draw(st.none() | st.integers(-5, 2**70))}
    if draw(st.booleans()):  # an export's split, as written, mutated, or replaced
        split = {"val_size": 10_000, "split_seed": 0, "train_subset": None}
        for _ in range(draw(st.integers(0, 2))):
            split[draw(st.sampled_from([*split, "extra"]))] = draw(JSON | st.integers(-5, 2**70))
        record["split"] = draw(st.just(split) | JSON)
    return record


@given(record=exported_record(), search_split=st.booleans())
@settings(max_examples=examples(100))
@example(
    record={"space": "gap_cnn", "config": {**get_space("gap_cnn").baselines[0], "width_1": 10**9}}, search_split=False
)
@example(
    record={"space": "ffn", "config": {**FFN, "\r0": None}}, search_split=False
)  # found by the deep profile: a key broke the line
@example(record={"space": "ffn", "config": FFN}, search_split=True)  # a warm start has no split: a KeyError once
@example(record={"space": "ffn", "config": FFN, "split": {"val_size": "10"}}, search_split=True)
def test_an_exported_config_is_refused_in_one_line_or_builds(record, search_split, no_long_work, tmp_path):
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "c.json"
    path.write_text(json.dumps(record))
    flags = ["--search-split"] if search_split else []
    code, _, err = run(["retrain", str(path), "--seeds", "0", "--out", str(path.parent / "out"), *flags])
    assert_clean_ending(code, err)
    assert code == 2  # refused, or stopped where the data would load
    if STOP in err:  # accepted by the gate: it must build, and on the meta device nothing is allocated
        accepted = load_record(path)
        with torch.device("meta"):
            get_space(accepted["space"]).build(accepted["config"])


# Image and array files: any bytes, any array; one line or a finite probability for each image.

MAGIC = st.sampled_from(
    [b"", b"\x93NUMPY", b"\x1f\x8b", b"\x00\x00\x08\x03", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"PK"]
)
NAMES = st.sampled_from(["a.png", "my_idx_digit.png", "x-ubyte", "x.gz", "x.npy", "x.jpg", "noext", "a,b.png"])
ARRAYS = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.int16, np.int64, np.float16, np.float32, np.float64, np.bool_]),
    shape=st.sampled_from([(28, 28), (1, 28, 28), (2, 1, 28, 28), (3, 28, 27), (0, 28, 28), (5,), ()]),
)


@given(
    content=st.one_of(st.tuples(MAGIC, st.binary(max_size=400)).map(b"".join), ARRAYS),
    name=NAMES,
    csv=st.booleans(),
)
@settings(max_examples=examples(120))
@example(content=np.full((28, 28), np.nan), name="x.npy", csv=False)  # printed digit 0 at probability nan
@example(content=np.full((28, 28), 200.0), name="x.npy", csv=False)  # a confident wrong answer
@example(content=b"\x00\x00\x08\x03", name="a.png", csv=False)  # found by the harness: an IDX header cut short
def test_any_input_file_gets_one_line_or_finite_probabilities(content, name, csv, checkpoint, tmp_path):
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / name
    if isinstance(content, np.ndarray):
        np.save(path.with_suffix(".npy"), content)
        path = path.with_suffix(".npy")
    else:
        path.write_bytes(content)
    code, out, err = run(["predict", str(checkpoint), str(path), *(["--csv"] if csv else [])])
    assert_clean_ending(code, err)
    if code == 0:
        lines = [line for line in out.splitlines() if line and not line.startswith("input,")]
        probabilities = [float(v) for v in re.findall(r"(?:,|\()([0-9.]+)%?\)?$", out, re.MULTILINE)]
        assert lines and len(probabilities) == len(lines) and all(0 <= p <= 100 for p in probabilities), out
    else:
        assert out == "" or out.strip() == "input,index,digit,probability"


# Spaces that fail in every way: the search stops in one line, keeps what completed, leaves nothing RUNNING.

FAILURES = st.fixed_dictionaries(
    {
        "where": st.sampled_from(["suggest", "build", "forward"]),
        "kind": st.sampled_from(["RuntimeError", "ValueError", "TypeError", "KeyError", "ZeroDivisionError"]),
        "message": st.sampled_from(["same", "varying"]),
        "change_kind": st.booleans(),
    }
)

BROKEN_SPACE = """
import itertools, os
from torch import nn
from spaces import get_space
from spaces.base import Space

FFN = get_space("ffn")
KINDS = itertools.cycle([RuntimeError, ValueError, TypeError, KeyError, ZeroDivisionError])
CALLS = itertools.count()
FAILURE = {failure!r}


def fail():
    if not os.path.exists({switch!r}):
        return
    kind = next(KINDS) if FAILURE["change_kind"] else {{"RuntimeError": RuntimeError, "ValueError": ValueError,
        "TypeError": TypeError, "KeyError": KeyError, "ZeroDivisionError": ZeroDivisionError}}[FAILURE["kind"]]
    raise kind("shapes 64x" + str(next(CALLS)) if FAILURE["message"] == "varying" else "always the same")


class Broken(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if FAILURE["where"] == "forward":
            fail()
        return self.inner(x)


def suggest(trial, budget):
    if FAILURE["where"] == "suggest":
        fail()
    return FFN.suggest(trial, budget)


def build(config):
    if FAILURE["where"] == "build":
        fail()
    return Broken(FFN.build(config))


SPACE = Space(name="broken", description="fails on demand", suggest=suggest, build=build, baselines=FFN.baselines,
              model_keys=FFN.model_keys, max_epochs=30, target=0.9, target_reason="a test")
"""


@given(failure=FAILURES)
@settings(max_examples=examples(6))
def test_a_space_that_always_fails_stops_keeps_what_completed_and_leaves_nothing_running(
    failure, tmp_path, monkeypatch
):
    from search import run_search
    from spaces.errors import UserError

    root = Path(tempfile.mkdtemp(dir=tmp_path))
    module = f"broken_{uuid.uuid4().hex[:8]}"
    switch = root / "fail-now"
    (root / f"{module}.py").write_text(textwrap.dedent(BROKEN_SPACE.format(failure=failure, switch=str(switch))))
    monkeypatch.syspath_prepend(str(root))
    opts = small_search(root, DATA_DIR, space=f"{module}:SPACE", trials=2, train_subset=256, val_size=256)
    completed = {t.number for t in run_search(opts).get_trials(states=(TrialState.COMPLETE,))}
    switch.touch()
    more = type(opts)(**(opts.__dict__ | {"trials": 200}))
    with pytest.raises(UserError, match="trials all failed"):
        run_search(more)
    study = optuna.load_study(study_name=opts.default_study_name(), storage=opts.storage_url())
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert 5 <= len(failed) <= 10
    assert all(t.user_attrs.get("fail_reason") for t in failed)
    assert completed <= {t.number for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert not study.get_trials(states=(TrialState.RUNNING,))
