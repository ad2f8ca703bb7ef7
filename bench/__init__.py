"""The benchmark (issue #9): the hub side by side with a raw aiokafka pipe, on one broker,
in one run. `python3 dev.py bench` (or `python -m bench`) runs it; `--smoke` is the tiny
version CI runs. Results go to bench/results/latest.{md,json,png}."""
