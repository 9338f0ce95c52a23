"""Roll a model to a new version on a running Triton, with a canary, a switch, a drain, and a way back.

`steps.rollout` and `steps.rollback` do the work through Triton's repository API (`control`), compare the new
version with the serving one on real requests (`canary`), and remember the way back beside the config (`state`).
"""
