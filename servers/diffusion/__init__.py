"""The diffusion engine shared by the Image and Video services: pure Python on torch + diffusers.

No grpc, no protobuf, no storage: servicers convert requests into these types, and job contexts
reach the engine through a two-method protocol (``check_cancelled``, ``progress``). Modules:

- ``families``: what differs between SD1.5 and SDXL (pipeline classes, sizes, preview factors).
- ``tokenizer``: CLIP's real tokenizer, built offline from the shipped BPE merge list.
- ``configs``: config-only diffusers folders for single-file checkpoints (SD1.5, SDXL, or any pipeline).
- ``builtin``: the deterministic tiny smoke-test model (and a tiny AnimateDiff motion adapter).
- ``sources``: ``ModelSource`` and what a checkpoint holds (family detection from keys and shapes).
- ``loading``: offline loading into a ready pipeline, img2img derived from txt2img.
- ``params``: every request parameter's limits and defaults (light ones for the smoke-test models and CPUs).
- ``schedulers``: scheduler names -> diffusers classes and settings.
- ``memory``: full/lowvram/auto placement; OOM -> ResourceExhausted (devices: ``servers.compute``).
- ``progress``: the ``callback_on_step_end`` adapter (progress, cancel, latent previews).
- ``generate``: one batched txt2img/img2img run with per-image seeds.
- ``motion``: AnimateDiff motion adapters: sources, bundled configs, offline loading, single files.
- ``animate``: one AnimateDiff run (text/image/video-to-video, context windows, chunked decoding).
- ``compiled``: opt-in ``torch.compile`` of the denoiser and VAE decoder, warmed up at load.
- ``cache``: build-once folders in the cache directory.

diffusers and transformers are imported where they are used (importing this package costs only torch).
"""
