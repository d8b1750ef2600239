"""Companion executor: real DiT-MoE forward passes and sampling in torch (single process and torch.distributed)."""
