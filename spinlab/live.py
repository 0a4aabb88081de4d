"""Old home of :mod:`spinlab.speech.microphone` (live input, word detection), kept for scripts."""

from spinlab.speech.microphone import *  # noqa: F403
