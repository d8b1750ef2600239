"""Simulation objects on simpy: the network of links (more modules join here)."""
