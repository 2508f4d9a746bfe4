"""Rendering with an FPDM model (how the parts fit: ``docs/render_path.md``).

- :mod:`signgen.sampling.pipeline`: FPDMPipeline (a diffusers DiffusionPipeline) and the render
- :mod:`signgen.sampling.options`: RenderOptions, validated once; the shared CLI options
- :mod:`signgen.sampling.loop`: the denoising loop every render path runs
- :mod:`signgen.sampling.guidance`: cumulative guidance as a chain over any number of branches
- :mod:`signgen.sampling.detail`: the source detail transfer post-processor
- :mod:`signgen.sampling.inputs`: checks of a clip's first frame and keypoints
- :mod:`signgen.sampling.loading`: model folders, the class allow-list, the default model
- :mod:`signgen.sampling.cli`, :mod:`signgen.sampling.pairs`: ``signgen render``, ``render-pairs``
"""
