"""signgen: sign-language video generation by pose-guided latent diffusion (FPDM)."""

__version__ = "0.1.0"
