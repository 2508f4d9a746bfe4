"""FPDM model components (diffusers/transformers-style modules) and their configuration.

- :mod:`signgen.models.modules`: PoseEncoder, SourceProjector, FusionMLP, Combiner
- :mod:`signgen.models.ipf`: IPFModel (CLIP vision tower + Combiner), stage 1
- :mod:`signgen.models.fpdm`: FPDMDenoiser (UNet2DConditionModel + the three conditions)
- :mod:`signgen.models.config`: FPDMModelConfig, load_model_config, build_components
- :mod:`signgen.models.preprocess`: the one letterbox resize policy, to_model_input
- :mod:`signgen.models.encoders`: encode_source

Import from the submodules; this package does not import torch eagerly.
"""
