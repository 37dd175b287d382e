"""sandbox role package."""
