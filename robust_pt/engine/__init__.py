"""The evaluation engine: a request in, a run directory out (see loop.py's docstring).

Modules: loop.py (evaluate and its batch loop), sweep.py (the per-batch eps loop).
"""
