"""Physics simulators, emulated instruments and the twin as a Device."""
