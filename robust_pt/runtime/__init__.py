"""What a run needs from the machine it runs on: devices, memory (batch probing, out-of-memory
retries), locking, progress lines, and the distributed protocol's mechanics (ranks, collectives,
shards, merging, launching). It knows nothing of models, tasks, attacks or the engine, which
passes in what each step does (robust_pt/engine/distributed.py) and the module each launched
rank runs (robust_pt/engine/worker.py)."""
