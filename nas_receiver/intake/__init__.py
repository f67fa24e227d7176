"""Intake: finding the archives HA writes (scan + watch) and deciding when one is finished."""
