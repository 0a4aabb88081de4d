"""Fuzzing the files spinlab opens: station files, twin checkpoints, wav files, digit readouts,
fitted-model JSON files and run journals.

A station file of any content loads to a :class:`~spinlab.instruments.station.Station` or ends
in :class:`~spinlab.errors.ConfigError`; a twin checkpoint that is truncated, corrupted, garbage
or a well-formed file with hostile contents loads to a finite model or ends in
:class:`~spinlab.errors.CheckpointError`; a wav, a readout, a fitted model or a journal loads or
ends in one of spinlab's own errors. Any other exception is a bug in spinlab. Every file is
small, so memory stays bounded unless a loader believes what a file declares.

By default each target runs a few hundred derandomised examples (hypothesis profile ``ci``, see
``tests/conftest.py``). A long random campaign::

    SPINLAB_FUZZ_PROFILE=fuzz SPINLAB_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest tests/test_fuzz_files.py

or, for every fuzz module at once, ``.venv/bin/python -m pytest -m slow tests/test_fuzz_100k.py``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import struct
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import tomllib
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.io import wavfile

import spinlab.instruments
from spinlab.analysis.ridge import RidgeReadout
from spinlab.engine import journal
from spinlab.errors import CheckpointError, ConfigError, ReadoutError, SpinlabError
from spinlab.instruments.station import Station, load_station, parse_station
from spinlab.sim_backends import open_simulator
from spinlab.sim_backends.model_file import FORMAT as MODEL_FORMAT
from spinlab.sim_backends.model_file import load_model
from spinlab.speech.audio import read_audio
from spinlab.speech.encoder import Encoder, make_mask
from spinlab.speech.features import ChannelNormalizer, FeatureConfig
from spinlab.speech.microphone import prepare
from spinlab.speech.readout import FORMAT as FORMAT_READOUT
from spinlab.speech.readout import DigitReadout, TrainingStates, load_readout
from spinlab.twin.checkpoint import FORMAT, TwinMeta, load_twin, save_twin
from spinlab.twin.model import Normalisation, TwinArchitecture, build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STATION_FILES = {
    p.name: p.read_bytes()
    for p in sorted((Path(spinlab.instruments.__file__).parent / "stations").glob("*.toml"))
}
STATIONS = {name: tomllib.loads(raw.decode()) for name, raw in STATION_FILES.items()}

# --- station files --------------------------------------------------------------------------
#: What tomllib can hand back, and a little more that a caller of parse_station might.
toml_leaves = (
    st.text(max_size=20)
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.booleans()
    | st.datetimes()
    | st.dates()
    | st.times()
    | st.integers(-(2**1100), 2**1100)
    | st.sampled_from(
        [
            "inf",
            "nan",
            "",
            "emulated",
            "@py",
            "bus",
            "TCPIP::1.2.3.4::INSTR",
            "GPIB0::24::INSTR",
            0,
            1,
            -1,
            0.0,
            1e-300,
            1e300,
            5,
            1000,
            2.0,
            1e6,
        ]
    )
)
toml_values = st.recursive(
    toml_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


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
            del raw[pos : pos + draw(st.integers(1, 200))]
        else:
            raw[pos:pos] = draw(
                st.sampled_from(
                    [
                        b"=",
                        b"[",
                        b"]",
                        b'"',
                        b"\n",
                        b"\xff\xfe",
                        b"1e999",
                        b"nan",
                        b"-",
                        b"[limits]\n",
                        b"x = 1\n",
                        b"\x00",
                    ]
                )
                | st.binary(max_size=8)
            )
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


@given(
    corrupted_checkpoints()
    | st.integers(0, len(CHECKPOINT) - 1).map(lambda n: CHECKPOINT[:n])
    | st.binary(max_size=200)
)
def test_corrupted_truncated_or_garbage_checkpoints_raise_checkpoint_error(tmp_path_factory, raw):
    load_checked(tmp_path_factory, raw)


#: Well-formed files (torch.save of plain containers) whose fields are hostile.
fields = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.text(max_size=10)
    | st.sampled_from([2**40, 10**9, -1, 0, 1, 3, "float32", "float64", "nn", "linear", "hold", "bias_A"])
    | st.builds(torch.tensor, st.lists(st.floats(width=32), max_size=4)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def hostile_payloads(draw):
    payload = copy.deepcopy(PAYLOAD)
    for _ in range(draw(st.integers(1, 4))):
        where = draw(
            st.sampled_from(["format_version", "architecture", "dtype", "state_dict", "meta", "top"])
        )
        target = payload if where in ("format_version", "dtype", "top") else payload[where]
        if not isinstance(target, dict):
            payload[where] = draw(fields)
            continue
        key = (
            where
            if where in ("format_version", "dtype")
            else draw(st.sampled_from(sorted(target) + ["extra"]))
        )
        target[key] = draw(fields)
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


@given(hostile_payloads())
def test_well_formed_checkpoints_with_hostile_fields_load_or_raise_checkpoint_error(tmp_path_factory, raw):
    load_checked(tmp_path_factory, raw)


@pytest.mark.parametrize(
    "where, key, value",
    [
        ("architecture", "hidden", 10**9),  # was: a 20 GB allocation before any check
        ("architecture", "hidden", 4.0),
        ("meta", "condition_ranges", "bias_A"),  # these loaded, and failed later in the twin device
        ("meta", "noise_std", float("nan")),
        ("meta", "settle_samples", -5),
        ("meta", "provenance", [1]),
        ("top", "dtype", "complex64"),
        ("top", "format_version", -3),
    ],
)
def test_hostile_checkpoint_fields_found_by_fuzzing_are_checkpoint_errors(tmp_path, where, key, value):
    payload = copy.deepcopy(PAYLOAD)
    (payload if where == "top" else payload[where])[key] = value
    torch.save(payload, tmp_path / "twin.pt")
    with pytest.raises(CheckpointError):
        load_twin(tmp_path / "twin.pt")


# --- wav files ------------------------------------------------------------------------------
def _wav(samples, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    wavfile.write(buf, rate, samples)
    return buf.getvalue()


_TONE = np.sin(np.arange(1600) / 7.0)
WAVS = [
    _wav((_TONE * 2e4).astype(np.int16)),
    _wav(_TONE.astype(np.float32), 16000),
    _wav(np.stack([_TONE, -_TONE], axis=1).astype(np.float64), 44100),
    _wav((_TONE * 100 + 128).astype(np.uint8)),
    _wav((_TONE * 2e9).astype(np.int32), 48000),
]
#: Where a wav header keeps what a reader must believe: chunk sizes, channels, rate, bits.
HEADER_FIELDS = [
    (4, "<I"),
    (16, "<I"),
    (20, "<H"),
    (22, "<H"),
    (24, "<I"),
    (28, "<I"),
    (32, "<H"),
    (34, "<H"),
    (40, "<I"),
]


@st.composite
def wav_bytes(draw):
    raw = bytearray(WAVS[draw(st.integers(0, len(WAVS) - 1))])
    for _ in range(draw(st.integers(1, 4))):
        if not raw:
            break
        edit = draw(st.sampled_from(["field", "field", "flip", "cut", "nan"]))
        if edit == "field":
            offset, fmt = draw(st.sampled_from(HEADER_FIELDS))
            top = 2 ** (8 * struct.calcsize(fmt)) - 1
            value = draw(st.sampled_from([0, 1, 2, 3, top, top // 2]) | st.integers(0, top))
            raw[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
        elif edit == "flip":
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        elif edit == "cut":
            del raw[draw(st.integers(0, len(raw) - 1)) :]
        elif len(raw) > 60:
            at = draw(st.integers(44, len(raw) - 8))
            raw[at : at + 8] = struct.pack(
                "<d", draw(st.sampled_from([math.nan, math.inf, -math.inf, 1e300]))
            )
    return bytes(raw)


@given(wav_bytes() | st.binary(max_size=100).map(lambda b: b"RIFF\0\0\0\0WAVE" + b))
def test_any_wav_reads_to_finite_samples_or_raises_a_spinlab_error(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("wav") / "3_x_0.wav"
    path.write_bytes(raw)
    try:
        samples, rate = read_audio(path)
        assert samples.ndim == 1 and np.all(np.isfinite(samples)) and rate > 0
        prepare(samples, rate, 8000, path.name)
    except SpinlabError:
        return


# --- digit readouts -------------------------------------------------------------------------
def _readout_bytes() -> bytes:
    rng = np.random.default_rng(0)
    width = 4 * 6
    encoder = Encoder(make_mask(6, 64, seed=1), 400e-9, 2, 0.4, 1.5, scale=1.0)
    ridge = RidgeReadout(
        alpha=1e-3,
        n_classes=10,
        mean=np.zeros(width),
        std=np.ones(width),
        weights=rng.standard_normal((width + 1, 10)),
    )
    training = TrainingStates(
        rng.standard_normal((10, width)), np.arange(10), np.full(10, "theo"), np.ones(10)
    )
    readout = DigitReadout(
        FeatureConfig(),
        ChannelNormalizer(np.zeros(64), np.ones(64)),
        encoder,
        "mean",
        3,
        ridge,
        "sim:vortex",
        {"bias_A": 7.5e-3},
        training=training,
    )
    with tempfile.TemporaryDirectory() as tmp:
        return readout.save(Path(tmp) / "readout.h5").read_bytes()


READOUT = _readout_bytes()
READOUT_DATASETS = [
    "mask",
    "feature_mean",
    "feature_std",
    "ridge_mean",
    "ridge_std",
    "ridge_weights",
    "training/states",
    "training/labels",
    "training/speakers",
    "training/weights",
]
META_PATHS = [
    ("encoder", "theta_s"),
    ("encoder", "samples_per_node"),
    ("encoder", "amplitude_V"),
    ("encoder", "scale"),
    ("features", "rate_Hz"),
    ("features", "decimation"),
    ("features", "kind"),
    ("ridge", "n_classes"),
    ("segments",),
    ("node_features",),
    ("class_names",),
    ("conditions",),
    ("device_address",),
    ("extra",),
]
shapes = st.lists(st.sampled_from([0, 1, 2, 6, 25, 64, 2**20, 2**40]), min_size=0, max_size=3).map(tuple)


@st.composite
def readout_files(draw, path):
    path.write_bytes(READOUT)
    with h5py.File(path, "r+") as f:
        meta = json.loads(f.attrs["meta"])
        for _ in range(draw(st.integers(1, 3))):
            with contextlib.suppress(Exception):  # an edit h5py cannot make leaves the file as it was
                _edit_readout(draw, f, meta)
        f.attrs["meta"] = json.dumps(meta)
    raw = bytearray(path.read_bytes())
    for _ in range(draw(st.integers(0, 2))):
        raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    return bytes(raw)


def _edit_readout(draw, f: h5py.File, meta: dict) -> None:
    edit = draw(st.sampled_from(["meta", "meta", "dataset", "link", "attr"]))
    if edit == "meta":
        keys = draw(st.sampled_from(META_PATHS))
        target = meta
        for key in keys[:-1]:
            target = target[key] if isinstance(target.get(key), dict) else target.setdefault(key, {})
        target[keys[-1]] = draw(json_values)
    elif edit == "dataset":
        name = draw(st.sampled_from(READOUT_DATASETS))
        if name in f:
            del f[name]
        shape = draw(shapes)
        dtype = draw(st.sampled_from(["f8", "f4", "i8", "S4", "u1"]))
        if math.prod(shape) * np.dtype(dtype).itemsize < 1 << 16:
            value = draw(st.sampled_from([0, 1, np.nan, np.inf] if dtype[0] == "f" else [0, 1]))
            f.create_dataset(name, data=np.full(shape, value if dtype[0] != "S" else b"ab", dtype=dtype))
        else:
            chunks = tuple(min(n, 1024) or 1 for n in shape) or None
            f.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, compression="gzip")
    elif edit == "link":
        name = draw(st.sampled_from(READOUT_DATASETS + ["training"]))
        if name in f:
            del f[name]
        target = draw(st.sampled_from(["/mask", f"/{name}", "/nowhere"]))
        f[name] = draw(st.sampled_from([h5py.SoftLink(target), h5py.ExternalLink("/etc/hostname", target)]))
    else:
        f.attrs[draw(st.sampled_from(["format", "format_version"]))] = draw(
            st.sampled_from([0, 2, -1, "x", np.zeros(3), FORMAT_READOUT])
        )


json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from([0, 1, -1, 1e-30, 1e30, 10**6, 2**40, "samples"])
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@given(st.data())
def test_any_readout_file_loads_consistently_or_raises_readout_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("readout") / "readout.h5"
    raw = data.draw(readout_files(path) | st.binary(max_size=200))
    path.write_bytes(raw)
    try:
        readout = load_readout(path)
    except ReadoutError:
        return
    assert readout.ridge.weights.shape[0] == readout.ridge.mean.size + 1
    assert np.all(np.isfinite(readout.ridge.weights)) and np.all(np.isfinite(readout.encoder.mask))


# --- fitted-model JSON files -----------------------------------------------------------------
MODEL = json.dumps(
    {
        "format": MODEL_FORMAT,
        "format_version": 1,
        "simulator": "vortex",
        "options": {"noise": 0.0, "gain": 1.5},
        "provenance": {"run": "x"},
    }
)


@st.composite
def model_texts(draw):
    payload = json.loads(MODEL)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["options", "options", "top"]))
        options = payload["options"]
        target = options if where == "options" and isinstance(options, dict) else payload
        key = draw(st.sampled_from(sorted(target) + ["noise", "seed", "bogus"]))
        target[key] = draw(json_values)
    text = json.dumps(payload)
    depth = draw(st.sampled_from([0, 0, 0, 50, 5000]))
    return "[" * depth + text + "]" * depth


@given(model_texts() | st.text(max_size=100))
def test_any_model_file_opens_as_a_device_or_raises_a_spinlab_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("model") / "fit.json"
    path.write_bytes(text.encode(errors="replace"))
    try:
        load_model(path)
        open_simulator(str(path)).close()
    except SpinlabError:
        return


# --- run journals ----------------------------------------------------------------------------
def _journal_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "journal.spinlab"
        j = journal.Journal(path)
        j.append({"doc": "start", "uid": "x", "plan": "acquire", "config": {"seed": 5}})
        for step in range(3):
            j.append({"doc": "event", "step": step, "data": {"response_V": np.arange(8.0) * step}})
        j.close()
        return path.read_bytes()


JOURNAL = _journal_bytes()


@st.composite
def journal_bytes(draw):
    raw = bytearray(JOURNAL)
    for _ in range(draw(st.integers(1, 4))):
        if not raw:
            break
        edit = draw(st.sampled_from(["flip", "cut", "length", "insert"]))
        if edit == "flip":
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        elif edit == "cut":
            del raw[draw(st.integers(0, len(raw) - 1)) :]
        elif edit == "length" and len(raw) > 28:  # the first record's length field
            raw[20:28] = struct.pack(
                "<Q", draw(st.sampled_from([0, 1, 2**31, 2**40, 2**64 - 1]) | st.integers(0, 2**64 - 1))
            )
        else:
            at = draw(st.integers(0, len(raw)))
            raw[at:at] = draw(st.binary(max_size=16))
    return bytes(raw)


@given(journal_bytes() | st.binary(max_size=100))
def test_any_journal_reads_to_its_intact_records_or_raises_journal_error(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("journal") / "journal.spinlab"
    path.write_bytes(raw)
    try:
        records = journal.read(path)
    except SpinlabError:
        return
    assert all(isinstance(r, dict) for r in records)
