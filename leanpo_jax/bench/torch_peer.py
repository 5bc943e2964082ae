"""The PyTorch peer: what a user would run instead — HF transformers models, TRL-style step.

Same shapes and the same model configurations as our rows (the transformers class and config
that the model's family names, `Family.transformers_model`; random weights): chosen and
rejected concatenated along the batch (2·pairs sequences of prompt + response, the video
duplicated for both, as TRL and the LLaVA-NeXT DPO trainer do), one forward, then
  torch-hf     full logits → float32 log_softmax → gather; LeanPO loss on average log-probs
               (β 2, γ 0.5, dynamic smoothing α 0.1, SFT 0.5 on the winner)
  torch-liger  final hidden states → Liger's fused linear SimPO loss (β 2, γ 0.5, static
               smoothing 0.1, NLL weight 0.5; chunked, no full logits), when liger-kernel imports
then backward and AdamW. Frames are normalised with the model's own mean/std (its data
interface). Vision tower, pooler, projector and image newline frozen; everything else trained.
bf16 on GPU, fp32 on CPU; gradient checkpointing where our row uses remat. A LoRA shape
(`lora_rank`) wraps the model with peft (r, alpha 2r, float32 adapters on every linear layer of
the language model, the whole base frozen) and trains the adapters only, as ours does. torch is
imported lazily.
"""

from __future__ import annotations

import statistics
import time

from leanpo_jax.bench.shapes import StepShape
from leanpo_jax.models import family_of
from leanpo_jax.train import flops as flops_lib

IMPLS = ("torch-hf", "torch-liger")
# Parameter names (substrings) of the frozen vision side in transformers' LLaVA classes
# (OneVision, NeXT-Video: model.vision_tower.*, model.multi_modal_projector.*,
# model.image_newline, and NeXT-Video's model.vision_resampler, parameter-free unless "conv")
# and Qwen-VL's model.visual.* (ViT + merger), as our step freezes them.
FROZEN_NAMES = ("vision_tower", "multi_modal_projector", "image_newline", "vision_resampler", "visual")


def liger_available() -> bool:
    try:
        import liger_kernel.chunked_loss  # noqa: F401
    except Exception:  # noqa: BLE001 - absent or broken: the row is left out
        return False
    return True


def _hf_model(config, device, dtype, hf_dir: str = ""):
    """The transformers model that `config`'s family names (`transformers_model`): a seeded
    random init, or the weights of `hf_dir` (a `models.save_hf` folder) in that architecture;
    a tensor missing, left over or of another shape is an error."""
    import torch
    import transformers

    family = family_of(config)
    name, d = family.transformers_model(config)
    cls = getattr(transformers, name, None)
    if cls is None:
        raise ValueError(f"family {family.name!r}: transformers_model names class {name!r}, which "
                         f"transformers {transformers.__version__} lacks; upgrade transformers")
    d = dict(d)
    if "model_type" not in d:
        raise ValueError(f"family {family.name!r}: transformers_model's config dict has no "
                         "'model_type' key; return a transformers config's to_dict()")
    hf_config = transformers.AutoConfig.for_model(d.pop("model_type"), **d)
    if hf_dir:
        # The family's config, not the folder's config.json: this checks that the two agree.
        model, info = cls.from_pretrained(hf_dir, config=hf_config, dtype=dtype, output_loading_info=True)
        bad = {k: v for k, v in info.items() if v}
        if bad:
            raise ValueError(f"{hf_dir}: its tensors do not fit the {name} of family {family.name!r}'s "
                             f"transformers_model: {bad}")
        return model.to(device)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            torch.manual_seed(0)
            model = cls(hf_config)
    finally:
        torch.set_default_dtype(previous)
    return model


# The language model's linear layers (transformers' names), which our LoRA default adapts.
LM_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _with_peft_adapters(model, rank: int):
    """`model` under peft LoRA (r, alpha 2r) on exactly the language model's linear layers: full
    module names, since leaf names would also match a vision tower's MLP (Qwen2.5-VL's)."""
    import peft

    names = [n for n, _ in model.named_modules()
             if n.rsplit(".", 1)[-1] in LM_LINEAR and not any(k in n for k in FROZEN_NAMES)]
    cfg = peft.LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=names, bias="none")
    return peft.get_peft_model(model, cfg)  # freezes the base; adapters in float32 (autocast)


def leanpo_loss_torch(sum_logps, counts, pairs: int, *, beta=2.0, gamma=0.5, alpha=0.1, sft_weight=0.5):
    """Rows [chosen..., rejected...] -> the LeanPO objective (leanpo_jax.losses.leanpo_objective)."""
    import torch.nn.functional as F

    avg = sum_logps / counts
    avg_c, avg_r = avg[:pairs], avg[pairs:]
    z = beta * (avg_c - avg_r)
    eps = alpha * (avg_c < avg_r).to(z.dtype)  # smoothing only where the policy prefers the loser
    pair = -(1 - eps) * F.logsigmoid(z - gamma) - eps * F.logsigmoid(-z - gamma)
    return pair.mean() - sft_weight * sum_logps[:pairs].sum() / counts[:pairs].sum()


def peer_supported(shape: StepShape) -> str:
    """"" when the HF peer can run `shape`, else why not."""
    config = shape.config()
    try:
        family_of(config).transformers_model(config)
    except (ValueError, NotImplementedError) as e:  # no equivalent / the family names none
        return str(e)
    return ""


