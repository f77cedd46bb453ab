"""Peak memory of a ViT training or inference step, by component, from the model's structure.

The activation terms follow what autograd actually saves (found by walking the graph of a real step; see
docs/planner.md): per block, with B images, N tokens, width D, MLP width M and activation bytes s (4 fp32, 2 under
bf16/fp16 autocast), and the residual stream always fp32 (LayerNorm inputs):

    residual in + residual mid                     2 x 4 B N D
    LN1 out (qkv input), fused qkv (q, k, v views)  s B N D + 3 s B N D
    attention output (also the proj input)          s B N D   + logsumexp 4 B H N
    LN2 out (fc1 input), fc1 out, GELU out          s B N D + 2 s B N M
    LayerNorm mean/rstd                              2 x 2 x 4 B N

Under autocast the bf16 copies of the weights are saved too (2 bytes per matmul weight). Checkpointing keeps only
each block's fp32 input and recomputes one block at a time in backward.

The peak is the largest of three moments: the start of backward (all activations alive, first gradients
appearing), the end of backward (all gradients, little activation), and the optimizer step (gradients + states +
the optimizer's temporaries).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .flops import ViTShape

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
OPTIMIZERS = {  # bytes of state per parameter, and of temporaries per parameter in step(), as `vitkit train` builds them
    "adamw": (8, 0),  # torch's fused AdamW (CPU and CUDA): no temporaries
    "sgd": (4, 4),  # momentum buffer; the foreach kernel's Nesterov step makes one parameter-sized temporary
}
MODES = ("train", "infer")


@dataclass
class MemoryEstimate:
    """Bytes per device. ``peak`` is the model's tensor memory; ``total`` adds the framework allowance."""

    weights: int
    gradients: int
    optimizer_states: int
    optimizer_temporaries: int
    weight_copies: int  # autocast's low-precision weight casts, saved for backward
    activations: int  # saved for backward (train) or the largest live set (infer)
    attention_workspace: int  # (B, H, N, N) probabilities of explicit attention (train: saved per block); 0 fused
    transient: int  # largest short-lived buffer on top of the above (gradients of activations, MLP hidden)
    inputs: int
    peak: int
    framework: int = 0
    total: int = 0
    peak_phase: str = ""
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _param_counts(shape: ViTShape) -> tuple[int, int, int, int]:
    """(all params, matmul weights (autocast-cast), params per block, head params)."""
    d, m, L = shape.embed_dim, shape.mlp_hidden, shape.depth
    patch_w = shape.in_chans * shape.patch_size**2 * d
    block_w = 3 * d * d + d * d + 2 * d * m
    block_b = (3 * d if shape.qkv_bias else 0) + d + m + d
    block_norm = 4 * d + (4 * (d // shape.num_heads) if shape.qk_norm else 0) + (2 * d if shape.layer_scale else 0)
    block = block_w + block_b + block_norm
    head_w = d * shape.num_classes * shape.classifier_heads
    head = head_w + shape.num_classes * shape.classifier_heads
    tokens = shape.num_prefix_tokens * d
    pos = (shape.grid_tokens + shape.num_prefix_tokens) * d  # learned; an upper bound for the other kinds
    total = patch_w + d + tokens + pos + L * block + 2 * d + head
    return total, patch_w + L * block_w + head_w, block, head


def estimate_memory(
    shape: ViTShape,
    batch: int,
    mode: str = "train",
    precision: str = "fp32",
    optimizer: str = "adamw",
    grad_checkpointing: bool = False,
    fused_attention: bool = True,
    num_params: int | None = None,
    framework_bytes: int = 0,
    shard_factor: int = 1,
    grads_resident: bool = False,
    trainable_params: int | None = None,
) -> MemoryEstimate:
    """Estimate one device's peak for a step. ``shard_factor`` > 1 divides weights/grads/states (FSDP).

    ``grads_resident``: gradients occupy memory for the whole step, as with DDP (they are views into the reducer's
    buckets), instead of appearing during backward and being freed by ``zero_grad(set_to_none=True)``.
    ``trainable_params``: only these get gradients and optimizer states (LoRA / frozen backbones); the activations
    stay those of full training, since backward still runs through every block to reach the adapters.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {tuple(OPTIMIZERS)}, got {optimizer!r}")
    if mode == "train" and precision == "int8":
        raise ValueError("int8 is an inference precision; train in bf16 or fp16")

    training = mode == "train"
    b, d, m, h, L = batch, shape.embed_dim, shape.mlp_hidden, shape.num_heads, shape.depth
    n = shape.block_tokens(training)
    p_all, p_matmul, p_block, p_head = _param_counts(shape)
    if num_params is not None:
        p_all = num_params
    s = 4 if precision == "fp32" else 2
    img = b * shape.in_chans * shape.img_size[0] * shape.img_size[1]
    inputs = img * 4 + b * 8  # fp32 batch + int64 labels
    notes: list[str] = []

    if not training:
        # Weights stored in the inference precision; activations live only while a block runs. At the MLP the block
        # input (held by the caller), the new residual, the LN output (held as the MLP's argument), fc1 and GELU
        # outputs are alive; at the attention projection the input, LN output, qkv, attention and proj outputs.
        # Explicit attention adds a stage before that: at its softmax the input, LN output and qkv, with the scores
        # and the probabilities (B, H, N, N) each.
        w_bytes = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}[precision]
        weights = (p_matmul * w_bytes + (p_all - p_matmul) * 4) if precision == "int8" else p_all * w_bytes
        act_s = 4 if precision == "int8" else s
        mlp_live = act_s * b * n * (3 * d + 2 * m)
        attn_live = act_s * b * n * 7 * d
        attn_ws = 0 if fused_attention else 2 * act_s * b * h * n * n
        softmax_live = act_s * b * n * 5 * d + attn_ws
        patch_stage = act_s * (img + 2 * b * shape.grid_tokens * d)
        activations = max(mlp_live, attn_live, softmax_live, patch_stage)
        inputs = img * act_s
        peak = weights // shard_factor + inputs + activations
        at_softmax = attn_ws > 0 and activations == softmax_live
        return MemoryEstimate(
            weights=weights // shard_factor, gradients=0, optimizer_states=0, optimizer_temporaries=0,
            weight_copies=0, activations=activations - (attn_ws if at_softmax else 0),
            attention_workspace=attn_ws if at_softmax else 0, transient=0,
            inputs=inputs, peak=peak, framework=framework_bytes, total=peak + framework_bytes,
            peak_phase="forward", notes=notes,
        )

    autocast = precision in ("bf16", "fp16")
    weights = 4 * p_all // shard_factor  # fp32 master weights
    p_train = p_all if trainable_params is None else trainable_params
    grads = 4 * p_train // shard_factor
    state_pp, temp_pp = OPTIMIZERS[optimizer]
    states = state_pp * p_train // shard_factor
    opt_temp = temp_pp * p_train // shard_factor
    copies_all = 2 * p_matmul if autocast else 0
    copies_block = 2 * (3 * d * d + d * d + 2 * d * m) if autocast else 0

    bnd = b * n * d
    per_block = (
        2 * 4 * bnd  # residual in + mid (fp32)
        + s * bnd * (1 + 3 + 1 + 1)  # LN1 out, qkv, attention out, LN2 out
        + 2 * s * b * n * m  # fc1 out, GELU out
        + 4 * b * h * n  # logsumexp
        + 4 * 4 * b * n  # LayerNorm statistics
    )
    if shape.qk_norm:
        per_block += 2 * s * bnd + 4 * 4 * b * n * h
    if shape.layer_scale:
        per_block += 2 * s * bnd
    if shape.drop_path:
        per_block += 2 * 4 * bnd
    # explicit attention keeps each block's softmax probabilities (B, H, N, N) for backward (the scores are freed as
    # the softmax runs), and block 0's are still alive during its backward (measured: one such matrix per block
    # without checkpointing; with it, one on top of the fused estimate at either end of backward)
    attn_ws = 0 if fused_attention else s * b * h * n * n
    embed = s * img if autocast else 0  # the conv's saved input: the batch itself, or its low-precision copy
    head_grads = grads if grads_resident else 4 * (p_head + d * m)  # the first gradients of backward: head, last fc2
    patch_w = shape.in_chans * shape.patch_size**2 * d
    # resident (DDP) gradients, or adapters spread over all blocks (LoRA): bound by all of them
    grads_before_block0 = grads if grads_resident or trainable_params is not None else (
        grads - 4 * (p_block + patch_w + (shape.grid_tokens + shape.num_prefix_tokens) * d) // shard_factor)

    # Start of backward, at the last block's MLP: every saved activation, plus one MLP-sized gradient and the
    # residual gradient (the GELU output is freed as its gradient appears).
    bwd_mlp = s * b * n * m + 4 * bnd
    # End of backward, at block 0's attention: all gradients, block 0's attention activations, dq/dk/dv and the
    # residual gradient.
    bwd_attn = 4 * bnd + s * bnd * 5 + s * bnd * 3 + 4 * bnd + attn_ws
    if grad_checkpointing:
        saved = L * 4 * bnd + embed  # each block's fp32 input
        start_bwd = weights + states + saved + per_block - 4 * bnd + attn_ws + copies_block + bwd_mlp + head_grads
        end_bwd = weights + states + grads_before_block0 + saved + bwd_attn - 4 * bnd + copies_block
        notes.append("checkpointing: one block's activations are rebuilt at a time during backward")
    else:
        saved = L * (per_block + attn_ws) + embed
        start_bwd = weights + states + copies_all + saved + bwd_mlp + head_grads
        end_bwd = weights + states + grads_before_block0 + embed + bwd_attn + copies_block
    opt_step = weights + states + grads + opt_temp
    phases = {"backward (start)": start_bwd + inputs, "backward (end)": end_bwd + inputs,
              "optimizer step": opt_step + inputs}
    phase = max(phases, key=phases.get)
    peak = phases[phase]
    return MemoryEstimate(
        weights=weights, gradients=grads, optimizer_states=states, optimizer_temporaries=opt_temp,
        weight_copies=copies_all, activations=saved - (0 if grad_checkpointing else L * attn_ws),
        attention_workspace=attn_ws * (1 if grad_checkpointing else L), transient=max(bwd_mlp, bwd_attn), inputs=inputs,
        peak=peak, framework=framework_bytes, total=peak + framework_bytes, peak_phase=phase, notes=notes,
    )
