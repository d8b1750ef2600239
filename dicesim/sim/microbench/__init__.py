"""One collective on its own through the flow network, with the published benchmarks' metric
definitions (nccl-tests all-to-all and all-reduce, DeepEP dispatch and combine)."""
