"""Offline tooling: downloads, tiny random-weight model builders, model-store imports.

None of it runs in a serving process: the Bento leaves this package out (bentofile.yaml) and
nothing under service.py, runners/, api/ or models/ imports it.
"""
