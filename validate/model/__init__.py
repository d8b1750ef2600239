"""The DiT-MoE in torch, split into the pieces the executor calls: blocks, experts addressable by
global id, the public checkpoint layout and the rectified-flow sampler."""
