"""The peer row: timm's VisionTransformerDistilled trained with timm's TokenDistillationTask, in a plain loop with the
table's data, optimizer rule and schedule."""

from __future__ import annotations

from pathlib import Path

import torch

from hf_deit.data import DataArguments, DeiTCollator

from .configurations import LABEL_SMOOTHING, Configuration, TableArguments, regularisers


@torch.no_grad()
def evaluate_timm_heads(model, loader) -> dict[str, float]:
    """Top-1 (%) of timm's distilled ViT per head: forward_features ends with the final norm; token 0 feeds
    `head`, token 1 `head_dist`; eval-mode timm returns their mean (the fused prediction)."""
    model.eval()
    device = next(model.parameters()).device
    hits, total = {"fused": 0, "cls": 0, "distillation": 0}, 0
    for batch in loader:
        features = model.forward_features(batch["pixel_values"].to(device))  # (batch, tokens, hidden)
        cls, dist = model.head(features[:, 0]), model.head_dist(features[:, 1])
        labels = batch["labels"].to(device)
        for head, logits in (("fused", (cls + dist) / 2), ("cls", cls), ("distillation", dist)):
            hits[head] += (logits.argmax(-1) == labels).sum().item()
        total += len(batch["labels"])
    model.train()
    return {head: 100.0 * count / total for head, count in hits.items()}


def build_task(args: TableArguments, configuration: Configuration, num_classes: int, device: torch.device):
    """timm's student (the table's student size) and its TokenDistillationTask around the table's CNN teacher."""
    import timm
    from timm.task import TokenDistillationTask

    model = timm.create_model(
        "deit_tiny_distilled_patch16_224", pretrained=False, img_size=args.image_size, patch_size=args.patch_size,
        embed_dim=args.hidden_size, depth=args.num_hidden_layers, num_heads=args.num_attention_heads,
        num_classes=num_classes, **regularisers(args)["model"],
    ).to(device)
    teacher_dir = Path(args.output_dir) / configuration.teacher / "model"
    teacher_model = timm.create_model(f"local-dir:{teacher_dir}", pretrained=True).to(device)
    alpha = args.soft_alpha if configuration.distillation == "soft" else args.hard_alpha
    task = TokenDistillationTask(
        model, teacher_model, criterion=torch.nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING),
        distill_type=configuration.distillation, task_loss_weight=1.0 - alpha, temperature=args.soft_tau,
        device=device, verbose=False,
    )
    return model, task


def train_timm_peer(
    args: TableArguments, configuration: Configuration, data, data_args: DataArguments, run_dir: Path, seed: int
) -> dict:
    """timm's VisionTransformerDistilled + TokenDistillationTask, with our data, optimizer rule and schedule.

    timm's task is a loss module, so the loop is ours; everything else matches the hf_deit runs: same datasets and
    collator, batch, AdamW with the paper's no-decay groups (1-D, biases, pos_embed, cls_token; timm's own
    `no_weight_decay` would also exempt dist_token, which the paper's code decays), the transformers cosine schedule
    with the same warmup, label smoothing and alpha."""
    from timm.optim import create_optimizer_v2, param_groups_weight_decay
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    train_dataset, eval_dataset, labels = data
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # as the Trainer picks
    torch.manual_seed(seed)
    model, task = build_task(args, configuration, len(labels), device)
    collate = DeiTCollator()  # what the Trainer gets: stack only
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train_dataset, batch_size=args.batch_size, shuffle=True, generator=generator,
                              collate_fn=collate, num_workers=args.num_workers)
    eval_loader = DataLoader(eval_dataset, batch_size=256, collate_fn=collate, num_workers=args.num_workers)
    groups = param_groups_weight_decay(model, args.weight_decay, no_weight_decay_list=("pos_embed", "cls_token"))
    optimizer = create_optimizer_v2(groups, "adamw", lr=args.learning_rate, weight_decay=args.weight_decay)
    total = args.epochs * len(train_loader)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=round(args.warmup_epochs * len(train_loader)),
                              num_training_steps=total)
    task.train()
    curve = []
    with tqdm(total=total, desc=configuration.name) as progress:
        for epoch in range(args.epochs):
            for batch in train_loader:
                loss = task(batch["pixel_values"].to(device), batch["labels"].to(device))["loss"]
                loss.backward()
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                progress.update()
                progress.set_postfix(loss=f"{loss.item():.3f}")
            heads = evaluate_timm_heads(model, eval_loader)
            curve.append([epoch + 1, heads["fused"]])
    return {"top1": heads, "curve": curve, "epochs": args.epochs, "params": sum(p.numel() for p in model.parameters()),
            "architecture": f"timm VisionTransformerDistilled {args.hidden_size}x{args.num_hidden_layers}"}
