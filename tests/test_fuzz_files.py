"""Fuzzing the files spinlab opens: station files and twin checkpoints.

A station file of any content loads to a :class:`~spinlab.instruments.station.Station` or ends
in :class:`~spinlab.errors.ConfigError`; a twin checkpoint that is truncated, corrupted, garbage
or a well-formed file with hostile contents loads to a finite model or ends in
:class:`~spinlab.errors.CheckpointError`. Any other exception is a bug in spinlab.

By default each target runs a few hundred derandomised examples (hypothesis profile ``ci``, see
``tests/conftest.py``). A long random campaign::

    SPINLAB_FUZZ_PROFILE=fuzz SPINLAB_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest tests/test_fuzz_files.py

or, for every fuzz module at once, ``.venv/bin/python -m pytest -m slow tests/test_fuzz_100k.py``.
"""
from __future__ import annotations

import copy
import io
import tempfile
import tomllib
from pathlib import Path

import pytest
import torch
from hypothesis import given, strategies as st

from spinlab.errors import CheckpointError, ConfigError
import spinlab.instruments
from spinlab.instruments.station import Station, load_station, parse_station
from spinlab.twin.checkpoint import FORMAT, TwinMeta, load_twin, save_twin
from spinlab.twin.model import Normalisation, TwinArchitecture, build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STATION_FILES = {p.name: p.read_bytes()
                 for p in sorted((Path(spinlab.instruments.__file__).parent / "stations").glob("*.toml"))}
STATIONS = {name: tomllib.loads(raw.decode()) for name, raw in STATION_FILES.items()}

# --- station files --------------------------------------------------------------------------
#: What tomllib can hand back, and a little more that a caller of parse_station might.
toml_leaves = (st.text(max_size=20) | st.integers(-2**63, 2**63 - 1) | st.floats() | st.booleans()
               | st.datetimes() | st.dates() | st.times() | st.integers(-2**1100, 2**1100)
               | st.sampled_from(["inf", "nan", "", "emulated", "@py", "bus", "TCPIP::1.2.3.4::INSTR",
                                 "GPIB0::24::INSTR", 0, 1, -1, 0.0, 1e-300, 1e300, 5, 1000, 2.0, 1e6]))
