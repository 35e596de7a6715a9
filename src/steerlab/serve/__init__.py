"""``steerlab serve``: an OpenAI-compatible HTTP server with per-request steering and a browser playground.

Modules, top down: :mod:`.app` (the FastAPI routes), :mod:`.schemas` (request bodies and their checks),
:mod:`.scheduler` (the threads: the continuous-batching engine and the FASB / PSR worker, limits, shutdown),
:mod:`.registry` (the artifacts of the served directory), :mod:`.stream` (token ids to text deltas).
"""
