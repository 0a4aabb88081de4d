"""Emulated SCPI instruments (33500B AWG, InfiniiVision scope, Keithley 2400) wired to a Device.

``EmulatedLab(device, seed=...)`` builds the bench; ``lab.visa_library()`` reaches it in-process
through pyvisa, ``serve_tcp(lab, ...)`` over raw SCPI sockets (port 5025 style).
"""

from spinlab.sim_backends.emulated.lab import EmulatedLab
from spinlab.sim_backends.emulated.tcp_server import EmulatedTcpServers, serve_tcp

__all__ = ["EmulatedLab", "EmulatedTcpServers", "serve_tcp"]
