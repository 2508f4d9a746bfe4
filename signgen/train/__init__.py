"""Training of signgen's models: stage 1 (IPF), stage 2 (FPDM) and the demo VAE."""
