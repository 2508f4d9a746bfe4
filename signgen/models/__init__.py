"""FPDM model components (diffusers/transformers-style modules) and their configuration.

- :mod:`signgen.models.modules`: PoseEncoder, SourceProjector, FusionMLP, Combiner,
  PatchAutoencoder
- :mod:`signgen.models.ipf`: IPFModel (CLIP vision tower + Combiner), stage 1
- :mod:`signgen.models.fpdm`: FPDMDenoiser (UNet2DConditionModel + the three conditions)
- :mod:`signgen.models.spatial`: SpatialSourceDenoiser (the demo model's pixel-aligned source)
- :mod:`signgen.models.mcld`: FocalAdapter (multi-focal conditioning); regions in
  :mod:`signgen.models.regions`
- :mod:`signgen.models.config`: FPDMModelConfig, load_model_config (dataclasses only)
- :mod:`signgen.models.factory`: build_components, build_denoiser
- :mod:`signgen.models.schedulers`: the model's noise schedule and the samplers sharing it
- :mod:`signgen.models.preprocess`: the resize geometries (letterbox, squash), to_model_input
- :mod:`signgen.models.processor`: FPDMImageProcessor, the geometry owner of a model
- :mod:`signgen.models.encoders`: encode_source

Import from the submodules; this package does not import torch eagerly.
"""
