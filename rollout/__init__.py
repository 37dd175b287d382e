"""rollout role package."""
