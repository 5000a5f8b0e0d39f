"""Diffusion: the noise schedule, parameterisations, samplers' steps and the training losses."""
