"""The benchmarks of `make bench`, one module each; `python -m scripts.bench --help` lists them."""