toml_values = st.recursive(toml_leaves, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


@st.composite
def station_mappings(draw):
    """A shipped station with sections and keys removed, replaced or added."""
    data = copy.deepcopy(STATIONS[draw(st.sampled_from(sorted(STATIONS)))])
    for _ in range(draw(st.integers(0, 4))):
        section = draw(st.sampled_from(sorted(data) + ["limits", "source", "bogus"]))
        action = draw(st.sampled_from(["set", "set", "set", "drop", "replace"]))
        if action == "drop":
            data.pop(section, None)
        elif action == "replace" or not isinstance(data.get(section), dict):
            data[section] = draw(toml_values)
        else:
            keys = sorted(data[section]) + ["bogus"]
            data[section][draw(st.sampled_from(keys))] = draw(toml_values)
    return data


@given(station_mappings())
def test_parse_station_returns_a_station_or_raises_config_error(data):
    try:
        station = parse_station(data, "fuzz.toml")
    except ConfigError:
        return
    assert isinstance(station, Station)
    station.as_dict()


@st.composite
def station_bytes(draw):
    raw = bytearray(STATION_FILES[draw(st.sampled_from(sorted(STATION_FILES)))])
    for _ in range(draw(st.integers(0, 4))):
        pos = draw(st.integers(0, len(raw)))
        edit = draw(st.sampled_from(["flip", "cut", "insert"]))
        if edit == "flip" and pos < len(raw):
            raw[pos] = draw(st.integers(0, 255))
        elif edit == "cut":
            del raw[pos:pos + draw(st.integers(1, 200))]
        else:
            raw[pos:pos] = draw(st.sampled_from([b"=", b"[", b"]", b'"', b"\n", b"\xff\xfe", b"1e999", b"nan",
                                                 b"-", b"[limits]\n", b"x = 1\n", b"\x00"]) | st.binary(max_size=8))
    return bytes(raw)


@given(station_bytes() | st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_load_station_on_any_file_bytes_returns_a_station_or_raises_config_error(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("station") / "lab.toml"
    path.write_bytes(raw)
    try:
        station = load_station(path)
    except ConfigError:
        return
    assert isinstance(station, Station)


@pytest.mark.parametrize("case", ["non-UTF-8 file", "integer beyond the float range"])
def test_station_loader_crashes_found_by_fuzzing_are_config_errors(tmp_path, case):
    if case == "non-UTF-8 file":
        (tmp_path / "lab.toml").write_bytes(b"\x80")
        with pytest.raises(ConfigError):
            load_station(tmp_path / "lab.toml")
    else:
        data = copy.deepcopy(STATIONS["emulated.toml"])
        data["awg"]["load_ohm"] = 10**400
        with pytest.raises(ConfigError):
            parse_station(data)


# --- twin checkpoints -----------------------------------------------------------------------
def _checkpoint_bytes() -> bytes:
    arch = TwinArchitecture(n_delays=2, hidden=4, condition_names=("bias_A",))
    model = build_model(arch, Normalisation(0.01, 0.005, 0.0, 0.2, [7.5e-3], [1e-3]), seed=0)
    meta = TwinMeta(dt_s=1e-7, condition_ranges={"bias_A": [6.5e-3, 8.5e-3]}, noise_std=1e-4)
    with tempfile.TemporaryDirectory() as tmp:
        return save_twin(Path(tmp) / "twin.pt", model, meta).read_bytes()


CHECKPOINT = _checkpoint_bytes()
PAYLOAD = torch.load(io.BytesIO(CHECKPOINT), weights_only=True)


def load_checked(tmp_path_factory, raw: bytes):
    path = tmp_path_factory.mktemp("twin") / "twin.pt"
    path.write_bytes(raw)
    try:
        model, meta = load_twin(path)
    except CheckpointError:
        return
    assert isinstance(meta, TwinMeta) and meta.dt_s > 0
    assert all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


@st.composite
def corrupted_checkpoints(draw):
    raw = bytearray(CHECKPOINT)
    for _ in range(draw(st.integers(1, 6))):
        raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    return bytes(raw)


@given(corrupted_checkpoints() | st.integers(0, len(CHECKPOINT) - 1).map(lambda n: CHECKPOINT[:n])
       | st.binary(max_size=200))
def test_corrupted_truncated_or_garbage_checkpoints_raise_checkpoint_error(tmp_path_factory, raw):
    load_checked(tmp_path_factory, raw)


#: Well-formed files (torch.save of plain containers) whose fields are hostile.
fields = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats() | st.text(max_size=10)
    | st.sampled_from([2**40, 10**9, -1, 0, 1, 3, "float32", "float64", "nn", "linear", "hold", "bias_A"])
    | st.builds(torch.tensor, st.lists(st.floats(width=32), max_size=4)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)


@st.composite
def hostile_payloads(draw):
    payload = copy.deepcopy(PAYLOAD)
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.sampled_from(["format_version", "architecture", "dtype", "state_dict", "meta", "top"]))
        target = payload if where in ("format_version", "dtype", "top") else payload[where]
        if not isinstance(target, dict):
            payload[where] = draw(fields)
            continue
        key = where if where in ("format_version", "dtype") else draw(st.sampled_from(sorted(target) + ["extra"]))
        target[key] = draw(fields)
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


@given(hostile_payloads())
def test_well_formed_checkpoints_with_hostile_fields_load_or_raise_checkpoint_error(tmp_path_factory, raw):
    load_checked(tmp_path_factory, raw)


@pytest.mark.parametrize("where, key, value", [
    ("architecture", "hidden", 10**9),          # was: a 20 GB allocation before any check
    ("architecture", "hidden", 4.0),
    ("meta", "condition_ranges", "bias_A"),     # these loaded, and failed later in the twin device
    ("meta", "noise_std", float("nan")),
    ("meta", "settle_samples", -5),
    ("meta", "provenance", [1]),
    ("top", "dtype", "complex64"),
    ("top", "format_version", -3),
])
def test_hostile_checkpoint_fields_found_by_fuzzing_are_checkpoint_errors(tmp_path, where, key, value):
    payload = copy.deepcopy(PAYLOAD)
    (payload if where == "top" else payload[where])[key] = value
    torch.save(payload, tmp_path / "twin.pt")
    with pytest.raises(CheckpointError):
        load_twin(tmp_path / "twin.pt")
