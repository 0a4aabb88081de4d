"""Instrument drivers (pymeasure over pyvisa) and the Bench that turns them into a Device."""
