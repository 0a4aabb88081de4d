"""Recorded dialogues: a bench opened with ``record=DIR`` writes every byte its drivers exchange,
and the transcript, replayed through the same drivers with no instrument behind them, gives the
same results; a driver that strays from the recording fails on its first unexpected message."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from spinlab import ConfigError, open_device
from spinlab.cli import app
from spinlab.conformance import check
from spinlab.instruments.transcript import (
    ReplayVisaLibrary,
    Transcript,
    TranscriptMismatch,
    decode,
    encode,
    read_transcript,
)
from spinlab.sim_backends.emulated.lab import EmulatedLab
from spinlab.waveform import Waveform


def characterize(tmp_path: Path, device: str, *more: str) -> dict:
    result = CliRunner().invoke(
        app,
        [
            "characterize",
            "--device",
            device,
            "--json",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--seed",
            "1",
            *more,
        ],
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_characterize_recorded_on_the_emulated_bench_replays_with_no_emulator(tmp_path: Path) -> None:
    recorded = characterize(tmp_path, "bench:emulated", "--record", str(tmp_path / "dialogue"))
    (transcript,) = sorted((tmp_path / "dialogue").glob("transcript-*.jsonl"))
    header, rows = read_transcript(transcript)
    assert set(header["resources"].values()) == set(EmulatedLab.RESOURCES)  # every role of the station
    assert {"awg", "scope", "source"} <= {row["role"] for row in rows} <= set(EmulatedLab.RESOURCES)
    assert all(row["t"] >= 0 for row in rows)
    # both directions, text and binary: the arb upload and the scope's waveform blocks
    assert any(row["direction"] == "write" and row["bytes"].startswith(b"SOUR1:DATA:ARB:DAC") for row in rows)
    assert any(row["direction"] == "read" and "base64" in row and row["role"] == "scope" for row in rows)

    replayed = characterize(tmp_path, f"bench:emulated?replay={transcript}")
    for key in ("threshold_A", "relaxation_time_s", "relaxation_bias_A"):
        assert replayed[key] == recorded[key]


def test_record_is_a_bench_option_in_one_line(tmp_path: Path) -> None:
    for device, message in (
        ("sim:vortex", "--record records a bench's instruments; --device sim:vortex is not a bench: address"),
        (f"bench:emulated?record={tmp_path}", "--record and the bench option record="),
    ):
        result = CliRunner().invoke(app, ["characterize", "--device", device, "--record", str(tmp_path)])
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    (tmp_path / "bad.jsonl").write_text("not json\n")
    for args in (
        ["--replay", str(tmp_path / "bad.jsonl")],
        ["--replay", str(tmp_path), "--faults", "drop@awg"],
    ):
        result = CliRunner().invoke(app, ["emulate", *args])
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output


def test_spinlab_emulate_replay_serves_a_transcript_to_a_driver_on_tcp(tmp_path: Path) -> None:
    """``spinlab emulate --replay FILE``: the recorded instrument answers on a port, any driver
    replays it (here the kit's own, over pyvisa-py); Ctrl-C says what was not replayed."""
    check("keithley-2450", "state-read-back", record=tmp_path)
    (transcript,) = tmp_path.glob("*.jsonl")
    ports = [f"--{role}-port=0" for role in ("awg", "scope", "source", "magnet", "gaussmeter", "analyser")]
    proc = subprocess.Popen(
        [sys.executable, "-c", "from spinlab.cli import main; main()", "emulate", "--replay", str(transcript)]
        + ports
        + ["--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        resources = json.loads(proc.stdout.readline())["resources"]
        assert set(resources) == {"source"}
        check("keithley-2450", "state-read-back", resource=resources["source"], visa_library="@py")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        assert "not replayed: nothing" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_driver_sending_what_the_instrument_never_got_fails_naming_the_exchange(tmp_path: Path) -> None:
    drive = Waveform(np.sin(np.linspace(0, 6, 500)) * 0.1, 1e-8, "V")
    bench = open_device(f"bench:emulated?record={tmp_path}")
    bench.respond(drive)
    bench.close()
    (transcript,) = tmp_path.glob("*.jsonl")
    replay = open_device(f"bench:emulated?replay={transcript}")
    try:
        with pytest.raises(
            TranscriptMismatch, match=r"got write b'SOUR1:DATA:ARB:DAC.*but the recording has"
        ):
            replay.respond(Waveform(drive.samples[::-1], 1e-8, "V"))  # other samples than recorded
    finally:
        replay.close()


def test_replay_answers_in_chunks_and_stops_at_the_recording_end(tmp_path: Path) -> None:
    import pyvisa

    transcript = Transcript(tmp_path / "t.jsonl", {"GPIB0::5::INSTR": "source"})
    transcript.event("GPIB0::5::INSTR", "write", b"*IDN?\n")
    transcript.read("GPIB0::5::INSTR", b"ACME,", more=True)
    transcript.read("GPIB0::5::INSTR", b"X1,0,1\n", more=False)
    transcript.close()
    _, rows = read_transcript(tmp_path / "t.jsonl")
    assert [row["bytes"] for row in rows] == [b"*IDN?\n", b"ACME,X1,0,1\n"]  # one reply, one line

    manager = pyvisa.ResourceManager(ReplayVisaLibrary.from_file(tmp_path / "t.jsonl"))
    instrument = manager.open_resource(
        "GPIB0::5::INSTR", read_termination="\n", write_termination="\n", chunk_size=4
    )
    assert instrument.query("*IDN?") == "ACME,X1,0,1"
    with pytest.raises(TranscriptMismatch, match="after the recording ended"):
        instrument.write("OUTP 1")


def test_bytes_are_text_when_printable_else_base64() -> None:
    assert encode(b"OUTP1 1\n") == {"text": "OUTP1 1\n"}
    binary = bytes(range(256))
    assert "base64" in encode(binary) and decode(encode(binary)) == binary


def test_bad_transcripts_and_options_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_text('{"not": "a transcript"}\n')
    with pytest.raises(ConfigError, match="not a spinlab transcript"):
        open_device(f"bench:emulated?replay={tmp_path / 'x.jsonl'}")
    with pytest.raises(ConfigError, match="no transcript at"):
        open_device(f"bench:emulated?replay={tmp_path / 'missing.jsonl'}")
    with pytest.raises(ConfigError, match="records a transcript or replays one"):
        open_device(f"bench:emulated?replay={tmp_path / 'x.jsonl'}&record={tmp_path}")


def test_a_transcript_served_on_tcp_answers_another_projects_driver(tmp_path: Path) -> None:
    """The emulator side: pymeasure's own Keithley 2400 driver, recorded on the emulated
    instrument, replays against the transcript served on a socket (pyvisa-py), no emulator; a
    message the recording does not have is refused and reported."""
    from pymeasure.adapters import VISAAdapter
    from pymeasure.instruments.keithley import Keithley2400

    from spinlab.instruments.transcript import RecordingVisaLibrary
    from spinlab.sim_backends.emulated.replay import ReplayServers
    from spinlab.testing import Doubler

    def session(resource: str, library, current: float) -> tuple[str, bool]:
        source = Keithley2400(
            VISAAdapter(resource, visa_library=library, timeout=1000, read_termination="\n")
        )
        source.source_mode = "current"
        source.compliance_voltage = 2
        source.source_current = current
        source.enable_source()
        answers = (source.id, source.source_enabled)
        source.adapter.close()
        return answers

    lab = EmulatedLab(Doubler())
    transcript = Transcript(tmp_path / "k2400.jsonl", {lab.RESOURCES["source"]: "source"})
    recorded = session(
        lab.RESOURCES["source"], RecordingVisaLibrary.wrap(lab.visa_library(), transcript), 1e-3
    )
    transcript.close()
    assert recorded[1] is True and "MODEL 2400" in recorded[0]

    with ReplayServers(tmp_path / "k2400.jsonl") as servers:
        assert session(servers.resources["source"], "@py", 1e-3) == recorded
        assert not servers.failures and not servers.remaining()
    with ReplayServers(tmp_path / "k2400.jsonl") as servers, pytest.raises(Exception):  # noqa: B017
        session(servers.resources["source"], "@py", 2e-3)  # not the current recorded
    assert servers.failures and "but the recording has" in servers.failures[0]


def lan_station(directory: Path, resources: dict[str, str], name: str) -> Path:
    """The built-in station reached over TCP through pyvisa-py: a lab's station file."""
    text = (Path(__file__).resolve().parents[1] / "instruments" / "stations" / "emulated.toml").read_text()
    text = text.replace('visa_library = "emulated"', 'visa_library = "@py"')
    for role in resources:
        old = next(line for line in text.splitlines() if line.startswith(f"{role} = "))
        text = text.replace(old, f'{role} = "{resources[role]}"')
    path = directory / name
    path.write_text(text)
    return path


def test_a_labs_station_recorded_over_the_network_replays_from_its_transcript(tmp_path: Path) -> None:
    """The bug-report path: a lab's station (pyvisa-py over sockets) records with
    ``?record=DIR``; the transcript replays through the same station file with no instrument,
    and, served on sockets, through the whole network path again, with the same response."""
    from spinlab.sim_backends.emulated.replay import ReplayServers
    from spinlab.sim_backends.emulated.tcp_server import serve_tcp

    drive = Waveform(np.sin(np.linspace(0, 6, 400)) * 0.1, 1e-8, "V")
    lab = EmulatedLab(open_device("sim:vortex?seed=3"), seed=3)
    with serve_tcp(lab, awg_port=0, scope_port=0, source_port=0) as servers:
        station = lan_station(tmp_path, servers.resources, "lab.toml")
        roles = sorted(servers.resources)
        with open_device(f"bench:{station}?record={tmp_path / 'dialogue'}") as bench:
            recorded = bench.respond(drive).samples
    (transcript,) = (tmp_path / "dialogue").glob("*.jsonl")
    header, rows = read_transcript(transcript)
    assert sorted(header["resources"].values()) == roles

    with open_device(f"bench:{station}?replay={transcript}") as bench:
        np.testing.assert_array_equal(bench.respond(drive).samples, recorded)

    with ReplayServers(transcript) as replay:
        served = lan_station(tmp_path, replay.resources, "replayed.toml")
        with open_device(f"bench:{served}") as bench:
            np.testing.assert_array_equal(bench.respond(drive).samples, recorded)
        assert not replay.failures and not replay.remaining()
