"""The main job's pipeline, spoken digits through a device, one module per stage:

``audio``         FSDD recordings and wav files -> samples (the pinned download, resampling)
``microphone``    live input -> words (level checks, word detection)
``features``      samples -> feature frames (Lyon cochleagram, MFCC, log-mel) and their normalisation
``encoder``       frames -> input mask -> drive waveform; device response -> per-node states
``readout``       pooled states -> ridge readout -> digit (recognition, and enrolment of a new voice)
``readout_file``  the readout on disk (``readout.h5``) and its checks

Each stage imports only the stages before it (``.importlinter``). The ridge readout itself is
analysis (:mod:`spinlab.analysis.ridge`).
"""
