"""Domain rules: plain functions over the models in `schemas`. No I/O, no frameworks."""
