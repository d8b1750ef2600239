"""Staleness against output quality: stale-layer errors and latent deviation per strategy, and the
digits study (FD, class accuracy, deviation from sync) that the simulator's quality model fits."""
