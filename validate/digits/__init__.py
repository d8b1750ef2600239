"""The digits workload: scikit-learn's 8x8 digits (fixed split), the digit classifier whose
features the quality study measures in, and the deterministic training of the `digits` DiT-MoE."""
