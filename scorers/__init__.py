"""Models the stages use and the code that trains them (fastText, transformer classifiers).

Scorers never import Ray, Prefect or fastText at import time, nor pydantic or polars outside `config`
and `data`: the GPU benchmarks run them where only torch, transformers, triton, pyarrow and numpy are.
"""
