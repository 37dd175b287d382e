"""orchestrator role package."""
