"""`tools tune`: a greedy search over instance counts, encoder threads and batching delays, driven by Triton's
per-model metrics read back from Prometheus, applied live through the repository API under Locust load."""
