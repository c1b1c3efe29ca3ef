"""Training losses (docs/released_code.md#losses; the paper's Sec. 4.3 names focal + dice, the released code uses BCE).

Mask losses on uncertainty-sampled points with deep supervision over all 10 predictions, the LM
cross-entropy on the answer, and bipartite matching for the PSALM-style learned-query baseline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from georeason.config import LossConfig


def point_sample(maps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of maps [N,C,H,W] at coords [N,P,2] in [0,1] (x, y) -> [N,C,P] (zero padding)."""
    grid = (2.0 * coords - 1.0)[:, :, None, :]
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[..., 0]


def uncertain_point_coords(logits: torch.Tensor, num_points: int, oversample_ratio: float,
                           importance_ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mask2Former's sampler: most uncertain (|logit| smallest) of an oversampled set, plus uniform ones."""
    n = logits.shape[0]
    candidates = torch.rand(n, int(num_points * oversample_ratio), 2, device=logits.device, generator=generator)
    uncertainty = -point_sample(logits, candidates).abs()[:, 0]
    num_uncertain = int(importance_ratio * num_points)
    top = uncertainty.topk(num_uncertain, dim=1).indices
    chosen = torch.gather(candidates, 1, top[..., None].expand(-1, -1, 2))
    uniform = torch.rand(n, num_points - num_uncertain, 2, device=logits.device, generator=generator)
    return torch.cat([chosen, uniform], dim=1)


def bce_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1).sum() / num_masks


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float, alpha: float = 0.25,
               gamma: float = 2.0) -> torch.Tensor:
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(1).sum() / num_masks


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    prob = logits.sigmoid()
    numerator = 2 * (prob * targets).sum(-1)
    denominator = prob.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def mask_losses(logits: torch.Tensor, targets: torch.Tensor, config: LossConfig,
                point_coords: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Unweighted (mask, dice) losses of logits [N,h,w] against 0/1 targets [N,H,W] on sampled points.

    Targets are sampled at full resolution and logits at their own; `point_coords` [N,P,2] replaces
    the random sampler (deterministic tests, full-resolution evaluation of the loss).
    """
    num_masks = max(float(logits.shape[0]), 1.0)
    logits, targets = logits[:, None].float(), targets[:, None].to(logits.dtype).float()
    if point_coords is None:
        with torch.no_grad():
            point_coords = uncertain_point_coords(logits.detach(), config.num_points, config.oversample_ratio,
                                                  config.importance_sample_ratio, generator)
    with torch.no_grad():
        point_targets = point_sample(targets, point_coords)[:, 0]
    point_logits = point_sample(logits, point_coords)[:, 0]
    if config.mask_loss == "focal":
        mask = focal_loss(point_logits, point_targets, num_masks, config.focal_alpha, config.focal_gamma)
    else:
        mask = bce_loss(point_logits, point_targets, num_masks)
    return mask, dice_loss(point_logits, point_targets, num_masks)


def language_model_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy: logits[:, :-1] against labels[:, 1:] (-100 ignored)."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)


@torch.no_grad()
def match_queries(mask_logits: torch.Tensor, scores: torch.Tensor, targets: torch.Tensor,
                  config: LossConfig) -> list[int | None]:
    """Bipartite matching (PSALM baseline): per image, the learned query assigned to its one target.

    Cost = -score_weight*sigmoid(score) + mask_weight*BCE + dice_weight*dice on shared random points.
    Images with an empty target get no query (None).
    """
    matched: list[int | None] = []
    for logits, score, target in zip(mask_logits, scores, targets):
        if target.sum() == 0:
            matched.append(None)
            continue
        coords = torch.rand(1, config.num_points, 2, device=logits.device)
        point_logits = point_sample(logits[None].float(), coords)[0]  # [Q,P]
        point_target = point_sample(target[None, None].float(), coords)[0]  # [1,P]
        bce = F.binary_cross_entropy_with_logits(point_logits, point_target.expand_as(point_logits),
                                                 reduction="none").mean(1)
        prob = point_logits.sigmoid()
        dice = 1 - (2 * (prob * point_target).sum(1) + 1) / (prob.sum(1) + point_target.sum(1) + 1)
        cost = -config.score_weight * score.sigmoid() + config.mask_weight * bce + config.dice_weight * dice
        rows, cols = linear_sum_assignment(cost[None].cpu().numpy())
        matched.append(int(cols[0]))
    return matched
