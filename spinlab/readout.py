"""Old home of :mod:`spinlab.speech.readout` (the digit readout; its file format is now
:mod:`spinlab.speech.readout_file`), kept for existing scripts and notebooks."""

from spinlab.speech.readout import *  # noqa: F403
