"""Advocacy propensity service: the `advocacy` command line ties the packages together."""
