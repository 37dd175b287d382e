"""How good is a model: pass@k with its standard error, on task splits, every program run in
the sandbox (``cgrpo eval``), and the evaluations a job runs while it trains."""
