"""`tools tune`: a search over instance counts, encoder threads, batching and length buckets, greedy (driven by
Triton's per-model metrics read back from Prometheus) or an exhaustive sweep of a grid, applied live through the
repository API under Locust load."""
