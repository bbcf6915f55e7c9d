"""Synthetic image-restoration training pairs (pure Python / numpy / Pillow: no grpc, no storage).

``content`` renders clean images (documents, textures, shapes), ``degradations`` holds the presets
that degrade them, ``spec`` validates a request, ``generate`` yields the pairs of a batch and builds
its manifest. Typical use by the servicer::

    spec = SyntheticSpec(num_images=..., degradation_type=..., ...).resolve()  # InvalidArgument
    batch_id = make_batch_id()
    metas = []
    for pair in generate_pairs(spec, batch_id, check_cancelled=ctx.check_cancelled):
        put("training-data", pair.clean_key, encode_png(pair.clean))
        put("training-data", pair.degraded_key, encode_png(pair.degraded))
        metas.append(pair.meta())
    put("synthetic-data", manifest_key(batch_id), json.dumps(manifest(spec, batch_id, metas)))
"""

from servers.training.data.synthetic.content import CONTENT_KINDS, render_content
from servers.training.data.synthetic.degradations import PRESETS, degrade, get_preset, preset_names
from servers.training.data.synthetic.generate import (
    GENERATOR_VERSION,
    Pair,
    clean_key,
    dataset_prefix,
    degraded_key,
    encode_png,
    generate_pair,
    generate_pairs,
    make_batch_id,
    manifest,
    manifest_key,
    pair_name,
    pair_rngs,
)
from servers.training.data.synthetic.spec import (
    DEFAULT_DATASET,
    DEFAULT_IMAGES,
    DEFAULT_PRESET,
    DEFAULT_SIDE,
    MAX_IMAGES,
    MAX_SEED,
    MAX_SIDE,
    MIN_IMAGES,
    MIN_SIDE,
    SyntheticSpec,
    default_content_kinds,
)

__all__ = [
    "CONTENT_KINDS",
    "DEFAULT_DATASET",
    "DEFAULT_IMAGES",
    "DEFAULT_PRESET",
    "DEFAULT_SIDE",
    "GENERATOR_VERSION",
    "MAX_IMAGES",
    "MAX_SEED",
    "MAX_SIDE",
    "MIN_IMAGES",
    "MIN_SIDE",
    "PRESETS",
    "Pair",
    "SyntheticSpec",
    "clean_key",
    "dataset_prefix",
    "default_content_kinds",
    "degrade",
    "degraded_key",
    "encode_png",
    "generate_pair",
    "generate_pairs",
    "get_preset",
    "make_batch_id",
    "manifest",
    "manifest_key",
    "pair_name",
    "pair_rngs",
    "preset_names",
    "render_content",
]
