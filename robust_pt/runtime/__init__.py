"""What a run needs from the machine it runs on: memory (batch probing, out-of-memory retries)
and the worker process a distributed launch starts."""
