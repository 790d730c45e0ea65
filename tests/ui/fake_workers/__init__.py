"""Fake workers: tiny scripts that speak (or break) the worker protocol, for controller tests."""
