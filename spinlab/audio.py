"""Old home of :mod:`spinlab.speech.audio` (FSDD and wav files), kept for existing scripts."""

from spinlab.speech.audio import *  # noqa: F403
