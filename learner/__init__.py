"""learner role package."""
