"""alignlearn.probes: linear probes, reconstruction, class-guided editing and metrics."""