def run_peer(shape: StepShape, impl: str, *, steps: int, warmup: int, hf_dir: str = "") -> dict:
    """Times the peer's step on `shape` -> a result row (same keys as step_bench.run_step).
    `hf_dir`: load these weights (a `models.save_hf` folder) instead of a random init; with
    warmup 0, the row's loss_first is then the objective at exactly those weights."""
    import gc

    import numpy as np
    import torch

    gc.collect()  # a previous job's failed model may still be referenced until collected
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

    from leanpo_jax.bench.step_bench import random_batch
    from leanpo_jax.data.frames import normalize_frames

    if impl not in IMPLS:
        raise ValueError(f"peer impl {impl!r}: expected one of {IMPLS}")
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    config = shape.config()
    row = dict(what="step", name=shape.name, layout="naive", impl=impl, remat=shape.remat,
               pairs=shape.pairs, seq=shape.seq_len(), prompt_len=shape.prompt_len(),
               response=shape.response, frames=shape.frames, dtype=str(dtype).replace("torch.", ""),
               torch=torch.__version__, lora_rank=shape.lora_rank)
    model = _hf_model(config, device, dtype, hf_dir)
    model.train()
    if shape.remat:  # renamed in recent transformers; the old name warns
        getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    if shape.lora_rank:
        model = _with_peft_adapters(model, shape.lora_rank)
        if shape.remat:  # checkpointed blocks over a frozen embedding would get no input grad
            model.enable_input_require_grads()
    else:
        for name, p in model.named_parameters():
            p.requires_grad = not any(k in name for k in FROZEN_NAMES)
    params = [p for p in model.parameters() if p.requires_grad]
    row["trainable_params"] = int(sum(p.numel() for p in params))
    opt = torch.optim.AdamW(params, lr=1e-6)

    b = random_batch(shape, config)
    pairs, p, r = shape.pairs, shape.prompt_len(), shape.response
    prompt = np.concatenate([b["prompt_ids"], b["prompt_ids"]])
    responses = np.concatenate([b["chosen_ids"], b["rejected_ids"]])
    ids = torch.as_tensor(np.concatenate([prompt, responses], 1).astype(np.int64), device=device)
    mask = torch.zeros(ids.shape, device=device)
    mask[:, p:] = 1.0
    kwargs = {}
    if shape.is_video:
        policy = family_of(config).interface(config).frames  # the model's own mean / std
        x = normalize_frames(b["frames"], policy.mean, policy.std)  # float32, as our step does
        for key, value in family_of(config).transformers_video_inputs(config, np.asarray(x)).items():
            t = torch.as_tensor(np.ascontiguousarray(value), device=device)
            t = t.to(dtype) if t.is_floating_point() else t
            kwargs[key] = torch.cat([t, t])  # the video duplicated for both responses, as the peers do
    if "prompt_positions" in b:  # M-RoPE: our host table, responses continuing at its max + 1
        table = np.concatenate([b["prompt_positions"], b["prompt_positions"]])  # [2B, 3, P]
        start = table.reshape(table.shape[0], -1).max(axis=1) + 1
        resp = start[:, None, None] + np.arange(r)[None, None, :]
        full = np.concatenate([table, np.broadcast_to(resp, table.shape[:2] + (r,))], axis=2)
        kwargs["position_ids"] = torch.as_tensor(full.transpose(1, 0, 2).astype(np.int64), device=device)
    if impl == "torch-liger":
        from liger_kernel.chunked_loss import LigerFusedLinearSimPOLoss

        fused = LigerFusedLinearSimPOLoss(beta=2.0, gamma=0.5, alpha=0.5, label_smoothing=0.1,
                                          compute_nll_loss=True)
        target = ids.masked_fill(mask == 0, -100)
        base = model.get_base_model() if shape.lora_rank else model
        body = base.model if hasattr(base, "model") else base
        lm_head = base.lm_head

    def step():
        if impl == "torch-liger":
            h = body(input_ids=ids, use_cache=False, **kwargs).last_hidden_state
            out = fused(lm_head.weight, h[:, :-1], target[:, 1:])
            loss = out[0] if isinstance(out, tuple) else out
        else:
            logits = model(input_ids=ids, use_cache=False, **kwargs).logits[:, :-1]
            logp = torch.gather(torch.log_softmax(logits.float(), -1), 2, ids[:, 1:, None])[..., 0]
            m = mask[:, 1:]
            loss = leanpo_loss_torch((logp * m).sum(-1), m.sum(-1), pairs)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    t = time.perf_counter()
    first = float(step().detach())
    sync()
    row["compile_s"] = time.perf_counter() - t  # first step: allocation and kernel selection
    for _ in range(max(0, warmup - 1)):
        step()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    last = first
    for _ in range(max(1, steps)):
        t = time.perf_counter()
        last = float(step().detach())
        sync()
        times.append(time.perf_counter() - t)
    row["step_s"], row["step_times"] = statistics.median(times), times
    row["loss_first"], row["loss_last"] = first, last
    row["pairs_per_s"] = pairs / row["step_s"]
    row["tokens_per_s"] = 2 * pairs * shape.seq_len() / row["step_s"]
    row["model_flops"] = flops_lib.step_flops(
        config, pairs=pairs, prompt_len=p, response_len=r, num_frames=shape.frames, layout="naive")
    row["peak_bytes"], row["peak_source"] = ((int(torch.cuda.max_memory_allocated()), "allocator")
                                             if cuda else (None, "unavailable"))
    del model, opt
    if cuda:
        torch.cuda.empty_cache()
    return row
