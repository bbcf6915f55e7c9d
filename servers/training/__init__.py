"""The genmesh Training service: image-restoration (Restormer) training behind gRPC.

Layout, outside in:

- ``api/``: ``servicer`` (thin, grpc) and ``convert`` (proto <-> domain, validation, pages).
- ``jobs/``: training jobs (``records``), each stored as its one shared job record (``store``),
  their lifecycle (``manager``: create, list, get, cancel, watch, resume at start) and their body
  (``runner``).
- ``tasks/``: short jobs on their own queue: ``synthetic`` (GenerateSyntheticData) and ``models``
  (RestoreImage, EvaluateModel).
- ``data/``: training pairs in object storage (``pairs``) and the synthetic generator (``synthetic/``).
- ``model/``: the engine, pure torch: network and architecture presets, metrics, trainer, tiling.
- ``reports/``: the training report, its charts and recommendations.
- ``registry``: registered models in the ``models`` bucket.
- ``types``: the concepts every layer shares (quality, epoch metrics, dataset stats, the spec and
  its validation, the events a training job emits); ``legacy``: older stored shapes, upgraded.

``service`` wires it together; ``python -m servers training`` runs it.
"""
